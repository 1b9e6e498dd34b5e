"""Journal frames for the forward output's tests and benches: what dockerd writes into a FIFO, and the odd frames a
journal can still hold, each built byte by byte so a test knows which path (C straight from the frames, or the
decoded way) it must take.

``frame(...)`` is one frame as dockerd writes it (protobuf serialised by upb, fields in number order); the others
are payloads dockerd never writes but a protobuf reader must still read the same way, or garbage.
"""

from __future__ import annotations

import struct

from driver.frames import encode_entry

T0 = 1_764_165_000_123_456_789  # a time with every nanosecond digit set


def frame(line: bytes = b"hello", *, source: str = "stdout", time_nano: int = T0, partial: bool = False,
          last: bool = False, partial_id: str = "", ordinal: int = 0) -> bytes:
    """One frame as dockerd writes it; a partial chunk carries its metadata."""
    return encode_entry((source, time_nano, line, partial, last, partial_id, ordinal))


def raw_frame(payload: bytes) -> bytes:
    """A length prefix and any payload."""
    return struct.pack(">I", len(payload)) + payload


def short_lines(n: int, *, time_nano: int = T0, width: int = 6) -> bytes:
    """``n`` frames of short numbered lines (as ``seq``), stdout, one microsecond apart."""
    return b"".join(frame(str(i).zfill(width).encode(), time_nano=time_nano + 1000 * i) for i in range(n))


def chunks(line: bytes, *, partial_id: str = "p-1", size: int = 16 << 10, source: str = "stdout",
           time_nano: int = T0) -> bytes:
    """A long line cut into 16 KiB chunks as dockerd's copier cuts it: partial, ordinals from 1, the last marked."""
    parts = [line[i:i + size] for i in range(0, len(line), size)] or [b""]
    return b"".join(frame(part, source=source, time_nano=time_nano, partial=True, last=k == len(parts) - 1,
                          partial_id=partial_id, ordinal=k + 1) for k, part in enumerate(parts))


# Frames only the decoded way reads (upb, or FrameDecoder's resync): each with what makes it so.
EMPTY = raw_frame(b"")  # a valid LogEntry carrying nothing: skipped, no entry
UNKNOWN_FIELD = raw_frame(b"\x0a\x06stdout\x1a\x02hi\x30\x01")  # field 6: upb keeps it as unknown
NON_CANONICAL = raw_frame(b"\x0a\x06stdout\x10\x81\x00\x1a\x02hi")  # time as a two-byte varint for 1
NO_SOURCE = raw_frame(b"\x1a\x02hi")  # upb reads it, FrameDecoder resyncs past it
GARBAGE = b"\x00\x00\x00\x09not a frame at all"
# A partial chunk whose metadata has no id (proto3 leaves the empty string out): C must not copy from NULL.
EMPTY_ID_CHUNK = raw_frame(b"\x0a\x06stdout\x1a\x02hi\x20\x01\x2a\x02\x18\x01")
ODD = {"empty": EMPTY, "unknown_field": UNKNOWN_FIELD, "non_canonical": NON_CANONICAL, "no_source": NO_SOURCE,
       "garbage": GARBAGE}
