"""The HTTP side of the Elasticsearch output: ``POST <host>/_bulk`` over kept-alive connections, several hosts
with failover, auth, TLS, optional gzip, and what each answer means (issue 10 point 5).

A 2xx answer is parsed into per-item results (codec.parse_bulk_response). 413: the request is too large, the
batcher splits it. Every other answer (401, 403, 404, 429, 5xx, a body that is not a bulk answer) and every
connection error or timeout: nothing is known to be stored, the batcher retries with backoff. Connection errors,
timeouts and 5xx move to the next host for the next attempt (Beats also round-robins over ``hosts``).
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import zlib
from dataclasses import dataclass

import aiohttp
import aiohttp.payload

from driver.outputs.elasticsearch.codec import CONTENT_TYPE, FILTER_PATH, BadResponse, ItemResult, parse_bulk_response
from driver.outputs.elasticsearch.options import EsSettings
from driver.outputs.forward.client import TlsSettings, ssl_context
from driver.outputs.loki.client import parse_retry_after

GZIP_LEVEL = 1  # most of gzip's gain on log lines for a fraction of the CPU of the default 6


class Outcome(enum.Enum):
    ANSWERED = "answered"  # 2xx: see the items
    RETRY = "retry"  # any other status, connection errors, timeouts, bodies that do not answer the request
    SPLIT = "split"  # 413


@dataclass(frozen=True)
class BulkResult:
    outcome: Outcome
    status: int  # 0: no HTTP answer
    items: list[ItemResult] | None = None  # ANSWERED: one per document; None: every document was indexed
    message: str = ""
    retry_after: float | None = None


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.ANSWERED
    if status == 413:
        return Outcome.SPLIT
    return Outcome.RETRY


Body = bytes | memoryview | list  # one bulk body, or its pieces in order (bytes or memoryviews of a part's body)


class BodyPieces(aiohttp.payload.Payload):
    """A bulk body sent as its pieces, none joined: aiohttp on Python before 3.12.9 copies a bytes body once more
    to put the headers in front of it (its writelines is a join there), and the batcher would join a request's
    parts first. The headers go alone, then each piece is handed to the transport as it is."""

    def __init__(self, pieces: list) -> None:
        super().__init__(pieces, content_type=CONTENT_TYPE)
        self._size = sum(map(len, pieces))
        self._autoclose = True  # nothing to release: no file, no stream

    def __bytes__(self) -> bytes:  # the whole body, joined: for a test's fake session, never on the way out
        return b"".join(self._value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self).decode(encoding, errors)

    async def write(self, writer) -> None:
        send_headers = getattr(writer, "send_headers", None)  # aiohttp >= 3.12 holds them back to coalesce
        if send_headers is not None:
            send_headers()
        for piece in self._value:
            await writer.write(piece)


def _gzipped(pieces: list) -> bytes:
    """The pieces as one gzip member (worker thread): compressed in turn, never joined."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return b"".join([*map(z.compress, pieces), z.flush()])


class EsClient:
    """POSTs bulk bodies to one of ``hosts``, staying on a host until it fails."""

    def __init__(self, settings: EsSettings) -> None:
        self.hosts = settings.hosts
        self._current = 0
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._proxy = settings.proxy_url
        self._server_name = settings.tls_server_name
        self._compress = settings.compress
        self._ssl: ssl.SSLContext | bool = True
        if any(h.startswith("https://") for h in self.hosts):
            self._ssl = ssl_context(TlsSettings(ca_file=settings.tls_ca_file, cert_file=settings.tls_cert_file,
                                                key_file=settings.tls_key_file,
                                                server_name=settings.tls_server_name,
                                                insecure_skip_verify=settings.tls_insecure_skip_verify))
        self._headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "logbridge"}
        if settings.compress:
            self._headers["Content-Encoding"] = "gzip"
        if settings.authorization:
            self._headers["Authorization"] = settings.authorization
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The host the next request goes to (credentials are never in it: options.py took them out)."""
        return self.hosts[self._current]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4, ssl=self._ssl),
                                                  timeout=self._timeout)
        return self._session

    def _fail_over(self) -> None:
        self._current = (self._current + 1) % len(self.hosts)

    async def bulk(self, body: Body, documents: int) -> BulkResult:
        """One bulk request of ``documents`` documents (``body``: the NDJSON, or its pieces in order); never raises
        for what the cluster or the network does."""
        pieces = body if isinstance(body, list) else [body]
        if self._compress:
            data = await asyncio.to_thread(_gzipped, pieces)  # ~30 ms per 5 MiB: not on the loop
        else:
            data = BodyPieces(pieces)
        session = self._open()
        url = f"{self.url}/_bulk?filter_path={FILTER_PATH}"
        try:
            async with session.post(url, data=data, headers=self._headers, proxy=self._proxy,
                                    server_hostname=self._server_name) as resp:
                status = resp.status
                answer = await resp.read()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            self._fail_over()
            return BulkResult(Outcome.RETRY, 0, message=f"{type(exc).__name__}: {exc}".strip())
        outcome = classify(status)
        if outcome is not Outcome.ANSWERED:
            if status >= 500:
                self._fail_over()
            first = answer.decode("utf-8", "replace").strip()[:500]
            return BulkResult(outcome, status, message=first, retry_after=retry_after)
        try:
            items = parse_bulk_response(answer, documents)
        except BadResponse as exc:
            return BulkResult(Outcome.RETRY, status, message=f"not a bulk answer: {exc}")
        return BulkResult(Outcome.ANSWERED, status, items)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
