"""driver/_speedups.c `encode_records` against `RecordEncoder.encode_batch`'s Python loop, byte for byte.

The Python loop is the reference (`RecordEncoder(..., pure=True)`). The C function is compared with it on dockerd's
FIFO captures and on hypothesis entries weighted towards the edges: every str header size, invalid UTF-8, times
at and past the limits of EventTime, partial chunks, unicode static fields. What C returns must also decode to
`record_for`'s record, as the codec tests check for the Python loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.frames import FrameDecoder
from driver.outputs.forward import codec
from driver.outputs.forward.codec import NS, RecordEncoder, pack_entry, record_for

from .test_speedups import FIFO_SAMPLES, INT64, REPO, lines_st

_speedups = pytest.importorskip("driver._speedups", reason="the C extension is not built (setup.py build_ext)")
if not hasattr(_speedups, "encode_records"):
    pytest.skip("driver._speedups predates encode_records: rebuild it", allow_module_level=True)

CID = "c" * 64
STATIC = {"container_id": CID, "container_name": "/web"}
LIMIT = (codec._MAX_SECONDS + 1) * NS  # the first time past what EventTime carries: clamped from here on
TIME_FORMATS = ["event_time", "integer"]


def c_records(static: dict, entries: list, time_format: str = "event_time") -> list[bytes] | None:
    """encode_records itself, with the arguments RecordEncoder passes."""
    return _speedups.encode_records(entries, *RecordEncoder(static, time_format=time_format)._c_args)


def pure_records(static: dict, entries: list, time_format: str = "event_time") -> list[bytes]:
    return RecordEncoder(static, time_format=time_format, pure=True).encode_batch(entries)


def raw_unpack(data: bytes) -> object:
    """Unpack keeping str and bin apart, str as exact bytes (as test_forward_codec does)."""
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape", ext_hook=codec._ext_hook)


def assert_decodes_to_record_for(packed: list[bytes], entries: list, static: dict, time_format: str) -> None:
    """Each Entry is [time, record_for(entry)]: the same objects as the generic msgpack packing gives."""
    generic = [pack_entry(e[1], record_for(e, static), time_format) for e in entries]
    assert [raw_unpack(b) for b in packed] == [raw_unpack(b) for b in generic]
    for data in packed:
        assert msgpack.unpackb(data, raw=True, strict_map_key=False)  # every byte used, nothing left over


# ---------------------------------------------------------------------------------------------------------
# inputs

_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
# Extras that keep RecordEncoder on its fast path (an extra named source, log or partial_* leaves it).
_SHADOWING = codec._PARTIAL_KEYS | {"source", "log"}
static_st = st.builds(
    lambda cid, name, extras: {"container_id": cid, "container_name": name, **extras},
    st.sampled_from([CID, ""]) | _text,
    st.sampled_from(["/web", "/caf\u00e9-\U0001f680"]) | _text,
    st.dictionaries(_text.filter(lambda k: k not in _SHADOWING), _text, max_size=5)
    | st.sampled_from([{}, {"com.example.team": "paiements \u00e9t\u00e9", "tag": "\u65e5\u672c"}]),
)
# Every str header: fixstr, str8, str16, str32 (from 65536 bytes), and their edges.
sized_line_st = st.one_of(
    st.sampled_from([0, 1, 31, 32, 255, 256, 65535, 65536, 70_000]),
    st.integers(0, 70_000),
).map(lambda n: (bytes(range(256)) * (n // 256 + 1))[:n])  # holds invalid UTF-8 from 128 bytes on
times_st = st.one_of(
    INT64,
    st.sampled_from([0, -1, 1, NS - 1, NS, -NS, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT - NS, LIMIT + NS,
                     (codec._MAX_SECONDS - 1) * NS, 2**32 * NS, 2**63 - 1, -(2**63)]),
    st.integers(LIMIT - 3 * NS, LIMIT + 3 * NS),
    st.integers(1_764_165_000 * NS, 1_764_165_010 * NS),
    st.integers(-(2**80), 2**80),  # beyond int64 too: clamped as well
)
ordinals_st = st.one_of(st.integers(1, 100), st.integers(-(2**31), 2**31 - 1), INT64)
entry_st = st.tuples(
    st.sampled_from(["stdout", "stderr"]),
    times_st,
    lines_st | sized_line_st,
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", "pid-1", "f" * 64, "\u00e9\U0001f680"]) | _text,
    ordinals_st,
)
# As frames.FrameDecoder makes them (no partial metadata on a complete line), or not: both loops ignore it.
decoded_entry_st = entry_st.map(lambda e: e if e[3] else (e[0], e[1], e[2], False, False, "", 0)) | entry_st


# ---------------------------------------------------------------------------------------------------------
# the switch


def test_switches():
    assert codec.SPEEDUPS == (os.environ.get("LOGBRIDGE_PURE", "") in ("", "0"))
    assert (RecordEncoder(STATIC)._c_encode is not None) == codec.SPEEDUPS
    assert RecordEncoder(STATIC, pure=True)._c_encode is None
    # An extra that shadows a per-record key changes the map: the generic packer, never C.
    assert RecordEncoder({**STATIC, "log": "x"})._c_encode is None


# ---------------------------------------------------------------------------------------------------------
# byte for byte


def test_exact_bytes_of_a_partial_chunk():
    [packed] = c_records({"container_id": "c", "container_name": "/n", "k": "v"},
                         [("stderr", 1_500_000_001, b"hi", True, False, "p1", 12)])
    assert packed == (
        b"\x92" + bytes.fromhex("d700 00000001 1dcd6501")
        + b"\x89" + b"\xaccontainer_id\xa1c" + b"\xaecontainer_name\xa2/n" + b"\xa6source\xa6stderr"
        + b"\xa3log\xa2hi" + b"\xa1k\xa1v"
        + b"\xafpartial_message\xa4true" + b"\xaapartial_id\xa2p1" + b"\xafpartial_ordinal\xa212"
        + b"\xacpartial_last\xa5false"
    )


@pytest.mark.parametrize("path", FIFO_SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("time_format", TIME_FORMATS)
def test_dockerd_captures(path, time_format):
    entries, used = FrameDecoder(pure=True).decode(path.read_bytes(), final=True)
    assert entries and used == path.stat().st_size
    for static in (STATIC, {**STATIC, "com.example.team": "\u00e9quipe", "env": "prod"}):
        got = c_records(static, entries, time_format)
        assert got is not None, "C declined a batch dockerd wrote"
        assert got == pure_records(static, entries, time_format)
        assert RecordEncoder(static, time_format=time_format).encode_batch(entries) == got
        assert_decodes_to_record_for(got, entries, static, time_format)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(static_st, st.lists(decoded_entry_st, max_size=12), st.sampled_from(TIME_FORMATS))
def test_matches_python(static, entries, time_format):
    expected = pure_records(static, entries, time_format)
    got = c_records(static, entries, time_format)
    assert got == expected
    assert RecordEncoder(static, time_format=time_format).encode_batch(entries) == expected
    assert_decodes_to_record_for(got, entries, static, time_format)


@settings(max_examples=50, deadline=None)
@given(static_st, st.lists(decoded_entry_st, max_size=6), st.sampled_from(TIME_FORMATS), st.booleans())
def test_record_ids_and_scrubbing_go_through_it_too(static, entries, time_format, scrub):
    """Both are done around the fast path (ids appended, lines scrubbed before), so C serves them as well."""
    kwargs = {"time_format": time_format, "record_id_key": "_id", "invalid_utf8": "replace" if scrub else "keep"}
    ids = [f"b-{i:x}" for i in range(len(entries))]
    fast = RecordEncoder(static, **kwargs).encode_batch(entries, ids)
    assert fast == RecordEncoder(static, pure=True, **kwargs).encode_batch(entries, ids)


def test_single_entries_and_iterables():
    entry = ("stdout", 1, b"x", False, False, "", 0)
    encoder = RecordEncoder(STATIC)
    expected = pure_records(STATIC, [entry, entry])
    assert encoder.encode(entry) == expected[0]  # a 1-tuple: taken by C
    assert _speedups.encode_records((entry,), *encoder._c_args) == expected[:1]
    assert encoder.encode_batch(iter([entry, entry])) == expected  # neither list nor tuple: Python
    assert _speedups.encode_records(iter([entry]), *encoder._c_args) is None
    assert _speedups.encode_records([], *encoder._c_args) == []

    class Batch(list):
        def __iter__(self):
            return iter(reversed(self))

    batch = Batch([entry, ("stderr", 2, b"y", False, False, "", 0)])
    assert _speedups.encode_records(batch, *encoder._c_args) is None  # a subclass may iterate its own way
    assert encoder.encode_batch(batch) == RecordEncoder(STATIC, pure=True).encode_batch(batch)


# ---------------------------------------------------------------------------------------------------------
# what C leaves to Python


class Str(str):
    pass


class Int(int):
    pass


@pytest.mark.parametrize(
    "odd",
    [
        ("stdin", 5, b"x", False, False, "", 0),  # a source of its own: a prefix C was not given
        ("", 5, b"x", False, False, "", 0),
        (Str("stdout"), 5, b"x", False, False, "", 0),
        ("stdout", 5.0, b"x", False, False, "", 0),
        ("stdout", True, b"x", False, False, "", 0),
        ("stdout", Int(5), b"x", False, False, "", 0),
        ("stdout", 5, bytearray(b"x"), False, False, "", 0),
        ("stdout", 5, memoryview(b"x"), False, False, "", 0),
        ("stdout", 5, "x", False, False, "", 0),  # a str line: Python's join raises
        ("stdout", 5, b"x", 1, 0, "", 0),  # flags that are not bools
        ("stdout", 5, b"x", True, 1, "id", 1),
        ("stdout", 5, b"x", True, True, "\udcff", 1),  # surrogateescape packs it as the byte ff
        ("stdout", 5, b"x", True, True, "\ud800", 1),  # Python raises
        ("stdout", 5, b"x", True, True, b"id", 1),  # a bytes id: Python packs it as it is
        ("stdout", 5, b"x", True, True, "id", 2**63),  # ordinal beyond int64
        ("stdout", 5, b"x", True, True, "id", True),  # str(True) is "True"
        ("stdout", 5, b"x", False, False, ""),  # not 7 fields
        ["stdout", 5, b"x", False, False, "", 0],  # not a tuple
    ],
)
def test_declines_what_it_does_not_cover(odd):
    batch = [("stdout", 1, b"a", False, False, "", 0), odd]
    assert c_records(STATIC, batch) is None
    try:
        expected = pure_records(STATIC, batch)
    except Exception as exc:  # noqa: BLE001 - whatever Python does, the dispatcher must do the same
        with pytest.raises(type(exc)):
            RecordEncoder(STATIC).encode_batch(batch)
    else:
        assert RecordEncoder(STATIC).encode_batch(batch) == expected


def test_takes_what_python_ignores_on_a_complete_line():
    """`last`, the id and the ordinal of a complete line are not looked at, by either loop."""
    batch = [("stdout", 1, b"a", False, "no", b"\xff", 2**70)]
    assert c_records(STATIC, batch) == pure_records(STATIC, batch)


# ---------------------------------------------------------------------------------------------------------
# the codec tests, in the other mode


def test_codec_tests_pass_in_the_other_mode():
    """This run covers one mode (with or without LOGBRIDGE_PURE=1); the codec tests run again in the other."""
    env = dict(os.environ, LOGBRIDGE_PURE="0" if os.environ.get("LOGBRIDGE_PURE", "") not in ("", "0") else "1")
    tests = [str(Path(__file__).parent / "test_forward_codec.py")]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
