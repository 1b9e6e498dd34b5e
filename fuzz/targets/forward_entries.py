"""The test receiver's C entry counter, differential: driver/outputs/forward/_entries.c count_entries against the
Python decoder it stands in for (codec._check_entries over codec._unpack_entries, strict), on any bytes: the same
count wherever the Python accepts, ValueError exactly where it raises ProtocolError. Then whole connections: a
count-only strict ServerProtocol (the bench's receiver) against a decoding one, fed the same chunks: the same
requests with the same counts, sizes and options, and a ProtocolError at the same request.

Input: the first byte picks the counter (even) or a connection (odd, bits 1-3: the chunk size); the rest is the
PackedForward entries or the bytes a client sent."""

from __future__ import annotations

from driver.outputs.forward import codec
from driver.outputs.forward.codec import ProtocolError, ServerProtocol
from driver.speedups import count_entries

from .common import Finding, same

MAX_LEN = 1 << 14
CHUNKS = [0, 1, 3, 16, 100, 1000, 4096, 0]


def reference(payload: bytes) -> int | None:
    try:
        good, skipped = codec._check_entries(codec._unpack_entries(payload), strict=True)
    except ProtocolError:
        return None
    if skipped:
        raise Finding(f"strict _check_entries skipped {skipped} entries instead of raising")
    return len(good)


def counted(payload: bytes) -> int | None:
    try:
        return count_entries(payload)
    except ValueError:
        return None


def view(event: object) -> tuple:
    if isinstance(event, codec.Request):
        return (type(event).__name__, event.tag, event.count, event.option, event.size, event.skipped)
    return (type(event).__name__, event)


def converse(server: ServerProtocol, stream: bytes, chunk: int) -> list:
    said = []
    for at in range(0, len(stream), chunk or len(stream) or 1):
        try:
            said.append([view(e) for e in server.receive_data(stream[at : at + (chunk or len(stream))])])
        except ProtocolError as exc:
            said.append(("ProtocolError", [view(e) for e in exc.events or []]))
            break
    return said


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if not data[0] & 1:
        same("count_entries", counted(data[1:]), reference(data[1:]))
        return
    chunk = CHUNKS[(data[0] >> 1) & 7]
    fast = converse(ServerProtocol(strict=True, max_request=1 << 13, count_only=True), data[1:], chunk)
    slow = converse(ServerProtocol(strict=True, max_request=1 << 13), data[1:], chunk)
    same("count-only server", fast, slow)


def seeds() -> dict[str, bytes]:
    from fuzz.seeds import forward_requests

    out = {}
    for name, (entries, request) in forward_requests().items():
        out[f"count-{name}"] = b"\x00" + entries
        out[f"conn-{name}"] = b"\x01" + request
        out[f"conn-{name}-chunk16"] = b"\x07" + request
    return out
