"""FIFO frame decode, differential: FrameDecoder with the C decoder (driver/_speedups.c decode_frames) against
FrameDecoder(pure=True), over the same stream cut into the same chunks, the way a sink reads a journal.

Input: one control byte (bit 0: the last call is final; bits 1-3: the chunk size), then the stream. Compared after
every call: the entries, the bytes used, the record offsets, the counts; at the end the skipped bytes and the
resync incidents. The stream is garbage, torn frames and real frames (the corpus is dockerd's own)."""

from __future__ import annotations

from driver.frames import FrameDecoder

from .common import same

MAX_LEN = 1 << 15  # two of dockerd's 16 KiB partial chunks
CHUNKS = [0, 1, 4, 13, 64, 512, 4096, 16389]  # 0: the whole stream in one call


def run(decoder: FrameDecoder, stream: bytes, chunk: int, final: bool) -> list:
    if chunk:  # at most ~32 calls: a torn frame is passed again with each chunk, quadratic in their number
        chunk = max(chunk, len(stream) // 32)
    calls, tail, fed = [], b"", 0
    while True:
        take = len(stream) - fed if chunk == 0 else min(chunk, len(stream) - fed)
        buf = tail + stream[fed : fed + take]
        fed += take
        last = fed >= len(stream)
        offsets: list[int] = []
        got, used = decoder.decode(buf, final=final and last, offsets=offsets)
        calls.append((got, used, offsets, decoder.counts))
        tail = buf[used:]
        if last:
            break
    calls.append((decoder.skipped_bytes, decoder.garbled, len(tail)))
    return calls


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    control, stream = data[0], data[1:]
    final, chunk = bool(control & 1), CHUNKS[(control >> 1) & 7]
    same("decode", run(FrameDecoder(), stream, chunk, final), run(FrameDecoder(pure=True), stream, chunk, final))


def seeds() -> dict[str, bytes]:
    from fuzz.seeds import fifo_samples

    out = {}
    for name, raw in fifo_samples().items():
        out[f"{name}-whole-final"] = b"\x01" + raw
        out[f"{name}-chunk13"] = b"\x06" + raw
    return out
