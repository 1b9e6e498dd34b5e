"""driver/_speedups.c against the pure-Python code it replaces on the hot path, byte for byte.

The Python code is the reference: `jsonfile.encode_entries_pure` and `FrameDecoder(pure=True)`. Every test here
compares the C path with it on dockerd captures, on hypothesis inputs weighted towards the awkward cases (invalid
UTF-8, odd protobuf, garbage, torn frames) and on streams chunked the way the sinks read them.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import frames, jsonfile
from driver.frames import MAX_FRAME, FrameDecoder, encode_entry
from driver.jsonfile import encode_attrs, encode_entries_pure

from .test_jsonfile import ATTRS, ESCAPES, LONG, dockerd_chunks, entry, fixture_lines, go_escape

_speedups = pytest.importorskip("driver._speedups", reason="the C extension is not built (setup.py build_ext)")

REPO = Path(__file__).resolve().parents[2]
FIFO_SAMPLES = sorted((Path(__file__).parent / "data" / "fifo").glob("*.bin")) + sorted(
    (REPO.parent / "shared" / "docs" / "samples").glob("**/fifo-*.bin")
)
ATTRS_JSON = encode_attrs(ATTRS)

# ---------------------------------------------------------------------------------------------------------
# inputs

# Byte strings made mostly of what escaping and UTF-8 validation have to get right.
AWKWARD = [
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\x9f\xbf",  # surrogates; the last valid one before them
    b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",  # > U+10FFFF, max
    b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xe2\x80\xaa", b"\xe2\x80", b"\xe2",  # separators, their neighbours, torn
    b"\xc3\xa9", b"\xc3", b"\xf0\x9f\x9a\x80", b"\xf0\x9f\x9a", b"\xf0\x9f", b"\xef\xbf\xbd", b"\xef\xbf\xbf",
    b"\x80", b"\xbf", b"\xfe", b"\xff",
    b'"', b"\\", b"<", b">", b"&", b"\n", b"\r", b"\t", b"\x00", b"\x08", b"\x0c", b"\x1b", b"\x1f", b"\x7f",
    b" ", b"a", b"0123456789abcdef",
]
lines_st = st.lists(
    st.one_of(st.sampled_from(AWKWARD), st.binary(max_size=6), st.text(max_size=4).map(str.encode)), max_size=24
).map(b"".join) | st.binary(max_size=64)

NS = 10**9
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
times_st = st.one_of(
    INT64,
    st.integers(min_value=-10 * NS, max_value=10 * NS),
    st.sampled_from([0, -1, 1, NS, -NS, NS - 1, -(NS - 1), 2**63 - 1, -(2**63)]),
    st.integers(min_value=-9 * NS, max_value=9 * NS).map(lambda s: s * NS),  # whole seconds
    st.tuples(st.integers(min_value=-9 * NS, max_value=9 * NS), st.integers(1, 9), st.integers(1, 9)).map(
        lambda t: t[0] * NS + t[2] * 10 ** (9 - t[1])  # one significant fractional digit, then zeros
    ),
    st.integers(min_value=1_764_165_000 * NS, max_value=1_764_165_010 * NS),  # many lines in the same second
)
entries_st = st.tuples(
    st.sampled_from(["stdout", "stderr"]), times_st, lines_st, st.booleans(), st.booleans(),
    st.text(max_size=8), st.integers(min_value=-(2**31), max_value=2**31 - 1),
).map(lambda e: e if e[3] else (e[0], e[1], e[2], False, False, "", 0))
attrs_st = st.sampled_from([None, b"", ATTRS_JSON, b'{"tag":"x"}'])


def c_lines(entries: list[tuple], attrs_json: bytes | None) -> list[bytes]:
    lines = _speedups.encode_lines(entries, attrs_json)
    assert lines is not None, "the C encoder declined an ordinary batch"
    return lines


# ---------------------------------------------------------------------------------------------------------
# encode_lines


def test_switches():
    assert frames.SPEEDUPS == jsonfile.SPEEDUPS == (os.environ.get("LOGBRIDGE_PURE", "") in ("", "0"))
    assert (FrameDecoder()._c_decode is not None) == frames.SPEEDUPS
    assert FrameDecoder(pure=True)._c_decode is None


def test_encode_dockerd_fixtures():
    """The lines dockerd itself wrote, from the C encoder directly (not only through encode_entries)."""
    cases = [
        ("escapes.log", [(line, False, False) for line in ESCAPES] + [(b"tail-no-newline", True, False)], None),
        ("long.log.gz", [c for line in LONG for c in dockerd_chunks(line)], None),
        ("streams.log", [(b"out", False, False), (b"err", False, False)], None),
        ("tty.log", [(b"tty\r", False, False)], None),
        ("attrs.log", [(b"hi", False, False)], ATTRS_JSON),
    ]
    for name, inputs, attrs_json in cases:
        expected = fixture_lines(name)
        entries = []
        for want, (line, partial, last) in zip(expected, inputs, strict=True):
            _, stream, t, _ = jsonfile.decode_line(want)
            entries.append(entry(line, t=t, source=stream, partial=partial, last=last))
        assert c_lines(entries, attrs_json) == expected == encode_entries_pure(entries, attrs_json), name


@given(st.lists(entries_st, max_size=30), attrs_st)
def test_encode_matches_python(entries, attrs_json):
    # An empty chunk that is not the last one of its line is left to Python (it has no "log" key).
    expected = encode_entries_pure(entries, attrs_json)
    got = _speedups.encode_lines(entries, attrs_json)
    if any(e[3] and not e[4] and not e[2] for e in entries):
        assert got is None
    else:
        assert got == expected
    assert jsonfile.encode_entries(entries, attrs_json) == expected


@given(lines_st)
def test_escaping_matches_go_reference(line):
    [got] = c_lines([("stdout", 0, line, False, False, "", 0)], None)
    assert got == b'{"log":"' + go_escape(line) + b'\\n","stream":"stdout","time":"1970-01-01T00:00:00Z"}\n'


@pytest.mark.parametrize(
    "odd",
    [
        ("", 5, b"x", False, False, "", 0),  # no stream key
        ("other", 5, b"x", False, False, "", 0),
        ("stdout", 5, b"", True, False, "id", 1),  # empty non-final chunk: no log key
        ("stdout", 2**63, b"x", False, False, "", 0),  # beyond int64
        ("stdout", 5, b"x", 1, 0, "", 0),  # flags that are not bools
        ("stdout", 5, bytearray(b"x"), False, False, "", 0),
        ["stdout", 5, b"x", False, False, "", 0],  # not a tuple
    ],
)
def test_encode_declines_what_it_does_not_cover(odd):
    batch = [("stdout", 1, b"a", False, False, "", 0), odd]
    assert _speedups.encode_lines(batch, None) is None
    try:
        expected = encode_entries_pure(batch, None)
    except Exception as exc:  # noqa: BLE001 - whatever Python does, the dispatcher must do the same
        with pytest.raises(type(exc)):
            jsonfile.encode_entries(batch, None)
    else:
        assert jsonfile.encode_entries(batch, None) == expected


def test_encode_takes_only_lists():
    batch = (("stdout", 1, b"a", False, False, "", 0),)
    assert _speedups.encode_lines(batch, None) is None
    assert jsonfile.encode_entries(iter(batch), None) == encode_entries_pure(batch, None)


# ---------------------------------------------------------------------------------------------------------
# decode_frames


def varint(v: int, pad: int = 0) -> bytes:
    """Protobuf varint of v (two's complement for negatives); pad > 0 adds that many non-canonical bytes."""
    v &= 2**64 - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    for _ in range(pad):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def field(num: int, wire: int, value: bytes | int, pad: int = 0) -> bytes:
    body = varint(value, pad) if wire == 0 else varint(len(value), pad) + value
    return varint(num << 3 | wire) + body


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


pad_st = st.sampled_from([0, 0, 0, 0, 1, 9])
text_st = st.one_of(st.text(max_size=6).map(str.encode), st.sampled_from(AWKWARD))
meta_field_st = st.one_of(
    st.builds(field, st.just(1), st.just(0), st.sampled_from([0, 1, 2, 2**64 - 1]), pad_st),
    st.builds(field, st.just(2), st.just(2), text_st, pad_st),
    st.builds(field, st.just(3), st.just(0), st.one_of(INT64, st.integers(0, 2**64 - 1)), pad_st),
    st.builds(field, st.sampled_from([4, 15, 16]), st.just(0), st.integers(0, 300)),  # unknown
    st.builds(field, st.just(1), st.just(2), st.binary(max_size=2)),  # wrong wire type
)
payload_field_st = st.one_of(
    st.builds(field, st.just(1), st.just(2), st.sampled_from([b"stdout", b"stderr"]), pad_st),
    st.builds(field, st.just(1), st.just(2), st.sampled_from([b"", b"stdin", b"stdou", b"\xffstdout", b"STDOUT"])),
    st.builds(field, st.just(2), st.just(0), st.one_of(INT64, times_st), pad_st),
    st.builds(field, st.just(3), st.just(2), lines_st, pad_st),
    st.builds(field, st.just(4), st.just(0), st.sampled_from([0, 1, 2, 2**63, 2**64 - 1]), pad_st),
    st.builds(field, st.just(5), st.just(2), st.lists(meta_field_st, max_size=4).map(b"".join), pad_st),
    st.builds(field, st.sampled_from([6, 7, 16, 100]), st.just(0), st.integers(0, 300)),  # unknown
    st.builds(field, st.sampled_from([6, 7, 16, 100]), st.just(2), st.binary(max_size=3)),
    st.sampled_from([1, 2, 3, 5]).map(lambda n: varint(n << 3 | 5) + b"\0\0\0\0"),  # fixed32 wire type
    st.sampled_from([b"\x8a\x00\x06stdout", b"\x00", b"\x0a", b"\x10\xff"]),  # padded tag, field 0, truncated
    st.builds(field, st.just(2), st.just(2), st.binary(max_size=3)),  # wrong wire type
)
# A frame built field by field: mostly dockerd's own, often with something odd in it.
raw_frame_st = st.lists(payload_field_st, max_size=7).map(b"".join).map(frame)
dockerd_frame_st = entries_st.map(encode_entry)
garbage_st = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", struct.pack(">I", MAX_FRAME + 1), b"\x0a\x06stdout",
                     b"\x00\x00\x00\x0c\x0a\x06stderr", b"\x00\x00\x10\x00 junk"]),
)
piece_st = st.one_of(
    dockerd_frame_st, dockerd_frame_st, raw_frame_st, garbage_st,
    st.tuples(dockerd_frame_st, st.integers(1, 30)).map(lambda t: t[0][: t[1]]),  # torn
    st.tuples(raw_frame_st, st.integers(1, 30)).map(lambda t: t[0][: t[1]]),
    st.just(frame(b"")),
)
stream_st = st.lists(piece_st, max_size=25).map(b"".join)


