"""driver.jsonfile against bytes dockerd 20.10.24 wrote (tests/unit/data/jsonfile) and moby's rules."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import jsonfile
from driver.jsonfile import decode_line, encode_attrs, encode_entries, format_time, parse_time

DATA = Path(__file__).parent / "data" / "jsonfile"
T0 = parse_time("2026-11-26T13:49:51.97266558Z")

# The inputs behind the fixture files (see data/jsonfile/README.md).
ESCAPES = [
    b'a\tb<>&"\\ \x01\xff end',
    bytes(range(0, 10)) + bytes(range(11, 32)) + b"\x7f",
    b"cr at end\r",
    "U+2028:\u2028 U+2029:\u2029 \u00e9 \U0001f680 \u03c8".encode(),
    b"valid fffd:\xef\xbf\xbd",
    b"trunc2:\xc3 trunc3:\xe2\x82 trunc4:\xf0\x9f\x9a lone:\x80\xbf overlong:\xc0\xaf surr:\xed\xa0\x80"
    b" big:\xf4\x90\x80\x80 ff:\xff",
    b"",
]
LONG = [b"x" * 40000, b"a" * 16382 + "\u20ac".encode() + b"tail", b"b" * 16384]
ATTRS = {
    "plain": "v",
    "ctl": "tab\there\bbs\fff",
    "html": "<b>&amp;",
    "q": 'quote"back\\',
    "seps": "ls\u2028ps\u2029",
    "uni": "\u00e9\U0001f680",
    "del": "x\x7fy",
    "Zcap": "first",
    "E1": "a=b",
    "E2": "new\nline",
    "tag": "attrs/<t>",
}


def entry(line: bytes, t: int = T0, source: str = "stdout", partial: bool = False, last: bool = False):
    return (source, t, line, partial, last, "id" if partial else "", 1 if partial else 0)


def one(line: bytes, **kw) -> bytes:
    return encode_entries([entry(line, **kw)], None)[0]


def fixture_lines(name: str) -> list[bytes]:
    path = DATA / name
    data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    return data.splitlines(keepends=True)


def dockerd_chunks(line: bytes) -> list[tuple[bytes, bool, bool]]:
    """(chunk, partial, last) as dockerd's copier cuts a line that ended in `\\n` (16 KiB buffer)."""
    if len(line) < 16384:
        return [(line, False, False)]
    chunks = [line[i : i + 16384] for i in range(0, len(line), 16384)]
    if len(line) % 16384 == 0:
        chunks.append(b"")
    return [(c, True, i == len(chunks) - 1) for i, c in enumerate(chunks)]


def reencode(expected: list[bytes], inputs: list[tuple[bytes, bool, bool]], attrs: bytes | None = None):
    """Our bytes for `inputs`, with each entry's stream and time taken from the expected line."""
    assert len(expected) == len(inputs)
    entries = []
    for want, (line, partial, last) in zip(expected, inputs, strict=True):
        _, stream, t, _ = decode_line(want)
        entries.append(entry(line, t=t, source=stream, partial=partial, last=last))
    return encode_entries(entries, attrs)


# --- exact bytes from a real dockerd ------------------------------------------------------------------


def test_protocol_doc_line():
    attrs = encode_attrs({"FOO": "bar", "a": "1", "tag": "rhelper-643217677/sha256:3859d"})
    t = parse_time("2026-11-26T13:49:13.413260348Z")
    assert encode_entries([entry(b'a\tb<>&"\\ \x01\xff end', t=t)], attrs) == [
        rb'{"log":"a\u0009b\u003c\u003e\u0026\"\\ \u0001\ufffd end\n","stream":"stdout","attrs":{"FOO":"bar",'
        rb'"a":"1","tag":"rhelper-643217677/sha256:3859d"},"time":"2026-11-26T13:49:13.413260348Z"}' + b"\n"
    ]


def test_dockerd_escapes():
    expected = fixture_lines("escapes.log")
    inputs = [(line, False, False) for line in ESCAPES] + [(b"tail-no-newline", True, False)]
    assert reencode(expected, inputs) == expected


