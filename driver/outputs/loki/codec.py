"""Loki's push body: a ``logproto.PushRequest`` protobuf, snappy block compressed. Pure: bytes in, bytes out.

Field numbers are Loki's ``pkg/push/push.proto``::

    PushRequest      { repeated StreamAdapter streams = 1; }
    StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; }
    EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
                       repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp        { int64 seconds = 1; int32 nanos = 2; }

The bytes are written by hand into one bytearray per stream (no message object per entry). Lines go as the bytes
the container wrote: Loki's Go (gogo) decoder takes a ``string`` field's bytes as they are, and a line must not
change on its way. The body is snappy's *block* format (Loki decodes with ``snappy.Decode``; the framed format,
cramjam's ``snappy.compress``, fails there). cramjam's ``compress_raw`` was picked by measurement: as fast as
python-snappy, which since 0.7 is a wrapper around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cramjam

from driver.speedups import encode_loki_frames as _c_encode_frames
from driver.speedups import encode_loki_stream as _c_encode_stream

CONTENT_TYPE = "application/x-protobuf"
NS = 1_000_000_000

# Tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
_PUSH_STREAMS = b"\x0a"
_STREAM_LABELS = b"\x0a"
_STREAM_ENTRIES = 0x12
_ENTRY_TIMESTAMP = b"\x0a"
_ENTRY_LINE = b"\x12"
_ENTRY_METADATA = b"\x1a"
_TS_SECONDS = b"\x08"
_TS_NANOS = b"\x10"
_PAIR_NAME = b"\x0a"
_PAIR_VALUE = b"\x12"

_SMALL = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
_MORE = [bytes([(n & 0x7F) | 0x80, (n >> 7) | 0x80]) for n in range(1 << 14)]  # 14 bits, more to follow


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of an int (a negative int64 goes as its 10-byte two's complement), 14 bits a
    table lookup at a time: timestamps are the per-line cost."""
    if 0 <= n < 16384:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = b""
    while n >= 16384:
        out += _MORE[n & 0x3FFF]
        n >>= 14
    return out + _SMALL[n]


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


def metadata_bytes(pairs: Mapping[str, str]) -> bytes:
    """The structuredMetadata fields of one entry, encoded once and appended to each entry that carries them."""
    out = bytearray()
    for name, value in pairs.items():
        pair = _field(_PAIR_NAME, name.encode()) + _field(_PAIR_VALUE, value.encode())
        out += _ENTRY_METADATA + varint(len(pair)) + pair
    return bytes(out)


def timestamp_bytes(time_nano: int) -> bytes:
    """A google.protobuf.Timestamp body; zero fields left out as proto3 does (nanos is in [0, 1e9) either way)."""
    seconds, nanos = divmod(time_nano, NS)
    out = _TS_SECONDS + varint(seconds) if seconds else b""
    return out + _TS_NANOS + varint(nanos) if nanos else out


def append_entry(out: bytearray, time_nano: int, line: bytes, metadata: bytes = b"") -> int:
    """Append one EntryAdapter (field 2 of StreamAdapter) to ``out``; returns the bytes added."""
    ts = timestamp_bytes(time_nano)
    body_len = 2 + len(ts) + 1 + len(varint(len(line))) + len(line) + len(metadata)
    before = len(out)
    out.append(_STREAM_ENTRIES)
    out += varint(body_len)
    out += _ENTRY_TIMESTAMP
    out.append(len(ts))
    out += ts
    out += _ENTRY_LINE
    out += varint(len(line))
    out += line
    out += metadata
    return len(out) - before


def append_entries(out: bytearray, entries: Iterable[tuple], metadata: bytes = b"") -> None:
    """append_entry for decoded entries ``(source, time_nano, line, ...)``, inlined: this is the per-line cost."""
    small = _SMALL
    md_len = len(metadata)
    last_seconds, seconds_field = -1, b""
    for entry in entries:
        seconds, nanos = divmod(entry[1], NS)
        if seconds != last_seconds:  # lines of one second share it
            last_seconds, seconds_field = seconds, _TS_SECONDS + varint(seconds) if seconds else b""
        ts = seconds_field + _TS_NANOS + varint(nanos) if nanos else seconds_field
        line = entry[2]
        n = len(line)
        line_len = small[n] if n < 16384 else varint(n)
        body_len = 3 + len(ts) + len(line_len) + n + md_len
        out += b"".join((b"\x12", small[body_len] if body_len < 16384 else varint(body_len), b"\x0a",
                         small[len(ts)], ts, b"\x12", line_len, line, metadata))