def decode_in_pieces(dec: FrameDecoder, stream: bytes, cuts: list[int], final: bool) -> list:
    """Feed `stream` as the sinks do: the unused tail goes again with the next bytes; returns each call's result."""
    results = []
    pending = b""
    prev = 0
    for cut in [*cuts, len(stream)]:
        pending += stream[prev:cut]
        prev = cut
        offsets: list[int] = []
        entries, used = dec.decode(pending, final=final and cut == len(stream), offsets=offsets)
        results.append((entries, offsets, used, dec.counts, dec.skipped_bytes, dec.garbled, dec._lost))
        pending = pending[used:]
    return results


def assert_same_decoding(stream: bytes, cuts: list[int] = (), final: bool = True) -> list:
    cuts = sorted(set(cuts))
    pure = decode_in_pieces(FrameDecoder(pure=True), stream, cuts, final)
    fast_decoder = FrameDecoder()
    assert fast_decoder._c_decode is not None or not frames.SPEEDUPS
    fast_decoder._c_decode = _speedups.decode_frames  # C even when LOGBRIDGE_PURE=1 switched it off
    fast = decode_in_pieces(fast_decoder, stream, cuts, final)
    assert fast == pure
    return fast


@pytest.mark.parametrize("path", FIFO_SAMPLES, ids=lambda p: p.name)
def test_decode_dockerd_captures(path):
    stream = path.read_bytes()
    [(entries, _, used, *_)] = assert_same_decoding(stream)
    got, pos, _ = _speedups.decode_frames(stream, 0)
    assert got == entries and pos == used == len(stream), "C left a frame dockerd wrote to Python"