def test_dockerd_long_lines_cut_at_16k():
    expected = fixture_lines("long.log.gz")
    inputs = [chunk for line in LONG for chunk in dockerd_chunks(line)]
    assert [len(c) for c, _, _ in inputs] == [16384, 16384, 7232, 16384, 5, 16384, 0]
    assert reencode(expected, inputs) == expected


def test_dockerd_streams_and_tty():
    assert reencode(fixture_lines("streams.log"), [(b"out", False, False), (b"err", False, False)]) == (
        fixture_lines("streams.log")
    )
    assert reencode(fixture_lines("tty.log"), [(b"tty\r", False, False)]) == fixture_lines("tty.log")


def test_dockerd_attrs():
    expected = fixture_lines("attrs.log")
    assert decode_line(expected[0])[3] == encode_attrs(ATTRS)
    assert reencode(expected, [(b"hi", False, False)], encode_attrs(ATTRS)) == expected


# --- one rule each -------------------------------------------------------------------------------------


def test_complete_line_gets_newline():
    assert one(b"hello") == b'{"log":"hello\\n","stream":"stdout","time":"2026-11-26T13:49:51.97266558Z"}\n'


def test_html_characters():
    assert one(b"<a>&") == one(b"x").replace(b'"x\\n"', rb'"\u003ca\u003e\u0026\n"')


def test_quote_and_backslash():
    assert one(b'"\\') == one(b"x").replace(b'"x\\n"', rb'"\"\\\n"')


def test_tab_is_unicode_escape():
    assert one(b"\t") == one(b"x").replace(b'"x\\n"', rb'"\u0009\n"')


def test_cr_and_lf_are_short():
    assert one(b"\r\n") == one(b"x").replace(b'"x\\n"', rb'"\r\n\n"')


def test_control_bytes():
    assert one(b"\x00\x08\x0c\x1b\x1f") == one(b"x").replace(b'"x\\n"', rb'"\u0000\u0008\u000c\u001b\u001f\n"')


def test_del_and_valid_utf8_copied():
    assert one("\x7f\u00e9\U0001f680\ufffd".encode()) == one(b"x").replace(
        b'"x\\n"', b'"' + "\x7f\u00e9\U0001f680\ufffd".encode() + b'\\n"'
    )


def test_line_separators():
    assert one("\u2028\u2029".encode()) == one(b"x").replace(b'"x\\n"', rb'"\u2028\u2029\n"')


def test_invalid_utf8_one_replacement_per_byte():
    # Python's errors="replace" would give one U+FFFD for each of the truncated sequences.
    assert one(b"\xe2\x82|\xf0\x9f\x9a|\xff") == one(b"x").replace(
        b'"x\\n"', rb'"\ufffd\ufffd|\ufffd\ufffd\ufffd|\ufffd\n"'
    )


def test_character_split_at_partial_boundary():
    first, second = b"a" * 16382 + b"\xe2\x82", b"\xac rest"
    lines = encode_entries([entry(first, partial=True), entry(second, partial=True, last=True)], None)
    assert lines[0].startswith(b'{"log":"' + b"a" * 16382 + rb'\ufffd\ufffd","stream"')
    assert lines[1].startswith(rb'{"log":"\ufffd rest\n","stream"')


def test_40000_byte_line_as_three_partials():
    chunks = dockerd_chunks(b"z" * 40000)
    lines = encode_entries([entry(c, partial=p, last=last) for c, p, last in chunks], None)
    logs = [decode_line(line)[0] for line in lines]
    assert [len(log) for log in logs] == [16384, 16384, 7233]
    assert logs[2].endswith(b"z\n")


def test_empty_last_chunk_is_a_newline():
    assert one(b"", partial=True, last=True) == one(b"x").replace(b'"x\\n"', b'"\\n"')


def test_empty_log_is_omitted():
    assert one(b"", partial=True) == b'{"stream":"stdout","time":"2026-11-26T13:49:51.97266558Z"}\n'


def test_partial_not_last_has_no_newline():
    assert one(b"abc", partial=True) == one(b"x").replace(b'"x\\n"', b'"abc"')


