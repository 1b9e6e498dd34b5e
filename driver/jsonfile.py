"""Docker's json-file line format, both directions, byte-compatible with dockerd 20.10.

Encoding follows moby v20.10.24 `daemon/logger/jsonfilelog/jsonfilelog.go (marshalMessage)` and
`jsonlog/jsonlogbytes.go (MarshalJSONBuf, ffjsonWriteJSONBytesAsString)`:

* keys in the order `log`, `stream`, `attrs`, `time`; `log` and `stream` are left out when empty, `attrs`
  when there are none; one object per line, ending in `\\n`;
* `log` is the line plus `\\n` unless it is a partial chunk that is not the last one;
* `log` and `stream` use ffjson's escaping: `"` and `\\` backslashed, `\\n` and `\\r` short, every other
  byte below 0x20 (tab included) and `<`, `>`, `&` as `\\u00XX`; U+2028/U+2029 as `\\u2028`/`\\u2029`;
  each byte that does not start a valid UTF-8 sequence (Go's `utf8.DecodeRune` returning size 1) as
  `\\ufffd`; DEL and valid non-ASCII text are copied as they are;
* `attrs` is Go's `json.Marshal` of a `map[string]string`, which escapes differently (see `encode_attrs`);
* `time` is Go's RFC3339Nano in UTC: trailing fractional zeros trimmed, no fraction at all when it is zero.

Pure code: no I/O.
"""

from __future__ import annotations

import calendar
import codecs
import json
import re
import time
from collections.abc import Iterable

from driver import speedups

# Whether encode_entries uses the C encoder for the common batch (driver/speedups.py); the code below is the reference.
_encode_lines = speedups.encode_lines
SPEEDUPS = _encode_lines is not None
_encode_frame_lines = speedups.encode_frame_lines

# An entry as frames.FrameDecoder produces it (docs/architecture.md, "Decoded entries").
Entry = tuple[str, int, bytes, bool, bool, str, int]

_NS = 1_000_000_000

# ---------------------------------------------------------------------------------------------------------
# `log` / `stream` escaping (ffjsonWriteJSONBytesAsString)

# Lines made only of these bytes are copied as they are: the fast path for almost every log line. (A
# fullmatch of the safe bytes runs about twice as fast on 100-byte lines as a search for unsafe ones.)
_COPY_AS_IS = re.compile(rb"[\x20\x21\x23-\x25\x27-\x3b\x3d\x3f-\x5b\x5d-\x7f]*")
_ASCII_SPECIAL_BYTES = bytes(range(0x20)) + b'"\\<>&'
_ASCII_ESCAPES: dict[bytes, bytes] = {bytes([b]): b"\\u%04x" % b for b in range(0x20)}
_ASCII_ESCAPES.update(
    {
        b'"': b'\\"',
        b"\\": b"\\\\",
        b"\n": b"\\n",
        b"\r": b"\\r",
        b"<": b"\\u003c",
        b">": b"\\u003e",
        b"&": b"\\u0026",
    }
)
_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029")
_GO_RUNE_ERROR = "logbridge.go-rune-error"


def _go_rune_error(exc: UnicodeError) -> tuple[str, int]:
    # Go's utf8.DecodeRune reports an invalid sequence as one bad byte and resumes at the next byte, so a
    # truncated 3-byte character gives two replacements. Python's "replace" would give one for the whole
    # maximal invalid prefix, hence this handler: one escaped replacement per byte, resume right after it.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\\ufffd", exc.start + 1


codecs.register_error(_GO_RUNE_ERROR, _go_rune_error)


def _ascii_escape(match: re.Match[bytes]) -> bytes:
    return _ASCII_ESCAPES[match[0]]


_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\n\r")
_CONTROL = re.compile(b"[" + re.escape(_CONTROL_BYTES) + b"]")


