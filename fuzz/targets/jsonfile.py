"""json-file encode, differential and byte-exact: driver/_speedups.c encode_lines against
jsonfile.encode_entries_pure, over whole batches; the dispatcher (encode_entries) must equal the reference
whatever C does. Then the reader: every line written decodes back to its stream and time, and decode_line on any
bytes (a torn or foreign json.log line) returns or raises ValueError, nothing else. Then encode_frame_lines
(jsonfile.encode_frames: journal frames straight to the lines joined, the json.log writer's batches) against the
decoded way: the frames decode_frames takes, cut at the first empty chunk that is not the last, encoded by the
reference, with the same stdout/stderr counts.

Input: the first byte picks encode (even) or decode (odd); the rest is carved into entries (fuzz/inputs.py) or
taken as one line."""

from __future__ import annotations

import atheris

from driver import jsonfile, speedups
from driver.frames import MAX_FRAME, FrameDecoder
from driver.jsonfile import encode_attrs, encode_entries_pure

from .. import inputs
from .common import Finding, outcome, same

MAX_LEN = 1 << 14
ATTRS = [None, b"", encode_attrs({"tag": "web", "env": "prod<&>"}), b'{"tag":"x"}']


def check_encode(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    attrs_json = fdp.PickValueInList(ATTRS)
    batch = inputs.entries(fdp)
    want = outcome(encode_entries_pure, batch, attrs_json)
    got = outcome(speedups.encode_lines, batch, attrs_json)
    if got[0] != "ok":
        raise Finding(f"encode_lines raised instead of declining: {got!r}")
    if got[1] is not None:  # None: declined, the Python runs
        same("encode_lines", got, want)
    dispatched = outcome(jsonfile.encode_entries, batch, attrs_json)
    same("encode_entries", dispatched[:2], want[:2])
    if want[0] == "ok":
        for e, line in zip(batch, want[1], strict=True):
            if not inputs.INT64_MIN <= e[1] <= inputs.INT64_MAX:  # year > 9999: no RFC3339 time reads it back
                continue
            _, stream, time_nano, attrs = jsonfile.decode_line(line)
            same("decode_line(encoded)", (stream, time_nano, attrs), (e[0], e[1], attrs_json or None))
    check_frames(fdp, attrs_json)  # from the bytes left: the corpus's inputs still mean what they did


def check_frames(fdp, attrs_json: bytes | None) -> None:
    stream = inputs.journal(fdp)
    got = outcome(jsonfile.encode_frames, stream, attrs_json)
    if got[0] != "ok":
        raise Finding(f"encode_frames raised: {got!r}")
    if got[1] is None:
        return  # no C: the writer decodes
    offsets: list[int] = []
    entries, stop, _ = speedups.decode_frames(stream, 0, offsets)  # the frames the shared parser takes
    declined = None
    for k, e in enumerate(entries):
        if e[3] and not e[4] and not e[2]:  # an empty chunk that is not the last: encode_entries' general form
            entries, stop, declined = entries[:k], offsets[k], True
            break
    if declined is None:
        rest = len(stream) - stop
        length = int.from_bytes(stream[stop : stop + 4], "big") if rest >= 4 else 0
        declined = not (rest < 4 or (0 < length <= MAX_FRAME and length > rest - 4))
    counts = [0, 0, 0, 0]
    for e in entries:
        k = 2 if e[0] == "stderr" else 0
        counts[k] += 1
        counts[k + 1] += len(e[2])
    want = (stop, len(entries), declined, b"".join(encode_entries_pure(entries, attrs_json)), tuple(counts))
    same("encode_frames", got[1], want)
    decoder = FrameDecoder(pure=True)
    taken, used = decoder.decode(stream[:stop])
    same("decoded the same frames", (used, len(taken), decoder.skipped_bytes), (stop, len(entries), 0))


def check_decode(line: bytes) -> None:
    try:
        jsonfile.decode_line(line)
    except ValueError:
        pass


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        check_decode(data[1:])
    else:
        check_encode(data[1:])


def seeds() -> dict[str, bytes]:
    from fuzz.seeds import jsonfile_lines

    return {f"decode-{name}-{i}": b"\x01" + line for name, lines in jsonfile_lines().items()
            for i, line in enumerate(lines[:4])}