def test_empty_and_unusual_stream():
    assert one(b"a", source="") == b'{"log":"a\\n","time":"2026-11-26T13:49:51.97266558Z"}\n'
    assert one(b"a", source="o<t") == one(b"a").replace(b'"stdout"', rb'"o\u003ct"')


def test_attrs_between_stream_and_time():
    attrs = encode_attrs({"b": "2", "a": "1"})
    assert attrs == b'{"a":"1","b":"2"}'
    assert encode_entries([entry(b"x", source="stderr")], attrs) == [
        b'{"log":"x\\n","stream":"stderr","attrs":{"a":"1","b":"2"},"time":"2026-11-26T13:49:51.97266558Z"}\n'
    ]


def test_attrs_go_json_escaping():
    # encoding/json (Go 1.19): \t \n \r short, \b \f as \u00XX, HTML characters and U+2028/9 escaped.
    assert encode_attrs({"k<": '\t\n\r\b\f\x01<>&\u2028\u2029"\\\x7f\u00e9'}) == (
        rb'{"k\u003c":"\t\n\r\u0008\u000c\u0001\u003c\u003e\u0026\u2028\u2029\"\\' + "\x7f\u00e9".encode() + b'"}'
    )


def test_attrs_sorted_by_code_point_and_surrogates_replaced():
    assert encode_attrs({"\u00e9": "", "Z": "", "a": "\ud800"}) == '{"Z":"","a":"\ufffd","\u00e9":""}'.encode()


def test_no_attrs():
    assert encode_attrs(None) is None
    assert encode_attrs({}) is None


