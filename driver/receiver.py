"""A Fluent forward receiver for debugging and tests: `python -m driver.receiver`.

Prints every record as one JSON line: {"tag": ..., "time": <float seconds>, "time_ns": <int>, "record": {...}}
(bytes that are not UTF-8 appear backslash-escaped). Connection events go to stderr, starting with
"listening on <address>" (useful with port 0).

--flavour fluent-bit (default) is as strict as Fluent Bit's in_forward: it closes the connection on a nil
heartbeat, a bin tag, a non-map option, a request over --max-request (default 6,144,000 bytes), ...; its HELO
sends the nonce as str. --flavour fluentd is lenient like Fluentd: it ignores nil, skips invalid events, and
accepts JSON. Acks are always msgpack str. The protocol is `driver.outputs.forward.codec`; this module is only I/O.

Test knobs: --ack-delay, --drop-acks N (withhold the first N acks, the connection stays open),
--close-before-ack N (close the connection instead of sending the first N acks), --count-only (no records,
a summary at exit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO

from driver.outputs.forward import codec
from driver.outputs.forward.client import Address, parse_address

log = logging.getLogger("driver.receiver")

Flavour = Literal["fluent-bit", "fluentd"]
Sink = Callable[[dict[str, Any]], None] | None  # None: count only, skip building the output lines


@dataclass(frozen=True)
class ReceiverConfig:
    listen: str = "tcp://127.0.0.1:24224"
    flavour: Flavour = "fluent-bit"
    max_request: int | None = None  # None: the flavour's default (Fluent Bit 6,144,000; Fluentd unlimited)
    shared_key: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    self_hostname: str = codec.DEFAULT_SERVER_HOSTNAME
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # require client certificates signed by this CA
    ack_delay: float = 0.0
    drop_acks: int = 0
    close_before_ack: int = 0

    @property
    def strict(self) -> bool:
        return self.flavour == "fluent-bit"

    @property
    def request_limit(self) -> int | None:
        if self.max_request is not None:
            return self.max_request or None
        return codec.FLUENT_BIT_MAX_REQUEST if self.strict else None


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    records: int = 0
    skipped: int = 0
    ignored: int = 0
    acks: int = 0
    acks_withheld: int = 0
    closed_before_ack: int = 0
    protocol_errors: int = 0
    handshakes_ok: int = 0
    handshakes_refused: int = 0


class Receiver:
    """An asyncio forward server; `sink` gets one dict per record (see `record_line` for its shape)."""

    def __init__(self, config: ReceiverConfig, sink: Sink) -> None:
        self.config = config
        self.sink = sink
        self.stats = Stats()
        self.address: Address | None = None  # the bound address, once started
        self._listen = parse_address(config.listen, allow_port_zero=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._drop_budget = config.drop_acks
        self._close_budget = config.close_before_ack

    async def start(self) -> None:
        listen = self._listen
        if listen.scheme == "unix":
            _remove_stale_socket(listen.path)
            self._server = await asyncio.start_unix_server(self._serve, listen.path)
            self.address = listen
        else:
            tls = self._server_ssl() if listen.scheme == "tls" else None
            self._server = await asyncio.start_server(self._serve, listen.host, listen.port, ssl=tls)
            port = self._server.sockets[0].getsockname()[1]
            self.address = Address(listen.scheme, listen.host, port)
        log.info("listening on %s (flavour %s)", self.address, self.config.flavour)

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):  # connections may sit in a read or an --ack-delay sleep
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
        if self.address is not None and self.address.scheme == "unix":
            with contextlib.suppress(OSError):
                os.unlink(self.address.path)

    def _server_ssl(self) -> ssl.SSLContext:
        if not (self.config.tls_cert and self.config.tls_key):
            raise ValueError("a tls:// listener needs --tls-cert and --tls-key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        if self.config.tls_client_ca:
            ctx.load_verify_locations(self.config.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _protocol(self) -> codec.ServerProtocol:
        return codec.ServerProtocol(
            strict=self.config.strict,
            max_request=self.config.request_limit,
            shared_key=self.config.shared_key,
            users=self.config.users,
            self_hostname=self.config.self_hostname,
            count_only=self.sink is None,  # no records to print: check and count PackedForward entries in C
        )

    # -------------------------------------------------------------------------------------------- connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer)
        self.stats.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        log.info("%s: connected", peer)
        reason = "closed by peer"
        try:
            reason = await self._converse(reader, writer)
        except codec.ProtocolError as exc:
            self.stats.protocol_errors += 1
            reason = f"protocol error, closing: {exc}"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled us. End normally: asyncio's server callback (3.11) calls task.exception(),
            # which raises on a cancelled task and logs a spurious traceback.
            reason = "receiver stopping"
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            log.info("%s: %s", peer, reason)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        protocol = self._protocol()
        writer.write(protocol.initiate())
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                return "closed by peer"
            error: codec.ProtocolError | None = None
            try:
                events = protocol.receive_data(data)
            except codec.ProtocolError as exc:
                # Requests before the bad bytes are still handled and acked, as Fluent Bit does.
                events, error = exc.events, exc
            for event in events:
                verdict = await self._handle(event, protocol, writer)
                if verdict is not None:
                    await writer.drain()
                    return verdict
            await writer.drain()
            if error is not None:
                raise error

    async def _handle(
        self, event: codec.ServerEvent, protocol: codec.ServerProtocol, writer: asyncio.StreamWriter
    ) -> str | None:
        """Reacts to one event; returns why to close the connection, or None to go on."""
        if isinstance(event, codec.PingReceived):
            return self._handshake(event, writer)
        if isinstance(event, codec.Ignored):
            self.stats.ignored += 1
            log.warning("ignored: %s", event.reason)
            return None
        self._emit(event)
        chunk = event.chunk
        if chunk is None:
            return None
        if self._close_budget > 0:
            self._close_budget -= 1
            self.stats.closed_before_ack += 1
            return f"closing instead of acking chunk {chunk!r} (--close-before-ack)"
        if self._drop_budget > 0:
            self._drop_budget -= 1
            self.stats.acks_withheld += 1
            log.info("withholding the ack for chunk %r (--drop-acks)", chunk)
            return None
        if self.config.ack_delay > 0:
            await asyncio.sleep(self.config.ack_delay)
        flush = getattr(self.sink, "flush", None)
        if flush is not None:
            flush()  # what is acked is on disk first: a receiver killed right after an ack has printed it
        writer.write(protocol.ack(chunk))
        self.stats.acks += 1
        return None

    def _handshake(self, event: codec.PingReceived, writer: asyncio.StreamWriter) -> str | None:
        if event.reply is not None:
            writer.write(event.reply)
        if event.accepted:
            self.stats.handshakes_ok += 1
            log.info("handshake ok: hostname %r, user %r", event.hostname, event.username)
            return None
        self.stats.handshakes_refused += 1
        return f"handshake refused ({event.reason}), closing"

    def _emit(self, request: codec.Request) -> None:
        self.stats.requests += 1
        self.stats.records += request.count
        if request.skipped:
            self.stats.skipped += request.skipped
            log.warning(
                "skipped %d invalid event(s) in a %s request", request.skipped, type(request).__name__
            )
        if self.sink is not None:
            for time, record in request.entries:
                try:
                    line = record_line(request.tag, time, record)
                except RecursionError:  # valid msgpack nests to 1024 levels; Python gives up near 1000
                    line = record_line(request.tag, time, {"_receiver_error": UNPRINTABLE})
                self.sink(line)


# ------------------------------------------------------------------------------------------------ output


UNPRINTABLE = "record nested too deep to print as JSON"


def record_line(tag: str, time: codec.Time, record: dict[Any, Any]) -> dict[str, Any]:
    time_ns = codec.time_to_ns(time)
    return {"tag": _text(tag), "time": time_ns / codec.NS, "time_ns": time_ns, "record": _jsonable(record)}


def _text(value: str | bytes) -> str:
    """Text for JSON: the bytes as received, decoded as UTF-8 with backslash escapes for invalid bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _jsonable(value: object) -> object:
    if isinstance(value, (str, bytes)):
        return _text(value)
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, codec.EventTime):
        return value.to_ns()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return repr(value)


