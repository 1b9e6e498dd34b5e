"""The forward client's reply parser: codec.ClientProtocol on whatever a server (or something posing as one)
sends: acks, HELO, PONG, garbage. Properties: receive_data returns Helo/Pong/Ack or raises ProtocolError, nothing
else; the same bytes in chunks give the same replies as in one piece; ping() on any HELO gives a PING; check_pong()
on any PONG (a forged digest included) raises HandshakeError, nothing else.

Input: the first byte's bits 0-2 pick the chunk size; the rest is the server's bytes."""

from __future__ import annotations

from driver.outputs.forward.codec import Ack, ClientProtocol, HandshakeError, Helo, Pong, ProtocolError

from .common import Finding, same

MAX_LEN = 1 << 12
CHUNKS = [1, 2, 3, 7, 16, 64, 256, 1024]


def client() -> ClientProtocol:
    return ClientProtocol(hostname="fuzz-host", shared_key="k", username="u", password="p", salt="s" * 32)


def replies(stream: bytes, chunk: int | None) -> tuple[list, bool]:
    proto, got = client(), []
    try:
        for at in range(0, len(stream), chunk or max(len(stream), 1)):
            got += proto.receive_data(stream[at : at + (chunk or len(stream))])
    except ProtocolError:
        return got, True
    for reply in got:
        if not isinstance(reply, (Ack, Helo, Pong)):
            raise Finding(f"receive_data returned {reply!r}")
    return got, False


def handshake(got: list) -> None:
    proto = client()
    for reply in got:
        try:
            if isinstance(reply, Helo):
                if not isinstance(proto.ping(reply), bytes):
                    raise Finding("ping() did not return bytes")
            elif isinstance(reply, Pong):
                proto.check_pong(reply)
                raise Finding(f"check_pong accepted a PONG the fuzzer made: {reply!r}")
        except HandshakeError:
            pass


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    chunk, stream = CHUNKS[data[0] & 7], data[1:]
    whole, whole_failed = replies(stream, None)
    pieces, pieces_failed = replies(stream, chunk)
    same("failed", pieces_failed, whole_failed)
    if not whole_failed:
        same("replies in chunks", pieces, whole)
    handshake(pieces)


def seeds() -> dict[str, bytes]:
    from fuzz.seeds import forward_replies

    return {name: b"\x03" + raw for name, raw in forward_replies().items()}