@pytest.mark.parametrize(
    ("time_nano", "text"),
    [
        (T0, b"2026-11-26T13:49:51.97266558Z"),
        (T0 // 10**9 * 10**9, b"2026-11-26T13:49:51Z"),
        (T0 // 10**9 * 10**9 + 1, b"2026-11-26T13:49:51.000000001Z"),
        (T0 // 10**9 * 10**9 + 500_000_000, b"2026-11-26T13:49:51.5Z"),
        (0, b"1970-01-01T00:00:00Z"),
        (-1, b"1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_time(time_nano: int, text: bytes):
    assert format_time(time_nano) == text
    assert parse_time(text) == time_nano
    assert one(b"x", t=time_nano).endswith(b'"time":"' + text + b'"}\n')


def test_second_prefix_changes_within_a_batch():
    lines = encode_entries([entry(b"a", t=T0), entry(b"b", t=T0 + 10**9)], None)
    assert [decode_line(line)[2] for line in lines] == [T0, T0 + 10**9]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T14:49:51.97266558+01:00",
        "2026-11-26T08:19:51.97266558-05:30",
        "2026-11-26t13:49:51.97266558z",
    ],
)
def test_parse_time_offsets(text: str):
    assert parse_time(text) == T0


def test_parse_time_details():
    assert parse_time("0001-01-01T00:00:00Z") == -62135596800 * 10**9  # Go's zero time
    # Go drops the digits past the ninth.
    assert parse_time(b"2026-11-26T13:49:51.9726655899Z") == T0 + 9 == parse_time("2026-11-26T13:49:51.972665589999Z")
    for bad in [
        "2026-11-26 13:49:51Z",
        "2026-02-30T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T13:49:51",
    ]:
        with pytest.raises(ValueError):
            parse_time(bad)


# --- decoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["escapes.log", "long.log.gz", "streams.log", "tty.log", "attrs.log"])
def test_decode_dockerd_files(name: str):
    for line in fixture_lines(name):
        log, stream, t, attrs = decode_line(line)
        obj = json.loads(line)
        assert log == obj.get("log", "").encode("utf-8")
        assert stream == obj["stream"]
        assert t == parse_time(obj["time"])
        assert (attrs is None) == ("attrs" not in obj)


def test_decode_other_spellings_and_garbage():
    assert decode_line(b'{"time":"2026-11-26T13:49:51.97266558Z", "log":"a\\n", "attrs":{"b":"1","a":"<"}}') == (
        b"a\n",
        "",
        T0,
        rb'{"a":"\u003c","b":"1"}',
    )
    offset = b'{"log":"a\\n","stream":"stdout","time":"2026-11-26T14:49:51.972665580123+01:00"}\n'
    assert decode_line(offset) == (b"a\n", "stdout", T0, None)
    for bad in [
        b"",
        b"{",
        b'{"log":"a"}',
        b'{"log":1,"time":"2026-11-26T13:49:51Z"}',
        b"[1]",
        b'{"time":"x"}',
    ]:
        with pytest.raises(ValueError):
            decode_line(bad)


def go_sanitize(raw: bytes) -> bytes:
    """What Go's json decoding of our output gives: each byte utf8.DecodeRune rejects becomes U+FFFD.

    Written independently of the codec error handler in driver.jsonfile, from the UTF-8 table in Go's
    unicode/utf8 (first byte ranges and the narrowed second-byte ranges after E0, ED, F0, F4).
    """
    out = bytearray()
    i = 0
    while i < len(raw):
        size = go_rune_size(raw, i)
        out += raw[i : i + size] if size else "\ufffd".encode()
        i += size or 1
    return bytes(out)


def go_rune_size(raw: bytes, i: int) -> int:
    b = raw[i]
    if b < 0x80:
        return 1
    second = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
    if 0xC2 <= b <= 0xDF:
        size = 2
    elif 0xE0 <= b <= 0xEF:
        size = 3
    elif 0xF0 <= b <= 0xF4:
        size = 4
    else:
        return 0
    lo, hi = second.get(b, (0x80, 0xBF))
    tail = raw[i + 1 : i + size]
    if len(tail) < size - 1 or not lo <= tail[0] <= hi or any(not 0x80 <= c <= 0xBF for c in tail[1:]):
        return 0
    return size


def go_escape(raw: bytes) -> bytes:
    """ffjsonWriteJSONBytesAsString, transcribed byte by byte: the slow reference for escape_log."""
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b < 0x80:
            if b >= 0x20 and b not in b'\\"<>&':
                out.append(b)
            elif b in b'\\"':
                out += b"\\" + bytes([b])
            elif b in b"\n\r":
                out += b"\\n" if b == 0x0A else b"\\r"
            else:
                out += b"\\u00%02x" % b
            i += 1
            continue
        size = go_rune_size(raw, i)
        if size == 0:
            out += b"\\ufffd"
            i += 1
        elif raw[i : i + size] in ("\u2028".encode(), "\u2029".encode()):
            out += b"\\u202" + raw[i + size - 1 : i + size].replace(b"\xa8", b"8").replace(b"\xa9", b"9")
            i += size
        else:
            out += raw[i : i + size]
            i += size
    return bytes(out)


# Bytes biased towards the interesting ones: ASCII specials, UTF-8 lead and continuation bytes, E2 80 A8.
interesting_bytes = st.lists(
    st.one_of(
        st.binary(max_size=4),
        st.sampled_from([b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xef\xbf\xbd", b"\xed\xa0\x80", b"\xf4\x90", b'<&\\"']),
        st.text(max_size=3).map(lambda s: s.encode("utf-8", "surrogatepass")),
    ),
    max_size=12,
).map(b"".join)


@given(interesting_bytes)
def test_escape_matches_go_reference(raw: bytes):
    assert jsonfile.escape_log(raw) == go_escape(raw)


@given(
    line=interesting_bytes,
    source=st.sampled_from(["stdout", "stderr", "", "other"]),
    t=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    partial=st.booleans(),
    last=st.booleans(),
    attrs=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_round_trip(line: bytes, source: str, t: int, partial: bool, last: bool, attrs: dict[str, str] | None):
    attrs_json = encode_attrs(attrs)
    [encoded] = encode_entries([entry(line, t=t, source=source, partial=partial, last=last)], attrs_json)
    log = go_sanitize(line) + (b"\n" if not partial or last else b"")
    assert decode_line(encoded) == (log, source, t, attrs_json)
    # An independent JSON decoder reads the same text.
    assert json.loads(encoded).get("log", "").encode() == log
