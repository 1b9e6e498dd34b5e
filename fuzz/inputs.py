"""Structured inputs carved from the fuzzer's bytes (atheris.FuzzedDataProvider): decoded entries as the frame
decoder makes them (docs/architecture.md, "Decoded entries"), plus the odd values C code must decline, not crash
on. Every choice is taken from the input, so an input replays exactly."""

from __future__ import annotations

from driver.frames import encode_entry

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NS = 1_000_000_000
# Sources the decoder makes, and ones it never does (the C code must decline them, the Python copes).
SOURCES = ["stdout", "stderr", "stdout", "stderr", "", "other", "stdoutx"]
# Times around the edges the encoders special-case: zero, negative, whole seconds, int64 and uint32-second limits.
TIMES = [0, 1, -1, NS, -NS, NS - 1, INT64_MAX, INT64_MIN, 0xFFFFFFFD * NS, 0xFFFFFFFE * NS, 1_764_165_000 * NS]


def time_nano(fdp, odd: bool) -> int:
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        return fdp.PickValueInList(TIMES)
    if kind == 1:
        return fdp.ConsumeIntInRange(1_700_000_000 * NS, 1_800_000_000 * NS)
    if kind == 2 and odd:
        return fdp.ConsumeInt(9)  # beyond int64 now and then
    return fdp.ConsumeIntInRange(INT64_MIN, INT64_MAX)


def entry(fdp, odd: bool = True, max_line: int = 300, time_of=None, line_of=None) -> tuple:
    """One decoded entry; with ``odd``, sometimes a source, type or shape the decoder never produces. ``time_of``
    and ``line_of`` (``f(fdp, odd)``, ``f(fdp, max_line)``) carve those two fields another way than the default."""
    source = fdp.PickValueInList(SOURCES) if odd else fdp.PickValueInList(SOURCES[:2])
    t = time_of(fdp, odd) if time_of else time_nano(fdp, odd)
    line = line_of(fdp, max_line) if line_of else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, max_line))
    partial = fdp.ConsumeBool()
    if partial:
        # The decoder takes a chunk's id as strict UTF-8: a lone surrogate in one is an odd entry.
        carve_id = fdp.ConsumeUnicode if odd else fdp.ConsumeUnicodeNoSurrogates
        e = (source, t, line, True, fdp.ConsumeBool(), carve_id(fdp.ConsumeIntInRange(0, 12)),
             fdp.ConsumeIntInRange(-(2**31), 2**31 - 1))
    else:
        e = (source, t, line, False, False, "", 0)
    if odd and fdp.ConsumeIntInRange(0, 31) == 0:
        return _odd(fdp, e)
    return e


def _odd(fdp, e: tuple) -> object:
    """A malformed entry: a list, a bytearray line, int flags, a str line, a short tuple."""
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        return list(e)
    if kind == 1:
        return (*e[:2], bytearray(e[2]), *e[3:])
    if kind == 2:
        return (*e[:3], int(e[3]), int(e[4]), *e[5:])
    if kind == 3:
        return (*e[:2], e[2].decode("latin-1"), *e[3:])
    if kind == 4:
        return e[: fdp.ConsumeIntInRange(0, 6)]
    return (None, *e[1:])


def entries(fdp, odd: bool = True, max_entries: int = 24, max_line: int = 300, time_of=None, line_of=None) -> list:
    return [entry(fdp, odd, max_line, time_of, line_of) for _ in range(fdp.ConsumeIntInRange(0, max_entries))]


def journal(fdp, entry_of=None) -> bytes:
    """A journal's bytes as a sink reads them: mostly whole frames (``entry_of(fdp)``, else an ordinary
    ``entry``), now and then any bytes (garbage, a lone header, a frame), and a torn tail still being written."""
    pieces = []
    for _ in range(fdp.ConsumeIntInRange(0, 16)):
        if fdp.ConsumeIntInRange(0, 3):
            pieces.append(encode_entry(entry_of(fdp) if entry_of else entry(fdp, odd=False)))
        else:
            pieces.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)))
    stream = b"".join(pieces)
    return stream[: max(len(stream) - fdp.ConsumeIntInRange(0, 8), 0)]
