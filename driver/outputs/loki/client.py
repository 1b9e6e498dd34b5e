"""The HTTP side of the Loki output: one keep-alive aiohttp session per (loki-url, tenant), what each answer
means, and the backoff between retries.

Status rules (Loki's ``pkg/distributor/http.go``, the promtail client's ``sendBatch``): 2xx: stored, the cursors
move. 429, 5xx and connection errors: nothing was stored, retry with backoff (at least ``Retry-After``).
401, 403, 404: the URL, credentials or tenant are wrong: the output is down, keeps its backlog and tries again
every ``loki-max-backoff``. 413: the push is too large, split it. 400 (and any other 4xx): final; Loki stored
the valid part before answering, so the push must never be sent again.
"""

from __future__ import annotations

import base64
import enum
import math
import ssl
from dataclasses import dataclass

import aiohttp
import yarl

from driver.outputs.forward.client import TlsSettings, ssl_context
from driver.outputs.loki.codec import CONTENT_TYPE
from driver.outputs.loki.options import LokiSettings

MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond this is a server bug, not a plan


class Outcome(enum.Enum):
    STORED = "stored"
    RETRY = "retry"  # 429, 5xx, connection errors, timeouts
    DOWN = "down"  # 401, 403, 404
    SPLIT = "split"  # 413
    REJECTED = "rejected"  # 400 and other 4xx: partly stored, never resent


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.STORED
    if status == 429 or status >= 500 or status == 0:
        return Outcome.RETRY
    if status in (401, 403, 404):
        return Outcome.DOWN
    if status == 413:
        return Outcome.SPLIT
    return Outcome.REJECTED


@dataclass(frozen=True)
class PushResult:
    outcome: Outcome
    status: int  # 0: no HTTP answer (connection error, timeout)
    message: str = ""  # the first line of Loki's error body, or the connection error
    retry_after: float | None = None


def answer(status: int, text: str, retry_after: str | None) -> PushResult:
    """What Loki's HTTP answer means: its status, the first line of its body, its Retry-After header."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return PushResult(classify(status), status, first, parse_retry_after(retry_after))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Loki sends seconds; an HTTP date is not worth guessing at)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds):  # float() takes "nan", and min/max would pass it on as the wait
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its user:password (kept out of logs) and the Authorization header they make."""
    parsed = yarl.URL(url)
    if parsed.user is None:
        return url, None
    token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode()
    return str(parsed.with_user(None)), f"Basic {token}"


class LokiClient:
    """POSTs snappy-compressed PushRequests to one URL for one tenant over kept-alive connections."""

    def __init__(self, settings: LokiSettings) -> None:
        self.url, self._auth = split_credentials(settings.url)
        self.tenant = settings.tenant
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._proxy = settings.proxy_url
        self._ssl: ssl.SSLContext | bool = True
        self._server_name = settings.tls_server_name
        if self.url.startswith("https://"):
            self._ssl = ssl_context(TlsSettings(ca_file=settings.tls_ca_file, cert_file=settings.tls_cert_file,
                                                key_file=settings.tls_key_file,
                                                server_name=settings.tls_server_name,
                                                insecure_skip_verify=settings.tls_insecure_skip_verify))
        self._headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "logbridge"}
        if self._auth:
            self._headers["Authorization"] = self._auth
        if self.tenant:
            self._headers["X-Scope-OrgID"] = self.tenant
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4, ssl=self._ssl),
                                                  timeout=self._timeout)
        return self._session

    async def push(self, body: bytes) -> PushResult:
        """One POST of an already compressed body; never raises for what Loki or the network does."""
        session = self._open()
        try:
            async with session.post(self.url, data=body, headers=self._headers, proxy=self._proxy,
                                    server_hostname=self._server_name) as resp:
                status = resp.status
                text = "" if status < 300 else (await resp.text(errors="replace"))
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return PushResult(Outcome.RETRY, 0, f"{type(exc).__name__}: {exc}".strip())
        return answer(status, text, retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
