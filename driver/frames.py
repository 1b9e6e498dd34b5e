"""The frame codec dockerd speaks on a log FIFO and expects back from ReadLogs. Pure: bytes in, tuples out.

A frame is a big-endian u32 payload length followed by a protobuf ``LogEntry``. Decoded entries are plain tuples
(cheap to build on the hot path), in the order named by ``Entry``.

dockerd never writes anything else into the pipe, but a journal can still hold garbage (a torn frame after a crash
of the writer, a journal cut by its byte cap at a segment edge). There is no sync marker, so the decoder skips to
the next *plausible* frame: a sane length followed by field 1 (``source``) holding ``stdout`` or ``stderr``, which
is how every frame dockerd writes begins (protobuf serialises fields in number order).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from logbridge_proto.entry_pb2 import LogEntry

from driver import speedups

# Whether decoders use the C decoder for ordinary frames (driver/speedups.py); the code below is the reference.
SPEEDUPS = speedups.decode_frames is not None

# dockerd's copier cuts lines at 16 KiB, so real frames stay under ~16.5 KB; moby's own readers cap at 1e6.
MAX_FRAME = 1_000_000
HEADER = 4
SOURCES = ("stdout", "stderr")
# Field 1 (source), wire type 2, length 6: the first bytes of every payload dockerd writes.
_SOURCE_TAG = b"\x0a\x06"
_PLAUSIBLE_SOURCES = (b"stdout", b"stderr")

_unpack_len = struct.Struct(">I").unpack_from
_pack_len = struct.Struct(">I").pack


class Entry(NamedTuple):
    """Field order of the decoded-entry tuples (the decoder builds plain tuples; this documents and names them)."""

    source: str
    time_nano: int
    line: bytes
    partial: bool
    last: bool
    partial_id: str
    ordinal: int


def _plausible_at(buf: bytes | memoryview, pos: int) -> bool:
    """Whether a frame dockerd could have written starts at ``pos`` (needs 12 bytes to judge)."""
    (length,) = _unpack_len(buf, pos)
    return (
        8 <= length <= MAX_FRAME
        and buf[pos + 4 : pos + 6] == _SOURCE_TAG
        and bytes(buf[pos + 6 : pos + 12]) in _PLAUSIBLE_SOURCES
    )


def first_plausible(buf: bytes | memoryview, start: int = 0) -> int | None:
    """Position of the first plausible frame at or after ``start``; None if there is none
    with 12 bytes to judge it (a reader that starts at an arbitrary offset, such as a segment edge, resynchronises
    with it)."""
    end = len(buf)
    probe = start
    while True:
        tag = buf.find(_SOURCE_TAG, probe + HEADER)
        if tag < 0 or tag + 8 > end:
            return None
        cand = tag - HEADER
        if _plausible_at(buf, cand):
            return cand
        probe = cand + 1


class FrameDecoder:
    """Decodes a frame stream chunk by chunk, skipping garbage; counts what it skipped.

    ``decode(buf)`` returns the entries of the whole frames at the start of ``buf`` and how many bytes they (and any
    skipped garbage) used; the caller keeps the unused tail and passes it again with more bytes. With ``final=True``
    (no more bytes will come) a torn frame at the end is counted as garbage instead of waiting.

    With the C extension (``SPEEDUPS``) ordinary frames are decoded in C, and every frame it leaves (garbage, a
    torn or empty frame, anything unusual in the protobuf) is handled here, one at a time, exactly as without it.
    ``pure=True`` makes a decoder that never uses C (the reference, for comparisons).
    """

    def __init__(self, pure: bool = False) -> None:
        self._c_decode = None if pure else speedups.decode_frames
        self.counts = (0, 0, 0, 0)  # the last decode's (stdout lines, stdout bytes, stderr lines, stderr bytes)
        self.skipped_bytes = 0  # garbage bytes stepped over
        self.garbled = 0  # places where the stream had to be resynchronised
        self._lost = False  # inside garbage whose end is not in sight yet: one incident, counted once

    def decode(self, buf: bytes, final: bool = False, offsets: list[int] | None = None) -> tuple[list[tuple], int]:
        """``offsets``: a list to which the position in ``buf`` of each entry's frame is appended (record ids)."""
        out: list[tuple] = []
        append = out.append
        # A fresh message per call: upb's parse arena only grows while its message lives, so one message reused
        # for every frame held ~130 bytes per frame ever decoded (the whole journal, in effect).
        msg = LogEntry()
        parse = msg.ParseFromString
        view = memoryview(buf)
        pos = 0
        end = len(buf)
        out_lines = out_bytes = err_lines = err_bytes = 0
        c_decode = self._c_decode
        while end - pos >= HEADER:
            if c_decode is not None:
                # C takes the ordinary frames from here on; the one it stops at (if any) goes the Python way below.
                got, pos, (c_out_lines, c_out_bytes, c_err_lines, c_err_bytes) = c_decode(buf, pos, offsets)
                if got:
                    out += got
                    out_lines += c_out_lines
                    out_bytes += c_out_bytes
                    err_lines += c_err_lines
                    err_bytes += c_err_bytes
                    self._lost = False
                    if end - pos < HEADER:
                        break
            (length,) = _unpack_len(buf, pos)
            stop = pos + HEADER + length
            if length > MAX_FRAME:
                pos = self._resync(buf, pos, final)
                continue
            if stop > end:
                if final:  # a length that runs past the end of everything: garbage, look for frames inside it
                    pos = self._resync(buf, pos, final)
                    continue
                break
            try:
                parse(view[pos + HEADER : stop])
            except Exception:  # noqa: BLE001 - upb raises DecodeError, a garbled payload is all it can mean
                pos = self._resync(buf, pos, final)
                continue
            source = msg.source
            if source != "stdout" and source != "stderr":
                if length == 0:  # an empty LogEntry is a valid frame that carries nothing
                    pos = stop
                    continue
                pos = self._resync(buf, pos, final)
                continue
            self._lost = False
            if offsets is not None:
                offsets.append(pos)
            line = msg.line
            if source == "stderr":  # counted here, where the fields are at hand: a second pass costs more
                err_lines += 1
                err_bytes += len(line)
            else:
                out_lines += 1
                out_bytes += len(line)
            if msg.partial:
                meta = msg.partial_log_metadata
                append((source, msg.time_nano, line, True, meta.last, meta.id, meta.ordinal))
            else:
                append((source, msg.time_nano, line, False, False, "", 0))
            pos = stop
        if final and pos < end:
            self._skip(end - pos)
            pos = end
        self.counts = (out_lines, out_bytes, err_lines, err_bytes)
        return out, pos

    def found_frames(self) -> None:
        """Frames were read from the stream past where this decoder stopped, without it (the forward output's
        direct batches): garbage after them is a new incident, as if it had read them itself."""
        self._lost = False

    def _resync(self, buf: bytes, pos: int, final: bool) -> int:
        """Position of the next plausible frame after ``pos``; all bytes before it are counted as skipped."""
        if not self._lost:
            self.garbled += 1
        nxt = first_plausible(buf, pos + 1)
        if nxt is None:
            # Keep a tail that may hold the start of a plausible frame, unless nothing more will come.
            nxt = len(buf) if final else max(pos + 1, len(buf) - 11)
            self._lost = not final
        else:
            self._lost = False
        self._skip(nxt - pos)
        return nxt

    def _skip(self, n: int) -> None:
        self.skipped_bytes += n