def escape_log(raw: bytes) -> bytes:
    """The JSON string body (no quotes) dockerd writes for `raw`."""
    out = raw
    # Deleting with translate is a cheaper test than a regex search for text with no ASCII specials.
    if len(raw.translate(None, _ASCII_SPECIAL_BYTES)) != len(raw):
        # One C-speed pass per common special (JSON logs are full of quotes) instead of a Python callback per
        # character; the backslash goes first so the escapes added after it are not doubled.
        out = (raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n").replace(b"\r", b"\\r")
               .replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026"))
        if len(out.translate(None, _CONTROL_BYTES)) != len(out):
            out = _CONTROL.sub(_ascii_escape, out)
    if out.isascii():
        return out
    # ASCII escaping first is safe: it only replaces ASCII bytes by ASCII bytes, which never changes where
    # the UTF-8 decoder finds an invalid byte.
    try:
        out.decode("utf-8")
    except UnicodeDecodeError:
        out = out.decode("utf-8", _GO_RUNE_ERROR).encode("utf-8")
    # Valid UTF-8 is self-synchronising, so a byte search cannot hit the middle of another character.
    if b"\xe2\x80" in out:
        for sep, escaped in _LINE_SEPARATORS:
            out = out.replace(sep, escaped)
    return out


# ---------------------------------------------------------------------------------------------------------
# `attrs`: Go 1.19 encoding/json (dockerd 20.10.24 is built with Go 1.19) of a map[string]string

_GO_JSON_SPECIAL = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_GO_JSON_ESCAPES: dict[str, str] = {chr(c): f"\\u{c:04x}" for c in range(0x20)}
_GO_JSON_ESCAPES.update(
    {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    | {c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}
)
# Only Go >= 1.22 writes \b and \f short; Go 1.19 writes \u0008 and \u000c like any other control.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_json_string(s: str) -> str:
    # A Go string cannot hold a surrogate: Go's JSON decoder turns a lone `\ud800` into U+FFFD, which
    # json.Marshal then writes as the raw character.
    s = _LONE_SURROGATE.sub("\ufffd", s)
    return '"' + _GO_JSON_SPECIAL.sub(lambda m: _GO_JSON_ESCAPES[m[0]], s) + '"'


def encode_attrs(attrs: dict[str, str] | None) -> bytes | None:
    """The `attrs` value json-file writes for these attributes, or None when there are none.

    Go's json.Marshal sorts map keys by their bytes; for valid UTF-8 that is code point order, which is
    what Python's str ordering is.
    """
    if not attrs:
        return None
    pairs = sorted((_LONE_SURROGATE.sub("\ufffd", k), v) for k, v in attrs.items())
    body = ",".join(_go_json_string(k) + ":" + _go_json_string(v) for k, v in pairs)
    return ("{" + body + "}").encode("utf-8")


# ---------------------------------------------------------------------------------------------------------
# time


def _second_prefix(sec: int) -> bytes:
    return b"%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(sec)[:6]


def format_time(time_nano: int) -> bytes:
    """Go's RFC3339Nano in UTC: `2026-11-26T13:49:13.41326034Z`, `2026-11-26T13:49:13Z`."""
    sec, ns = divmod(time_nano, _NS)
    # rstrip(".0") trims trailing zeros and, when all nine digits were zeros, the dot as well.
    return _second_prefix(sec) + (b".%09d" % ns).rstrip(b".0") + b"Z"


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))\Z", re.ASCII
)
# Seconds since the epoch for `YYYY-MM-DDTHH:MM:SS`, shared by all lines of the same second.
_prefix_seconds: dict[bytes, int] = {}
_PREFIX_CACHE_MAX = 4096


