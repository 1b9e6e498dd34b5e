"""asyncio transport for one Fluent forward destination; the protocol itself lives in `codec`.

API
    parse_address(text) -> Address             # ValueError with a message a user can act on
    client = ForwardClient(address, tls=None, shared_key=None, username=None, password=None,
                           require_ack=True, connect_timeout=5.0, write_timeout=10.0, ack_timeout=30.0,
                           retry_wait=1.0, max_retry_wait=60.0, hostname=None)
    await client.send(frame, chunk_id)          # returns once written, and acked if require_ack and chunk_id
    unacked = await client.submit(frame, chunk_id)  # returns once written: frames go in the order submitted
    await client.acked(unacked)                 # its ack (acks of several frames may come in any order)
    await client.close()
    client.connected                            # a live connection is open now
    client.consecutive_failures                 # failed attempts since the last successful send

`send` makes one delivery attempt and raises ForwardError (ConnectError, HandshakeFailed, DeliveryError) when
it fails; the connection is then closed, so the caller resends the same frame on the next call (at-least-once:
the receiver may have kept a frame whose ack was lost). Connecting happens inside `send`, lazily; after a
failure the next attempt waits a capped exponential backoff with jitter (0, then retry_wait, doubling up to
max_retry_wait), so a caller that retries in a loop does not hammer a dead aggregator.

`send` is `submit` then `acked`: several frames may be submitted before their acks come (a window, as Fluentd's
out_forward keeps one). Writes are serialised in submit order; acks are matched to frames by chunk id, in
whatever order the receiver sends them (Fluentd acks a chunk when its buffer took it). Each frame has its own
ack_timeout from its write. Any failure of the connection (a write, the receiver closing, a wrong or late ack)
fails every frame still unacked on it, counted as one failed attempt. A server whose HELO says keepalive=false
gets a new connection per frame, so one frame at a time.

Addresses follow Docker's fluentd driver (v23+): tcp://host:port, tls://host:port, unix:///path, a bare
host:port; host defaults to 127.0.0.1 and port to 24224; 20.10's tcp+tls:// is accepted as tls://. TLS
verifies the server against the system CAs or `ca_file`, with `server_name` (default: the host) checked.

Without require_ack a frame counts as sent once the kernel took it: a receiver that dies right after may
lose it. The forward sink should keep acks on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import random
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from driver.outputs.forward import codec

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
_READ_SIZE = 64 * 1024


class ForwardError(Exception):
    """A send attempt failed; the frame was not (known to be) delivered. Resend it."""


class ConnectError(ForwardError):
    pass


class HandshakeFailed(ForwardError):
    pass


class DeliveryError(ForwardError):
    """Write failed, the receiver closed, the ack did not come in time, or it named another chunk."""


# ---------------------------------------------------------------------------------------------------- address


@dataclass(frozen=True)
class Address:
    scheme: Literal["tcp", "tls", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(text: str, *, allow_port_zero: bool = False) -> Address:
    """Parse a fluentd-address the way Docker's fluentd driver does (plus tcp+tls:// from 20.10).

    allow_port_zero is for listeners (the receiver): port 0 asks the kernel for a free port.
    """
    if not text:
        return Address("tcp", DEFAULT_HOST, codec.DEFAULT_PORT)
    if "://" not in text:
        text = "tcp://" + text
    if _CONTROL.search(text) or text[0].isspace() or (" " in text and not text.lower().startswith("unix:")):
        raise ValueError(f"invalid fluentd-address {text!r}: spaces and control characters have no place in it")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - urlsplit checks the port and brackets only when asked
    except ValueError as exc:
        detail = "the port must be a number from 1 to 65535" if "ort" in str(exc) else str(exc)
        raise ValueError(f"invalid fluentd-address {text!r}: {detail}") from None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if parts.netloc or not parts.path.strip("/"):
            raise ValueError(f"invalid fluentd-address {text!r}: use unix:///absolute/path/to/socket")
        return Address("unix", path=parts.path)
    if scheme == "tcp+tls":
        scheme = "tls"
    if scheme not in ("tcp", "tls"):
        raise ValueError(
            f"invalid fluentd-address {text!r}: unsupported scheme {parts.scheme!r}; "
            "use tcp://host:port, tls://host:port or unix:///path"
        )
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"invalid fluentd-address {text!r}: a tcp or tls address has no path")
    host = parts.hostname or DEFAULT_HOST
    if not (_HOST_NAME.fullmatch(host) or (parts.netloc.rpartition("@")[2].startswith("[") and _is_ip6(host))):
        raise ValueError(f"invalid fluentd-address {text!r}: {host!r} is not a host name or IP address")
    port = parts.port
    if port == 0 and not allow_port_zero:
        raise ValueError(f"invalid fluentd-address {text!r}: the port must be a number from 1 to 65535")
    if port is None:
        port = codec.DEFAULT_PORT
    return Address(scheme, host, port)  # type: ignore[arg-type]


# What Go's url.Parse refuses in Docker's parser (control characters; spaces but in a unix path), and the host
# names it takes: letters (any script), digits, "-", ".", "_" (Go also lets ~ !$&'()*+,;= through, which no
# resolver knows). A name that does not resolve is a destination that is down, not an error.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"[^\x00-\x2c/:-@\[-^`{-\x7f]+")


def _is_ip6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


# -------------------------------------------------------------------------------------------------------- tls


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None  # trust only this CA bundle instead of the system store
    cert_file: str | None = None  # client certificate, for receivers that require one
    key_file: str | None = None
    server_name: str | None = None  # name to verify (and send as SNI); default: the address's host
    insecure_skip_verify: bool = False  # tls-insecure-skip-verify: no certificate or name check


def ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context: verification on unless insecure_skip_verify. Raises ValueError on bad files."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS files: {exc}") from exc
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ----------------------------------------------------------------------------------------------------- client


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: codec.ClientProtocol
    replies: collections.deque[codec.Helo | codec.Pong | codec.Ack] = field(default_factory=collections.deque)
    keepalive: bool = True  # False when the server's HELO says it closes after each response
    # The frames written and not yet acknowledged, by chunk id, with their ack_timeout timers.
    unacked: dict[bytes, tuple[asyncio.Future[None], asyncio.TimerHandle]] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None  # reads the acks, from the first frame that wants one
    closed: bool = False  # failed or dropped: its unacked frames were failed

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


@dataclass(eq=False)
class Unacked:
    """A frame written (ForwardClient.submit) whose ack may not have come yet: await it with ForwardClient.acked."""

    future: asyncio.Future[None]
    conn: _Connection | None  # None: no ack was asked for

    @property
    def ok(self) -> bool:
        """The ack came (the caller may count the frame as delivered even if it goes again)."""
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None


def _retrieved(future: asyncio.Future) -> None:
    # A frame failed with its connection need not be awaited (a window given back): no "never retrieved" log.
    if not future.cancelled():
        future.exception()


class ForwardClient:
    def __init__(
        self,
        address: str | Address,
        *,
        tls: TlsSettings | None = None,
        shared_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        require_ack: bool = True,
        connect_timeout: float = 5.0,
        write_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        retry_wait: float = 1.0,
        max_retry_wait: float = 60.0,
        hostname: str | None = None,
    ) -> None:
        self.address = parse_address(address) if isinstance(address, str) else address
        if tls is not None and self.address.scheme != "tls":
            raise ValueError(f"TLS settings given for {self.address}, which is not a tls:// address")
        self._ssl = ssl_context(tls or TlsSettings()) if self.address.scheme == "tls" else None
        self._server_name = (tls.server_name if tls else None) or self.address.host
        self.shared_key = shared_key
        self.username = username
        self.password = password
        self.require_ack = require_ack
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.ack_timeout = ack_timeout
        self.retry_wait = retry_wait
        self.max_retry_wait = max_retry_wait
        # The server's PONG must carry a different hostname (Fluentd's client enforces it); never "localhost",
        # Fluent Bit's default server name.
        self.hostname = hostname or socket.gethostname()
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._failures = 0
        self._next_attempt = 0.0

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    async def send(self, frame: bytes, chunk_id: str | None) -> None:
        """Write one frame and, if require_ack and chunk_id, wait for its ack. Raises ForwardError."""
        await self.acked(await self.submit(frame, chunk_id))

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        """Write one frame (after the ones submitted before it); its ack is awaited with ``acked``. Raises
        ForwardError when the write fails."""
        async with self._lock:
            if self._closed.is_set():
                raise ForwardError("the forward client is closed")
            conn = None
            try:
                conn = await self._connection()
                unacked = self._expect(conn, chunk_id) if self.require_ack and chunk_id is not None else None
                await self._write(conn, frame)  # registered first: the ack may come before the drain ends
            except BaseException as exc:
                # Whatever happened (cancellation included), the stream's state is unknown: start afresh.
                counted = conn is not None and conn.closed  # the ack reader failed it first, and counted that
                self._drop()
                if isinstance(exc, (ForwardError, OSError, ssl.SSLError, codec.ProtocolError, TimeoutError)):
                    if not counted:
                        self._failed()
                    if not isinstance(exc, ForwardError):
                        raise DeliveryError(f"{self.address}: {_describe(exc)}") from exc
                raise
            if not conn.keepalive:  # the server hangs up after its response: no second frame on it
                try:
                    if unacked is not None:
                        await self.acked(unacked)  # a failure was counted where it was noticed
                finally:
                    self._drop(conn)
        if unacked is None:
            self._failures = 0
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return Unacked(done, None)
        return unacked

    async def acked(self, unacked: Unacked) -> None:
        """Wait for a submitted frame's ack. Raises ForwardError when it failed (with every frame then unacked on
        its connection); cancelled, the connection is dropped (its state is unknown)."""
        try:
            await unacked.future
        except asyncio.CancelledError:
            if unacked.conn is not None:
                self._drop(unacked.conn)
            raise

    async def close(self) -> None:
        self._closed.set()
        conn, self._conn = self._conn, None
        if conn is not None:
            self._fail(conn, ForwardError("the forward client is closed"))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.writer.wait_closed()

    # ------------------------------------------------------------------------------------------- connection

    async def _connection(self) -> _Connection:
        if self._conn is not None and self._conn.alive:
            return self._conn
        self._drop()
        await self._backoff()
        phase = "connecting"
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._open()
                phase = "waiting for HELO/PONG (is shared_key set on the receiver?)"
                try:
                    if self.shared_key is not None:
                        await self._handshake(conn)
                except BaseException:
                    conn.writer.close()
                    raise
        except codec.HandshakeError as exc:
            raise HandshakeFailed(f"{self.address}: {exc}") from exc
        except TimeoutError as exc:
            raise ConnectError(f"{self.address}: timed out after {self.connect_timeout}s {phase}") from exc
        except (OSError, ssl.SSLError, codec.ProtocolError) as exc:
            raise ConnectError(f"cannot connect to {self.address}: {_describe(exc)}") from exc
        self._conn = conn
        log.info("forward: connected to %s", self.address)
        return conn

    async def _open(self) -> _Connection:
        if self.address.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(self.address.path, limit=_READ_SIZE)
        else:
            reader, writer = await asyncio.open_connection(
                self.address.host,
                self.address.port,
                ssl=self._ssl,
                server_hostname=self._server_name if self._ssl else None,
                limit=_READ_SIZE,
            )
            sock = writer.get_extra_info("socket")
            if sock is not None:  # notice a peer that vanished without a FIN while we wait for acks
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        protocol = codec.ClientProtocol(
            hostname=self.hostname, shared_key=self.shared_key, username=self.username, password=self.password
        )
        return _Connection(reader, writer, protocol)

    async def _handshake(self, conn: _Connection) -> None:
        try:
            helo = await self._reply(conn, "HELO (is shared_key set on the receiver?)")
            if not isinstance(helo, codec.Helo):
                raise codec.HandshakeError(f"expected HELO, got {helo!r:.200}")
            conn.keepalive = helo.keepalive
            conn.writer.write(conn.protocol.ping(helo))
            pong = await self._reply(conn, "PONG (Fluent Bit closes silently on a wrong shared_key)")
        except codec.HandshakeError:
            raise
        except codec.ProtocolError as exc:
            raise codec.HandshakeError(str(exc)) from exc
        if not isinstance(pong, codec.Pong):
            raise codec.HandshakeError(f"expected PONG, got {pong!r:.200}")
        conn.protocol.check_pong(pong)

    async def _reply(self, conn: _Connection, waiting_for: str) -> codec.Helo | codec.Pong | codec.Ack:
        """The next reply from the server; the caller bounds the wait."""
        while not conn.replies:
            data = await conn.reader.read(_READ_SIZE)
            if not data:
                raise codec.ProtocolError(
                    f"connection closed by the receiver while waiting for {waiting_for}"
                )
            conn.replies.extend(conn.protocol.receive_data(data))
        return conn.replies.popleft()

    async def _write(self, conn: _Connection, frame: bytes) -> None:
        conn.writer.write(frame)
        try:
            async with asyncio.timeout(self.write_timeout):
                await conn.writer.drain()
        except TimeoutError:
            raise DeliveryError(
                f"{self.address}: write did not finish within {self.write_timeout}s"
            ) from None

    # -------------------------------------------------------------------------------------------------- acks

    def _expect(self, conn: _Connection, chunk_id: str) -> Unacked:
        """Register a frame about to be written as awaiting its ack, timed from now."""
        loop = asyncio.get_running_loop()
        chunk = chunk_id.encode("ascii")
        future = loop.create_future()
        future.add_done_callback(_retrieved)
        timer = loop.call_later(self.ack_timeout, self._overdue, conn)
        conn.unacked[chunk] = (future, timer)
        if conn.reading is None:
            conn.reading = loop.create_task(self._read_acks(conn))
        return Unacked(future, conn)

    def _overdue(self, conn: _Connection) -> None:
        if self._fail(conn, DeliveryError(f"{self.address}: no ack within {self.ack_timeout}s")):
            self._failed()

    async def _read_acks(self, conn: _Connection) -> None:
        """Settle the connection's unacked frames as their acks come, in any order, until it ends."""
        try:
            while True:
                reply = await self._reply(conn, "the ack")
                if isinstance(reply, codec.Helo):
                    raise HandshakeFailed(
                        f"{self.address}: the receiver wants a shared_key handshake; set shared_key"
                    )
                settled = conn.unacked.pop(reply.chunk, None) if isinstance(reply, codec.Ack) else None
                if settled is None:
                    expected = list(conn.unacked)[:3]
                    raise DeliveryError(f"{self.address}: expected an ack for one of {expected!r}, got {reply!r:.200}")
                future, timer = settled
                timer.cancel()
                if not future.done():
                    future.set_result(None)
                self._failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, the frames unacked on it go again
            if not isinstance(exc, ForwardError):
                exc = DeliveryError(f"{self.address}: {_describe(exc)}")
            if self._fail(conn, exc):
                self._failed()
            # else: an idle connection the receiver closed (or spoke on): the next frame opens another

    def _fail(self, conn: _Connection, exc: ForwardError) -> bool:
        """Close ``conn`` and fail its unacked frames with ``exc``; whether there were any."""
        if self._conn is conn:
            self._conn = None
        conn.closed = True
        conn.writer.close()
        if conn.reading is not None and conn.reading is not asyncio.current_task():
            conn.reading.cancel()
        unacked, conn.unacked = conn.unacked, {}
        for future, timer in unacked.values():
            timer.cancel()
            if not future.done():
                future.set_exception(exc)
        return bool(unacked)

    def _drop(self, conn: _Connection | None = None) -> None:
        """Close the connection (the current one by default) without counting a failure."""
        conn = conn if conn is not None else self._conn
        if conn is not None:
            self._fail(conn, DeliveryError(f"{self.address}: connection dropped before the ack"))

    # ---------------------------------------------------------------------------------------------- backoff

    def _failed(self) -> None:
        self._failures += 1
        loop = asyncio.get_running_loop()
        self._next_attempt = loop.time() + self._backoff_delay(self._failures)

    def _backoff_delay(self, failures: int) -> float:
        """0 after the first failure (a restarted aggregator is back at once), then retry_wait doubling up to
        max_retry_wait, with jitter so that many containers do not reconnect in lockstep."""
        if failures <= 1:
            return 0.0
        delay = min(self.max_retry_wait, self.retry_wait * 2 ** (failures - 2))
        return delay * random.uniform(0.5, 1.0)

    async def _backoff(self) -> None:
        wait = self._next_attempt - asyncio.get_running_loop().time()
        if wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._closed.wait()  # close() ends the wait early
        if self._closed.is_set():
            raise ForwardError("the forward client is closed")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
