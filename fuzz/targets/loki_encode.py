"""The Loki codec: driver/outputs/loki/_encode.c encode_stream against codec.encode_stream_reference, whole results
(bytes, counts, order flag); the bytes, wrapped in a PushRequest, decoded by the protobuf library as Loki's gogo
decoder reads them (line as bytes): the entries that passed the limits, in order, with their timestamps and
metadata. The snappy block round-trips, and decompress() on any bytes returns or raises ValueError.

Input: the first byte picks the encoder (even) or snappy decompress of the rest (odd)."""

from __future__ import annotations

import atheris

from driver.outputs.loki import codec
from driver.speedups import encode_loki_stream
from tests.support.loki_proto import LokiPushRequest

from .. import inputs
from .common import Finding, same

MAX_LEN = 1 << 14
NS = codec.NS


def bound(fdp) -> int:
    return fdp.PickValueInList([-1, 0, codec.INT64_MAX, 1_750_000_000 * NS]) if fdp.ConsumeBool() else \
        fdp.ConsumeIntInRange(-1, codec.INT64_MAX)


def check_encode(fdp) -> None:
    batch = inputs.entries(fdp, odd=fdp.ConsumeIntInRange(0, 3) == 0)
    source = fdp.PickValueInList(["stdout", "stderr"])
    pairs = {fdp.ConsumeUnicodeNoSurrogates(8): fdp.ConsumeUnicodeNoSurrogates(16)
             for _ in range(fdp.ConsumeIntInRange(0, 2))}
    md = codec.metadata_bytes(pairs)
    limits = (bound(fdp), bound(fdp), fdp.ConsumeIntInRange(0, 400))
    try:
        want = codec.encode_stream_reference(batch, source, md, *limits)
    except (TypeError, ValueError, IndexError, AttributeError):
        want = None  # an entry the decoder never makes: the C must decline it too, or encode it the same way
    got = encode_loki_stream(batch, source, md, *limits)
    if got is not None:
        same("encode_stream", got, want)
    if want is None:
        return
    kept = [e for e in batch if e[0] == source and limits[0] <= e[1] <= limits[1] and len(e[2]) <= limits[2]]
    body = codec.push_request([codec.stream_bytes('{a="b"}', want[0])])
    decoded = LokiPushRequest.FromString(codec.decompress(codec.compress(body)))
    if len(decoded.streams) != 1:
        raise Finding(f"{len(decoded.streams)} streams decoded from one")
    stream = decoded.streams[0]
    got_entries = [(e.timestamp.seconds * NS + e.timestamp.nanos, e.line,
                    {p.name: p.value for p in e.structuredMetadata}) for e in stream.entries]
    same("decoded entries", got_entries, [(e[1], bytes(e[2]), pairs) for e in kept])
    same("sent", want[1], len(kept))


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        try:
            codec.decompress(data[1:])
        except ValueError:
            pass
        return
    check_encode(atheris.FuzzedDataProvider(data[1:]))


def seeds() -> dict[str, bytes]:
    return {}