def parse_time(s: str | bytes) -> int:
    """Nanoseconds since the epoch for an RFC3339 time with any offset (`Z`, `+01:00`, ...).

    Digits beyond the ninth fractional one are dropped, as Go does. Raises ValueError otherwise.
    """
    text = s.decode("ascii") if isinstance(s, bytes) else s
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise ValueError(f"date out of range: {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"time of day out of range: {text!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m[9]:
        offset = int(m[10]) * 3600 + int(m[11]) * 60
        seconds -= offset if m[9] == "+" else -offset
    fraction = m[7] or ""
    return seconds * _NS + int((fraction[:9]).ljust(9, "0"))


def _second_of(prefix: bytes) -> int:
    """Seconds since the epoch for a UTC `YYYY-MM-DDTHH:MM:SS`, cached: every line of a second shares it."""
    seconds = _prefix_seconds.get(prefix)
    if seconds is None:
        seconds = parse_time(prefix + b"Z") // _NS
        if len(_prefix_seconds) >= _PREFIX_CACHE_MAX:
            _prefix_seconds.clear()
        _prefix_seconds[prefix] = seconds
    return seconds


# ---------------------------------------------------------------------------------------------------------
# encoding


def _entry_line(log: bytes, stream: bytes, attrs_json: bytes | None, stamp: bytes) -> bytes:
    """The general form, for what the fast path does not cover: empty `log`, empty or unusual `stream`."""
    fields = []
    if log:
        fields.append(b'"log":"' + escape_log(log) + b'"')
    if stream:
        fields.append(b'"stream":"' + escape_log(stream) + b'"')
    if attrs_json:
        fields.append(b'"attrs":' + attrs_json)
    fields.append(b'"time":"' + stamp + b'"')
    return b"{" + b",".join(fields) + b"}\n"


def encode_entries(entries: Iterable[Entry], attrs_json: bytes | None) -> list[bytes]:
    """One json-file line (ending in `\\n`) per entry, exactly as dockerd 20.10's json-file writes it.

    In C when the extension is there and the batch is a list it takes whole (it declines batches with an unusual
    source, an empty non-final chunk or an out-of-range time); otherwise `encode_entries_pure`.
    """
    if _encode_lines is not None and type(entries) is list:
        lines = _encode_lines(entries, attrs_json)
        if lines is not None:
            return lines
    return encode_entries_pure(entries, attrs_json)


def encode_frames(frames: bytes | memoryview, attrs_json: bytes | None) -> tuple[int, int, bool, bytes, tuple] | None:
    """json-file lines straight from journal frames, in C: (bytes used, frames taken, declined, the lines joined,
    (stdout lines, stdout bytes, stderr lines, stderr bytes)), or None without the extension.

    The lines are those ``encode_entries`` writes for what ``FrameDecoder`` decodes from ``frames[:used]``
    (tests/unit/test_jsonlog_frames_c.py). It stops before the first frame that is incomplete (declined False) or
    that the decoded way must read (declined True: garbage, an empty or unusual frame, an empty chunk that is not
    the last).
    """
    if _encode_frame_lines is None:
        return None
    return _encode_frame_lines(frames, attrs_json)


def encode_entries_pure(entries: Iterable[Entry], attrs_json: bytes | None) -> list[bytes]:
    """`encode_entries` in Python: the reference for the C encoder, and what runs without it.

    The hot path: one loop, no per-line function calls for the common case (stdout/stderr, text that
    needs no escaping), the `YYYY-MM-DDTHH:MM:SS` prefix computed once per second.
    """
    after_time = b'","attrs":' + attrs_json + b',"time":"' if attrs_json else b'","time":"'
    # What follows the escaped line up to the time, for a complete line (`\n` added) and for a partial one.
    after_log = {
        source: (
            b'\\n","stream":"' + source.encode() + after_time,
            b'","stream":"' + source.encode() + after_time,
        )
        for source in ("stdout", "stderr")
    }
    out: list[bytes] = []
    append = out.append
    copy_as_is = _COPY_AS_IS.fullmatch
    prev_sec = None
    prefix = b""
    for source, time_nano, line, partial, last, _partial_id, _ordinal in entries:
        sec, ns = divmod(time_nano, _NS)
        if sec != prev_sec:
            prev_sec = sec
            prefix = _second_prefix(sec)
        fraction = (b".%09d" % ns).rstrip(b".0")
        complete = not partial or last
        tails = after_log.get(source)
        if tails is None or not (line or complete):
            log = line + b"\n" if complete else line
            stream = source.encode("utf-8", "surrogateescape")
            append(_entry_line(log, stream, attrs_json, prefix + fraction + b"Z"))
            continue
        if copy_as_is(line) is None:
            line = escape_log(line)
        append(b'{"log":"%b%b%b%bZ"}\n' % (line, tails[0] if complete else tails[1], prefix, fraction))
    return out


# ---------------------------------------------------------------------------------------------------------
# decoding

_STRING_BODY = rb'[^"\\]*(?:\\.[^"\\]*)*'
# The exact shape MarshalJSONBuf produces, with a UTC time; anything else goes the generic (slower) way.
# attrs cannot contain `},"time":"` (its strings escape `"`, and `}` closes the flat object only at its
# end), so the lazy match stops at the right brace.
_LINE = re.compile(
    rb'\{(?:"log":"(' + _STRING_BODY + rb')",)?(?:"stream":"(' + _STRING_BODY + rb')",)?'
    rb'(?:"attrs":(\{.*?\}),)?"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z"\}\n?',
    re.DOTALL,
)


_STREAMS: dict[bytes | None, str] = {b"stdout": "stdout", b"stderr": "stderr", None: ""}
_FRACTION_SCALE = [10 ** (9 - digits) for digits in range(10)]


def _unescape(body: bytes) -> bytes:
    if b"\\" not in body:
        return body
    if body.endswith(b"\\n") and body.find(b"\\", 0, len(body) - 2) < 0:
        return body[:-2] + b"\n"
    return _text_bytes(json.loads('"' + body.decode("utf-8", "surrogateescape") + '"'))


def _text_bytes(text: str) -> bytes:
    # Text decoded with surrogateescape: raw bytes that were not UTF-8 come back exactly as stored.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A lone `\udXXX` escape from another writer: Go's decoder would read it as U+FFFD.
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def decode_line(raw: bytes) -> tuple[bytes, str, int, bytes | None]:
    """(log bytes as stored, stream, time_nano, raw attrs JSON or None) of one json-file line.

    `log` keeps its `\\n` when it has one. Raises ValueError for a line that is not a json-file entry.
    """
    m = _LINE.fullmatch(raw)
    if m is None:
        return _decode_line_generic(raw)
    log, stream, attrs, second, fraction = m.groups()
    time_nano = _second_of(second) * _NS
    if fraction:
        time_nano += int(fraction) * _FRACTION_SCALE[len(fraction)]
    text = _STREAMS.get(stream)
    if text is None:
        text = _unescape(stream).decode("utf-8", "surrogateescape")
    return _unescape(log) if log else b"", text, time_nano, attrs


def _decode_line_generic(raw: bytes) -> tuple[bytes, str, int, bytes | None]:
    # Any other JSON spelling of an entry (other key order, whitespace): slower, same result.
    try:
        obj = json.loads(raw.decode("utf-8", "surrogateescape"))
        log, stream, stamp = obj.get("log", ""), obj.get("stream", ""), obj["time"]
        attrs = obj.get("attrs")
        if not (isinstance(log, str) and isinstance(stream, str) and isinstance(stamp, str)):
            raise TypeError("log, stream and time must be strings")
        time_nano = parse_time(stamp)
        attrs_json = encode_attrs(attrs)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a json-file line: {raw[:200]!r}") from exc
    return _text_bytes(log), stream, time_nano, attrs_json