INT64_MAX = (1 << 63) - 1


def encode_stream_reference(entries: list[tuple], source: str, metadata: bytes = b"", oldest: int = -1,
                            newest: int = INT64_MAX, longest: int = INT64_MAX) -> tuple:
    """The entries of one source that pass Loki's limits, encoded for one stream (the C ``encode_stream`` is
    tested against this). An entry is too old below ``oldest``, too new above ``newest``, too long above
    ``longest`` line bytes, checked in that order as Loki's distributor does.

    Returns ``(encoded, sent, size, too_old, too_new, too_long, in_order)``: ``size`` counts line and metadata
    bytes (the batch size as the promtail client counts it); ``in_order`` is False when a timestamp went back,
    and the caller then sorts and encodes again."""
    out = bytearray()
    sent = size = too_old = too_new = too_long = 0
    in_order, last = True, -1
    for entry in entries:
        if entry[0] != source:
            continue
        ts, line = entry[1], entry[2]
        if ts < oldest:
            too_old += 1
        elif ts > newest:
            too_new += 1
        elif len(line) > longest:
            too_long += 1
        else:
            if ts < last:
                in_order = False
            last = ts
            append_entry(out, ts, line, metadata)
            sent += 1
            size += len(line) + len(metadata)
    return bytes(out), sent, size, too_old, too_new, too_long, in_order


def encode_stream(entries: list[tuple], source: str, metadata: bytes = b"", oldest: int = -1,
                  newest: int = INT64_MAX, longest: int = INT64_MAX) -> tuple:
    """encode_stream_reference, in C when built (it declines input it is not sure of: the reference runs)."""
    if _c_encode_stream is not None:
        got = _c_encode_stream(entries, source, metadata, oldest, newest, longest)
        if got is not None:
            return got
    return encode_stream_reference(entries, source, metadata, oldest, newest, longest)


def encode_frames(frames: bytes, metadata: bytes = b"", oldest: int = -1, newest: int = INT64_MAX,
                  longest: int = INT64_MAX) -> tuple | None:
    """Journal frames straight to each source's stream entries, in C: ``(used, count, declined, streams)``, the
    streams as ``(source, *encode_stream's result)`` in sorted source order, for the ordinary frames at the start
    of ``frames`` (see _encode.c). None without the C module: the caller decodes the frames and calls
    encode_stream, which is the reference this is tested against."""
    if _c_encode_frames is None:
        return None
    return _c_encode_frames(frames, metadata, oldest, newest, longest)


def stream_bytes(labels: str, entries: bytes | bytearray) -> bytes:
    """One PushRequest.streams field: a StreamAdapter with its labels string and the entries built by
    append_entry."""
    body = _field(_STREAM_LABELS, labels.encode()) + entries
    return _PUSH_STREAMS + varint(len(body)) + body


def push_request(streams: Iterable[bytes]) -> bytes:
    """The PushRequest of the given stream_bytes (a repeated field is its fields one after another)."""
    return b"".join(streams)


def compress(body: bytes) -> bytes:
    """Snappy block format, as Loki's distributor reads it."""
    return bytes(cramjam.snappy.compress_raw(body))


def decompress(data: bytes) -> bytes:
    """Snappy block format; raises ValueError on anything else (the framed format included)."""
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # cramjam.DecompressionError
        raise ValueError(f"not a snappy block: {exc}") from None


# ---- the labels string ---------------------------------------------------------------------------------------
def format_labels(labels: Mapping[str, str]) -> str:
    """Prometheus text form as Loki's clients write it: names sorted, ``", "`` between pairs, values quoted as
    Go's strconv.Quote does (Loki parses it with the PromQL metric parser, which reads Go string escapes)."""
    return "{" + ", ".join(f"{name}={go_quote(labels[name])}" for name in sorted(labels)) + "}"


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's strconv.Quote: printable runes as they are, the rest escaped (\\xNN below 0x80, \\u or \\U above)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) < 0xE000:
            out.append("\\ufffd")  # a lone surrogate is not UTF-8: Go writes U+FFFD for it
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