@pytest.mark.parametrize("path", FIFO_SAMPLES, ids=lambda p: p.name)
def test_decode_dockerd_captures_byte_by_byte(path):
    stream = path.read_bytes()
    assert_same_decoding(stream, list(range(1, len(stream), max(1, len(stream) // 300))), final=False)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(stream_st, st.booleans(), st.randoms(use_true_random=False))
def test_decode_matches_python(stream, final, rnd: random.Random):
    assert_same_decoding(stream, final=final)
    cuts = [rnd.randrange(len(stream) + 1) for _ in range(rnd.randrange(6))]
    assert_same_decoding(stream, cuts, final=final)


@given(st.lists(st.tuples(entries_st, st.sampled_from([b"", b"", b"\x00\x00\x00\x00", b"junk\x0a\x06stdout"])),
                max_size=12))
def test_decode_tells_where_each_entry_starts(pieces):
    """The offsets name each entry's own frame (record ids are built from them), garbage and empty frames between
    them or not, in C and in Python alike (assert_same_decoding compares them)."""
    stream = b""
    starts = []
    for one, garbage in pieces:
        stream += garbage
        starts.append(len(stream))
        stream += encode_entry(one)
    [(entries, offsets, *_)] = assert_same_decoding(stream)
    assert entries == [e for e, _ in pieces]
    assert offsets == starts
    got, _, _ = _speedups.decode_frames(stream, 0)
    assert _speedups.decode_frames(stream, 0, None)[0] == got  # None: no offsets, the plain hot path
    with pytest.raises(TypeError):
        _speedups.decode_frames(stream, 0, ())


@given(st.lists(entries_st, max_size=20))
def test_decode_takes_every_frame_dockerd_writes(entries):
    stream = b"".join(encode_entry(e) for e in entries)
    got, pos, counts = _speedups.decode_frames(stream, 0)
    assert got == entries and pos == len(stream)
    out = [e for e in entries if e[0] == "stdout"]
    err = [e for e in entries if e[0] == "stderr"]
    assert counts == (len(out), sum(len(e[2]) for e in out), len(err), sum(len(e[2]) for e in err))


def test_decode_field_details():
    """Protobuf rules C must follow where it takes a frame: a later field wins, field 5 merges, varint widths."""
    meta = field(5, 2, field(1, 0, 1) + field(2, 2, "é".encode()) + field(3, 0, 2**32 + 7))
    cases = [
        field(3, 2, b"x") + field(1, 2, b"stderr") + field(2, 0, -5) + field(4, 0, 1) + meta,  # any order
        field(1, 2, b"stdout") + field(1, 2, b"stderr") + field(3, 2, b"a") + field(3, 2, b"b"),  # later wins
        field(1, 2, b"stdout") + field(4, 0, 1) + meta + field(5, 2, field(3, 0, 2**31)),  # merged sub-message
        field(1, 2, b"stdout") + field(4, 0, 2**64 - 1) + field(5, 2, field(3, 0, -1)),  # 10-byte varints
        field(1, 2, b"stdout") + field(4, 0, 0) + meta,  # metadata without partial: ignored
    ]
    stream = b"".join(frame(p) for p in cases)
    got, pos, _ = _speedups.decode_frames(stream, 0)
    assert pos == len(stream)
    assert got == [
        ("stderr", -5, b"x", True, True, "é", 7),
        ("stderr", 0, b"b", False, False, "", 0),
        ("stdout", 0, b"", True, True, "é", -(2**31)),
        ("stdout", 0, b"", True, False, "", -1),
        ("stdout", 0, b"", False, False, "", 0),
    ]
    assert_same_decoding(stream)


@pytest.mark.parametrize(
    "payload",
    [
        field(1, 2, b"stdout") + field(6, 0, 1),  # unknown field
        field(1, 2, b"stdout") + field(3, 0, 1),  # wrong wire type
        field(1, 2, b"stdout") + field(2, 0, 5, pad=1),  # non-canonical varint
        field(1, 2, b"stdout") + field(5, 2, field(2, 2, b"\xed\xa0\x80")),  # id not UTF-8: upb rejects it
        field(1, 2, b"stdin"),
        field(3, 2, b"no source"),
        field(1, 2, b"stdout") + b"\x1a\x05ab",  # truncated
        b"",
    ],
)
def test_decode_leaves_the_unusual_to_python(payload):
    stream = frame(payload) + encode_entry(("stdout", 1, b"next", False, False, "", 0))
    got, pos, counts = _speedups.decode_frames(stream, 0)
    assert (got, pos, counts) == ([], 0, (0, 0, 0, 0))
    assert_same_decoding(stream)


# ---------------------------------------------------------------------------------------------------------
# the other unit tests, in the other mode


def test_frame_and_jsonfile_tests_pass_in_the_other_mode():
    """This run covers one mode (with or without LOGBRIDGE_PURE=1); the codec tests run again in the other."""
    env = dict(os.environ, LOGBRIDGE_PURE="0" if os.environ.get("LOGBRIDGE_PURE", "") not in ("", "0") else "1")
    tests = [str(Path(__file__).parent / name) for name in ("test_frames.py", "test_jsonfile.py", "test_journal.py")]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