def last_boundary(buf: bytes | bytearray, pos: int = 0, limit: int | None = None) -> tuple[int, bool]:
    """Walk frame headers from the frame boundary ``pos``: the last boundary at or before ``limit`` (the end of
    ``buf`` by default), and whether the walk stopped at a length no frame has (garbage: later boundaries unknown)."""
    limit = len(buf) if limit is None else limit
    while limit - pos >= HEADER:
        (length,) = _unpack_len(buf, pos)
        if length > MAX_FRAME:
            return pos, True
        nxt = pos + HEADER + length
        if nxt > limit:
            break
        pos = nxt
    return pos, False


def encode_frame(source: str, time_nano: int, line: bytes) -> bytes:
    """One frame as ReadLogs returns it to dockerd (no partial metadata: dockerd drops it on reads anyway)."""
    msg = LogEntry(source=source, time_nano=time_nano, line=line)
    payload = msg.SerializeToString()
    return _pack_len(len(payload)) + payload


def encode_entry(entry: tuple) -> bytes:
    """One frame carrying every field of a decoded entry, as dockerd writes it into the FIFO (tests, benchmarks)."""
    source, time_nano, line, partial, last, partial_id, ordinal = entry
    msg = LogEntry(source=source, time_nano=time_nano, line=line, partial=partial)
    if partial:
        meta = msg.partial_log_metadata
        meta.last = last
        meta.id = partial_id
        meta.ordinal = ordinal
    payload = msg.SerializeToString()
    return _pack_len(len(payload)) + payload