def _key(key: object) -> str:
    return _text(key) if isinstance(key, (str, bytes)) else json.dumps(_jsonable(key))


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return "unix peer"


def _remove_stale_socket(path: str) -> None:
    # A previous run killed with SIGKILL leaves its socket file behind; never remove anything else.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


class _LineWriter:
    """Writes record lines to a stream, flushing at most once per event-loop turn."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = False

    def __call__(self, line: dict[str, Any]) -> None:
        try:
            text = json.dumps(line, ensure_ascii=False)
        except RecursionError:  # a record just shallow enough for record_line
            text = json.dumps({**line, "record": {"_receiver_error": UNPRINTABLE}}, ensure_ascii=False)
        self._stream.write(text + "\n")
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        self._stream.flush()


# --------------------------------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m driver.receiver", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--listen", default="tcp://127.0.0.1:24224", help="tcp://host:port, tls://host:port, unix:///path"
    )
    p.add_argument("--flavour", choices=["fluent-bit", "fluentd"], default="fluent-bit")
    p.add_argument("--max-request", type=int, default=None, help="bytes; 0 = no limit (fluent-bit: 6144000)")
    p.add_argument("--shared-key", help="require the HELO/PING/PONG handshake with this key")
    p.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD", help="user auth (repeatable)"
    )
    p.add_argument("--self-hostname", default=codec.DEFAULT_SERVER_HOSTNAME, help="hostname sent in PONG")
    p.add_argument("--tls-cert", help="server certificate (PEM) for a tls:// listener")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    p.add_argument("--ack-delay", type=float, default=0.0, metavar="SECONDS", help="wait before each ack")
    p.add_argument("--drop-acks", type=int, default=0, metavar="N", help="withhold the first N acks")
    p.add_argument(
        "--close-before-ack", type=int, default=0, metavar="N", help="close instead of the first N acks"
    )
    p.add_argument("--output", help="append records to this file instead of stdout")
    p.add_argument("--count-only", action="store_true", help="print no records, only a summary at exit")
    return p.parse_args(argv)


def _config(args: argparse.Namespace) -> ReceiverConfig:
    users = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep:
            raise SystemExit(f"--user {item!r}: expected NAME:PASSWORD")
        users[name] = password
    return ReceiverConfig(
        listen=args.listen,
        flavour=args.flavour,
        max_request=args.max_request,
        shared_key=args.shared_key,
        users=users,
        self_hostname=args.self_hostname,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        ack_delay=args.ack_delay,
        drop_acks=args.drop_acks,
        close_before_ack=args.close_before_ack,
    )


async def _run(args: argparse.Namespace, out: TextIO) -> Stats:
    sink: Sink = None if args.count_only else _LineWriter(out)
    receiver = Receiver(_config(args), sink)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await receiver.start()
    await stop.wait()
    log.info("stopping")
    await receiver.stop()
    return receiver.stats


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="receiver: %(message)s")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.output, "a", encoding="utf-8")) if args.output else sys.stdout
        try:
            stats = asyncio.run(_run(args, out))
        except (ValueError, OSError) as exc:
            log.error("%s", exc)
            return 2
        summary = json.dumps({"summary": asdict(stats)})
        log.info("%s", summary)
        if args.count_only:
            print(summary, file=out, flush=True)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
