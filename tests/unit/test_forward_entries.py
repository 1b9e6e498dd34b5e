"""driver/outputs/forward/_entries.c against the Python code it stands in for, and its use by a count-only server.

The reference is `codec._check_entries(codec._unpack_entries(payload), strict=True)`: `count_entries` must give the
same number of entries wherever it succeeds and raise ValueError exactly where it raises ProtocolError. Inputs:
the plugin's own records, hand-written cases for every rule, every truncation of a valid payload, nesting around
msgpack's limit, random msgpack (array keys, odd ext types, wide encodings) and random bytes. Then the same
streams through `ServerProtocol(count_only=True)` and the decoding one, and `Receiver(sink=None)` end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import random
import struct
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from driver.outputs.forward import codec
from driver.outputs.forward.client import ForwardClient
from driver.outputs.forward.codec import EventTime, ProtocolError, RecordEncoder, ServerProtocol
from driver.receiver import Receiver, ReceiverConfig

_entries = pytest.importorskip("driver.outputs.forward._entries",
                               reason="the C extension is not built (setup.py build_ext)")
count_entries = _entries.count_entries

STATIC = {"container_id": "c" * 64, "container_name": "/web"}


def reference(payload: bytes) -> int | None:
    """The number of entries the Python path accepts, None where it raises ProtocolError (anything else fails)."""
    try:
        good, skipped = codec._check_entries(codec._unpack_entries(payload), strict=True)
    except ProtocolError:
        return None
    assert skipped == 0
    return len(good)


def fast(payload: bytes) -> int | None:
    try:
        return count_entries(payload)
    except ValueError:
        return None


def check(payload: bytes) -> int | None:
    expected = reference(payload)
    assert fast(payload) == expected, f"{len(payload)} bytes: {payload[:200]!r}"
    return expected


# ------------------------------------------------------------------------------------------------------ msgpack
# Builders that take already packed items, so that any key type and any header width can be written.


def p(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _head(n: int, fix: int, w16: int, width: int) -> bytes:
    if width == 0 and n < 16:
        return bytes((fix | n,))
    if width in (0, 16) and n < 0x10000:
        return bytes((w16,)) + n.to_bytes(2, "big")
    return bytes((w16 + 1,)) + n.to_bytes(4, "big")


def arr(*items: bytes, width: int = 0) -> bytes:
    return _head(len(items), 0x90, 0xDC, width) + b"".join(items)


def mp(*pairs: tuple[bytes, bytes], width: int = 0) -> bytes:
    return _head(len(pairs), 0x80, 0xDE, width) + b"".join(k + v for k, v in pairs)


def ext(code: int, data: bytes, form: str = "fix") -> bytes:
    n = len(data)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if form == "fix" and n in fixed:
        head = bytes((fixed[n],))
    elif form in ("fix", "8") and n < 256:
        head = b"\xc7" + bytes((n,))
    elif form in ("fix", "8", "16") and n < 0x10000:
        head = b"\xc8" + n.to_bytes(2, "big")
    else:
        head = b"\xc9" + n.to_bytes(4, "big")
    return head + struct.pack(">b", code) + data


def f32(x: float) -> bytes:
    return b"\xca" + struct.pack(">f", x)


def i64(x: int) -> bytes:
    return b"\xd3" + struct.pack(">q", x)


def timestamp(seconds: int, nanos: int, size: int) -> bytes:
    """msgpack's Timestamp extension (type -1) in its 4, 8 or 12 byte form, nanoseconds unchecked."""
    if size == 4:
        data = struct.pack(">I", seconds)
    elif size == 8:
        data = struct.pack(">Q", nanos << 34 | seconds)
    else:
        data = struct.pack(">Iq", nanos, seconds)
    return ext(-1, data)


EV = ext(0, struct.pack(">II", 1_700_000_000, 123))
REC = p({"log": "hello", "source": "stdout"})


def entry(time: bytes = EV, record: bytes = REC) -> bytes:
    return arr(time, record)


def v2(time: bytes = EV, metadata: bytes = b"\x80", record: bytes = REC) -> bytes:
    return arr(arr(time, metadata), record)


def with_key(key: bytes) -> bytes:
    return entry(record=mp((key, p("v")), (p("log"), p("x"))))


def with_value(value: bytes) -> bytes:
    return entry(record=mp((p("log"), p("x")), (p("v"), value)))


def nested(depth: int, leaf: bytes, kind: str = "array") -> bytes:
    """`depth` containers of one item each around `leaf`: arrays, or maps with the containers as values."""
    return (b"\x91" if kind == "array" else b"\x81\xa1k") * depth + leaf


# ----------------------------------------------------------------------------------------------- plugin payloads


def plugin_payload(n: int = 50, **encoder) -> bytes:
    entries = [
        ("stdout" if i % 3 else "stderr", 1_700_000_000_000_000_000 + i * 7919, f"line {i} ".encode() * (i % 5)
         + b"\xff\xc3", i % 4 == 1, i % 8 == 1, f"pid{i}", i)
        for i in range(n)
    ]
    ids = [f"c-{i * 40:x}" for i in range(len(entries))] if "record_id_key" in encoder else None
    return b"".join(RecordEncoder(STATIC, **encoder).encode_batch(entries, ids))


@pytest.mark.parametrize(
    "encoder",
    [{}, {"time_format": "integer"}, {"invalid_utf8": "replace"}, {"record_id_key": "_id"}],
    ids=["event_time", "integer_time", "replace_utf8", "record_id"],
)
def test_plugin_payloads_are_counted(encoder):
    payload = plugin_payload(**encoder)
    assert check(payload) == 50
    assert count_entries(bytearray(payload)) == 50 and count_entries(memoryview(payload)) == 50


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=300), max_size=30),
    extras=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    times=st.integers(min_value=-(10**18), max_value=2**64),
)
def test_plugin_payloads_with_any_lines(lines, extras, times):
    entries = [("stdout", times + i, line, False, False, "", 0) for i, line in enumerate(lines)]
    payload = b"".join(RecordEncoder({**STATIC, **extras}).encode_batch(entries))
    assert check(payload) == len(lines)


# ------------------------------------------------------------------------------------------------------- rules

CASES = {
    "empty payload": (b"", 0),
    "event time": (entry(), 1),
    "event time as ext 8": (entry(ext(0, b"\0" * 8, "8")), 1),
    "event time as ext 16": (entry(ext(0, b"\0" * 8, "16")), 1),
    "event time as ext 32": (entry(ext(0, b"\0" * 8, "32")), 1),
    "three entries": (entry() + v2() + entry(p(5)), 3),
    "entry as array 16": (arr(EV, REC, width=16), 1),
    "entry as array 32": (arr(EV, REC, width=32), 1),
    "record as map 32": (entry(record=mp((p("a"), p(1)), width=32)), 1),
    "empty record": (entry(record=b"\x80"), 1),
    # time
    "int time 0": (entry(p(0)), 1),
    "uint64 max time": (entry(b"\xcf" + b"\xff" * 8), 1),
    "int64-encoded 0 time": (entry(i64(0)), 1),
    "int64-encoded positive time": (entry(i64(2**63 - 1)), 1),
    "int8-encoded positive time": (entry(b"\xd0\x05"), 1),
    "negative fixint time": (entry(p(-1)), None),
    "negative int8 time": (entry(b"\xd0\x80"), None),
    "negative int64 time": (entry(i64(-(2**63))), None),
    "float64 time": (entry(p(1.5)), 1),
    "float32 time": (entry(f32(1.5)), 1),
    "nan time": (entry(p(float("nan"))), 1),
    "negative float time": (entry(p(-1.0)), 1),
    "nil time": (entry(b"\xc0"), None),
    "true time": (entry(b"\xc3"), None),
    "false time": (entry(b"\xc2"), None),
    "str time": (entry(p("1")), None),
    "bin time": (entry(p(b"1")), None),
    "map time": (entry(b"\x80"), None),
    "ext 0 with 7 bytes": (entry(ext(0, b"\0" * 7)), None),
    "ext 0 with 9 bytes": (entry(ext(0, b"\0" * 9)), None),
    "ext 0 with 16 bytes": (entry(ext(0, b"\0" * 16)), None),
    "ext 1 with 8 bytes": (entry(ext(1, b"\0" * 8)), None),
    "ext 127 with 8 bytes": (entry(ext(127, b"\0" * 8)), None),
    "msgpack timestamp time": (entry(timestamp(1, 0, 8)), None),
    # Fluent Bit v2: [[time, metadata], record]
    "v2": (v2(), 1),
    "v2 int time, metadata": (v2(p(7), p({"otlp": {"k": [1, 2]}})), 1),
    "v2 float32 time": (v2(f32(2.0)), 1),
    "v2 metadata as map 16": (v2(metadata=mp(width=16)), 1),
    "v2 metadata an array": (v2(metadata=b"\x90"), None),
    "v2 metadata nil": (v2(metadata=b"\xc0"), None),
    "v2 negative time": (v2(p(-5)), None),
    "v2 ext 1 time": (v2(ext(1, b"\0" * 8)), None),
    "v2 of one": (arr(arr(EV), REC), None),
    "v2 of three": (arr(arr(EV, b"\x80", b"\x80"), REC), None),
    "v2 inside v2": (arr(arr(arr(EV, b"\x80"), b"\x80"), REC), None),
    "v2 record an array": (v2(record=b"\x90"), None),
    # entry and record shape
    "entry of one": (arr(EV), None),
    "entry of three": (arr(EV, REC, REC), None),
    "empty array entry": (b"\x90", None),
    "map entry": (REC, None),
    "int entry": (p(1), None),
    "nil entry": (b"\xc0", None),
    "record an array": (entry(record=p(["log", "x"])), None),
    "record nil": (entry(record=b"\xc0"), None),
    "record a str": (entry(record=p("log")), None),
    "a bad entry after good ones": (entry() * 3 + entry(p(-1)), None),
    # map keys: msgpack-python fills a dict, so keys must be hashable
    "str key": (with_key(p("k")), 1),
    "bin key": (with_key(p(b"k")), 1),
    "int key": (with_key(p(1)), 1),
    "negative int key": (with_key(p(-100000)), 1),
    "float key": (with_key(p(0.5)), 1),
    "nan key": (with_key(p(float("nan"))), 1),
    "nil key": (with_key(b"\xc0"), 1),
    "bool key": (with_key(b"\xc3"), 1),
    "ext key": (with_key(ext(5, b"abc")), 1),
    "event time key": (with_key(EV), 1),
    "timestamp key": (with_key(timestamp(1, 0, 4)), 1),
    "duplicate keys": (entry(record=mp((p("a"), p(1)), (p("a"), p(2)), (p(1), p(3)), (b"\xc3", p(4)))), 1),
    "array key": (with_key(p([1])), None),
    "empty array key": (with_key(b"\x90"), None),
    "map key": (with_key(p({"a": 1})), None),
    "empty map key": (with_key(b"\x80"), None),
    "array key deep in a value": (with_value(arr(p(1), arr(p(2), mp((b"\x90", p(1)))))), None),
    "array key in metadata": (v2(metadata=mp((b"\x91\x01", p(1)))), None),
    "array value in a map under an array": (with_value(arr(mp((p("k"), b"\x90")))), 1),
    # scalars msgpack-python accepts or rejects anywhere
    "0xc1 in a record": (with_value(b"\xc1"), None),
    "0xc1 as a key": (with_key(b"\xc1"), None),
    "0xc1 as the time": (entry(b"\xc1"), None),
    "0xc1 alone": (b"\xc1", None),
    "0xc1 after an entry": (entry() + b"\xc1", None),
    "invalid utf-8 in str": (entry(record=mp((b"\xa2\xc3\x28", b"\xa3\xed\xa0\x80"), (b"\xa1\xff", b"\xa0"))), 1),
    "all int widths": (with_value(p([0, 255, 65535, 2**32 - 1, 2**64 - 1, -1, -128, -32768, -(2**31), -(2**63)])),
                       1),
    "bin 8 16 32": (with_value(arr(p(b"a"), b"\xc5\x00\x01a", b"\xc6\x00\x00\x00\x01a")), 1),
    "str 8 16 32": (with_value(arr(b"\xd9\x01a", b"\xda\x00\x01a", b"\xdb\x00\x00\x00\x01a")), 1),
    "empty str bin ext": (with_value(arr(b"\xa0", b"\xc4\x00", b"\xc7\x00\x05")), 1),
    "ext 127 value": (with_value(ext(127, b"x" * 3)), 1),
    "ext 0 of 0 bytes": (with_value(b"\xc7\x00\x00"), 1),
    "ext -2 value": (with_value(ext(-2, b"x")), None),
    "ext -128 value": (with_value(ext(-128, b"x" * 4)), None),
    "ext -1 of 0 bytes": (with_value(b"\xc7\x00\xff"), None),
    "timestamp 4": (with_value(timestamp(2**32 - 1, 0, 4)), 1),
    "timestamp 8": (with_value(timestamp(2**34 - 1, 999_999_999, 8)), 1),
    "timestamp 8 with 10**9 ns": (with_value(timestamp(1, 10**9, 8)), None),
    "timestamp 8 with 2**30-1 ns": (with_value(timestamp(1, 2**30 - 1, 8)), None),
    "timestamp 12": (with_value(timestamp(-(2**63), 999_999_999, 12)), 1),
    "timestamp 12 with 10**9 ns": (with_value(timestamp(1, 10**9, 12)), None),
    "timestamp of 1 byte": (with_value(ext(-1, b"x")), None),
    "timestamp of 16 bytes": (with_value(ext(-1, b"\0" * 16)), None),
    "timestamp as ext 32": (with_value(ext(-1, b"\0" * 4, "32")), 1),
    # lengths past the end
    "str 32 of 4 GiB": (with_value(b"\xdb\xff\xff\xff\xff"), None),
    "bin 32 of 4 GiB": (with_value(b"\xc6\xff\xff\xff\xff" + b"x" * 10), None),
    "ext 32 of 4 GiB": (with_value(b"\xc9\xff\xff\xff\xff\x05" + b"x" * 10), None),
    "array 32 of 4G items": (with_value(b"\xdd\xff\xff\xff\xff" + b"\x01" * 10), None),
    "map 32 of 4G pairs": (with_value(b"\xdf\xff\xff\xff\xff" + b"\x01" * 10), None),
    "record map 32 of 4G pairs": (entry(record=b"\xdf\xff\xff\xff\xff\x01\x01"), None),
    "entry array 32 of 4G items": (b"\xdd\xff\xff\xff\xff" + EV + REC, None),
    "str 8 one byte short": (with_value(b"\xd9\x05abcd"), None),
    "map 16 header cut": (entry(record=b"\xde\x00"), None),
    "float 64 cut": (entry(b"\xcb\x00\x00"), None),
    "fixext 8 type byte missing": (entry(b"\xd7"), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rules(name):
    payload, expected = CASES[name]
    assert reference(payload) == expected, "the case no longer says what the reference does"
    assert fast(payload) == expected


def test_errors_say_what_and_where():
    with pytest.raises(ValueError, match=rf"time is not.*\(entry 2, at byte {2 * len(entry())}\)"):
        count_entries(entry() * 2 + entry(p(-1)))
    with pytest.raises(ValueError, match="entries end in the middle of an event"):
        count_entries(entry()[:-1])
    with pytest.raises(ValueError, match="map key"):
        count_entries(with_key(b"\x90"))
    with pytest.raises(TypeError):
        count_entries("not bytes")


def test_every_truncation_of_a_valid_payload():
    parts = [
        entry(),
        v2(p(2**40), p({"k": [1, 2.5, None, True], "m": {"n": b"\x00"}})),
        entry(f32(1.25), mp((p(1), p([b"x" * 300, "y" * 70000])), (ext(3, b"e"), timestamp(1, 2, 12)))),
        entry(i64(7), mp((p(-3), p({"deep": [[[[]]]]})), (p(0.5), b"\xc0"), (b"\xc2", b"\xcf" + b"\x01" * 8))),
        *RecordEncoder(STATIC).encode_batch([("stdout", 1, b"partial", True, False, "id", 3)] * 2),
    ]
    payload = b"".join(parts)
    boundaries = {0: 0}  # offset -> entries before it
    for part in parts:
        end = max(boundaries)
        boundaries[end + len(part)] = boundaries[end] + 1
    for cut in range(len(payload) + 1):
        assert check(payload[:cut]) == boundaries.get(cut), cut


@pytest.mark.parametrize("kind", ["array", "map"])
@pytest.mark.parametrize("leaf", [b"\x90", b"\x80", b"\x01", b"\x91\x01"], ids=["empty-array", "empty-map", "int",
                                                                                   "array"])
@pytest.mark.parametrize("where", ["record", "metadata", "time", "key"])
def test_nesting_at_and_beyond_msgpacks_limit(kind, leaf, where):
    verdicts = set()
    for depth in range(1015, 1030):
        inner = nested(depth, leaf, kind)
        payload = {
            "record": with_value(inner),
            "metadata": v2(metadata=mp((p("k"), inner))),
            "time": arr(inner, REC),  # an invalid entry whose repr is too deep for Python
            "key": with_key(inner),
        }[where]
        verdicts.add(check(payload))
    if where in ("record", "metadata"):
        assert verdicts == {1, None}  # the limit falls inside the range tried


def test_nesting_limit_is_msgpacks_stack_of_1024():
    # [time, {"v": [[...[x]...]]}]: the entry and the record are 2 open containers; msgpack opens at most 1024
    assert check(with_value(nested(1021, b"\x90"))) == 1
    assert check(with_value(nested(1022, b"\x01"))) == 1  # a scalar needs no stack slot...
    assert check(with_value(nested(1022, b"\x90"))) is None  # ...an empty array does


# ------------------------------------------------------------------------------------------------------ random

# Scalars msgpack-python accepts, then the ones it rejects (bad ext types and timestamps, 0xc1, cut short).
SOUND = st.one_of(
    st.none().map(p),
    st.booleans().map(p),
    st.integers(min_value=-(2**63), max_value=2**64 - 1).map(p),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(i64),
    st.floats().map(p),
    st.floats(width=32).map(f32),
    st.text(max_size=6).map(p),
    st.binary(max_size=6).map(lambda b: bytes((0xA0 | len(b),)) + b),  # str holding any bytes
    st.binary(max_size=6).map(p),
    st.builds(ext, st.sampled_from([0, 0, 1, 5, 127]), st.binary(max_size=17), st.sampled_from(["fix", "8", "32"])),
    st.builds(timestamp, st.integers(0, 2**32 - 1), st.integers(0, 10**9 - 1), st.sampled_from([4, 8, 12])),
)
ODD = st.one_of(
    st.builds(ext, st.sampled_from([-1, -2, -128]), st.binary(max_size=17), st.sampled_from(["fix", "8", "16"])),
    st.builds(timestamp, st.integers(0, 2**32 - 1), st.integers(10**9 - 1, 2**30 - 1), st.sampled_from([8, 12])),
    st.sampled_from([b"\xc1", b"\xd7", b"\xdb\x00\x00\x00\x09", b"\xdd\x00\x00\x00\x03"]),
)
WIDTHS = st.sampled_from([0, 0, 0, 16, 32])


def values(scalars, keys):
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.builds(lambda items, w: arr(*items, width=w), st.lists(children, max_size=4), WIDTHS),
            st.builds(
                lambda pairs, w: mp(*pairs, width=w), st.lists(st.tuples(keys(children), children), max_size=4), WIDTHS
            ),
        ),
        max_leaves=10,
    )


SOUND_VALUES = values(SOUND, lambda children: SOUND)  # keys: scalars only
ANY_VALUES = values(st.one_of(SOUND, ODD), lambda children: st.one_of(SOUND, children))  # keys: anything


def maps(vals):
    return st.builds(lambda pairs, w: mp(*pairs, width=w), st.lists(st.tuples(SOUND, vals), max_size=4), WIDTHS)


TIMES = st.one_of(
    st.just(EV),
    st.integers(min_value=0, max_value=2**64 - 1).map(p),
    st.integers(min_value=0, max_value=2**63 - 1).map(i64),
    st.floats(width=32).map(f32),
    st.floats().map(p),
)
ENTRIES = st.one_of(
    st.builds(entry, TIMES, maps(SOUND_VALUES)),  # valid
    st.builds(v2, TIMES, maps(SOUND_VALUES), maps(SOUND_VALUES)),  # valid
    st.builds(entry, st.one_of(TIMES, SOUND, ODD), maps(ANY_VALUES)),
    st.builds(v2, st.one_of(TIMES, SOUND), st.one_of(maps(SOUND_VALUES), SOUND), maps(SOUND_VALUES)),
    st.builds(lambda t, r: arr(t, r), ANY_VALUES, ANY_VALUES),
    ANY_VALUES,
)
PAYLOADS = st.lists(ENTRIES, max_size=4).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS, st.data())
def test_random_msgpack(payload, data):
    event("valid" if check(payload) is not None else "invalid")
    if payload:
        cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        check(payload[:cut])
        at = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        byte = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0x92, 0xC0, 0xC1, 0xC7, 0xD4, 0xD7, 0xDB, 0xDD,
                                          0xDF, 0xFF]) | st.integers(0, 255))
        check(payload[:at] + bytes((byte,)) + payload[at + 1 :])
        check(payload[:at] + bytes((byte,)) + payload[at:])


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes(payload):
    check(payload)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\x92", b"\x91", b"\x81", b"\x80", b"\x90", b"\xd7\x00", EV, b"\x01", b"\xff",
                                 b"\xa1k", b"\xc0", b"\xc1", b"\xca", b"\xdc\x00\x02", b"\xd6\xff"]), max_size=40))
def test_random_sequences_of_headers(parts):
    check(b"".join(parts))


def test_seeded_mutations_of_plugin_payloads():
    rng = random.Random(20240611)
    base = plugin_payload(8) + v2(p(3), p({"a": [1]})) + entry(f32(1.0), p({1: {2: 3}}))
    verdicts = {"ok": 0, "error": 0}
    for _ in range(4000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.random()
            byte = rng.choice([0xC1, 0x90, 0x80, 0xFF, 0xDD, 0xD7, 0x00, rng.randrange(256)])
            if op < 0.5:
                data[at] = byte
            elif op < 0.75:
                data.insert(at, byte)
            else:
                del data[at]
        verdicts["ok" if check(bytes(data)) is not None else "error"] += 1
    assert min(verdicts.values()) > 400, verdicts  # both verdicts are well exercised


# ----------------------------------------------------------------------------------------------- ServerProtocol


def summary(events: list) -> list[tuple]:
    return [
        (type(e).__name__, e.tag, e.count, e.chunk, e.skipped)
        if isinstance(e, codec.Request)
        else (type(e).__name__, getattr(e, "reason", None))
        for e in events
    ]


def feed(protocol: ServerProtocol, stream: bytes, step: int) -> tuple[list[tuple], str | None]:
    """What the protocol makes of the stream fed `step` bytes at a time: event summaries, and the error if any."""
    events: list = []
    for i in range(0, len(stream), step):
        try:
            events += protocol.receive_data(stream[i : i + step])
        except ProtocolError as exc:
            return summary(events + exc.events), str(exc)
    return summary(events), None


def packed(payload: bytes, chunk: str = "c", *, compress: bool = False, **option) -> bytes:
    if option:  # extra option keys (fluent_signal); the payload is str here too
        return msgpack.packb(["t", payload, {"chunk": chunk, **option}], use_bin_type=False)
    return codec.packed_forward("t", payload, 0, chunk_id=chunk, compress=compress)


GOOD_STREAM = (
    packed(plugin_payload(40), "a")
    + packed(plugin_payload(7, time_format="integer"), "b", compress=True)
    + codec.encode_message("t", 5, {"log": "m"}, {"chunk": "m"})
    + codec.encode_forward("t", [(1, {"a": "b"}), (EventTime(1, 2), {"c": "d"})], {"chunk": "f"})
    + packed(b"", "empty")
    + packed(v2() + entry(f32(1.0)), "v2")
    + msgpack.packb(["t", v2() + entry(), {"chunk": "bin"}], use_bin_type=True)  # payload as bin
    + packed(b"\xc1 not decoded", "metrics", fluent_signal=1)
)
BAD_PAYLOADS = [payload for payload, expected in CASES.values() if expected is None]


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_count_only_server_counts_what_the_decoding_one_decodes(step):
    decoded = feed(ServerProtocol(), GOOD_STREAM, step)
    counted = feed(ServerProtocol(count_only=True), GOOD_STREAM, step)
    assert counted == decoded and decoded[1] is None
    assert [s[2] for s in decoded[0]] == [40, 7, 1, 2, 0, 2, 2, 0]


@pytest.mark.parametrize("index", range(len(BAD_PAYLOADS)))
@pytest.mark.parametrize("compress", [False, True])
def test_count_only_server_closes_where_the_decoding_one_does(index, compress):
    stream = GOOD_STREAM + packed(BAD_PAYLOADS[index], "bad", compress=compress) + packed(entry(), "after")
    for step in (len(stream), 5000):
        decoded = feed(ServerProtocol(), stream, step)
        counted = feed(ServerProtocol(count_only=True), stream, step)
        assert counted[0] == decoded[0] and len(decoded[0]) == 8
        assert decoded[1] is not None and counted[1] is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS)
def test_count_only_server_on_random_payloads(payload):
    stream = packed(entry(), "first") + packed(payload, "x") + packed(entry(), "after")
    decoded = feed(ServerProtocol(), stream, len(stream))
    counted = feed(ServerProtocol(count_only=True), stream, len(stream))
    assert counted[0] == decoded[0] and (counted[1] is None) == (decoded[1] is None)


def test_count_only_decodes_nothing_and_says_so():
    [event] = ServerProtocol(count_only=True).receive_data(packed(plugin_payload(5)))
    assert event.count == 5
    if codec.COUNT_SPEEDUPS:
        assert event.entries == [] and event.counted == 5
    [event] = ServerProtocol().receive_data(packed(plugin_payload(5)))
    assert len(event.entries) == 5 and event.counted == 0 and event.count == 5


def test_count_only_is_strict_only():
    stream = packed(plugin_payload(3)) + packed(entry(record=p([1])) + entry(), "lenient")
    decoded = ServerProtocol(strict=False).receive_data(stream)
    counted = ServerProtocol(strict=False, count_only=True).receive_data(stream)
    assert counted == decoded and [e.count for e in counted] == [3, 1] and counted[1].skipped == 1


def test_logbridge_pure_switches_the_c_counter_off():
    env = {**os.environ, "LOGBRIDGE_PURE": "1"}
    code = "from driver.outputs.forward import codec; print(codec.COUNT_SPEEDUPS)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert codec.COUNT_SPEEDUPS == (os.environ.get("LOGBRIDGE_PURE", "") in ("", "0"))


def test_too_deep_invalid_entry_is_a_protocol_error():
    # repr() of the entry for the message gives up before msgpack's nesting limit does: still a ProtocolError
    with pytest.raises(ProtocolError, match="too deep"):
        codec._check_entries(codec._unpack_entries(arr(nested(1010, b"\x01"), REC)), strict=True)


# ------------------------------------------------------------------------------------------------------ Receiver


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def started(sink):
    server = Receiver(ReceiverConfig(listen="tcp://127.0.0.1:0"), sink)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("counting", [True, False], ids=["sink=None", "sink"])
def test_receiver_counts_records_end_to_end(counting):
    records: list[dict] = []

    async def scenario():
        async with started(None if counting else records.append) as server:
            assert server._protocol()._limits.count_only == (counting and codec.COUNT_SPEEDUPS)
            client = ForwardClient(f"tcp://127.0.0.1:{server.address.port}", ack_timeout=10)
            encoded = RecordEncoder(STATIC).encode_batch(
                [("stdout", i * codec.NS, b"line %d" % i, False, False, "", 0) for i in range(1000)]
            )
            for compress in (False, True):
                for chunk_id, frame in codec.encode_records("t", encoded, max_bytes=8000, compress=compress):
                    await client.send(frame, chunk_id)
            await client.send(codec.encode_message("t", 1, {"log": "m"}, {"chunk": "m"}), "m")
            await client.close()
            return server.stats

    stats = run(scenario())
    assert stats.records == 2001 and stats.acks == stats.requests > 3 and stats.protocol_errors == 0
    assert len(records) == (0 if counting else 2001)


@pytest.mark.parametrize("counting", [True, False], ids=["sink=None", "sink"])
def test_receiver_without_a_sink_closes_on_a_bad_payload(counting):
    async def scenario():
        async with started(None if counting else (lambda record: None)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.address.port)
            writer.write(packed(plugin_payload(9), "good") + packed(with_key(b"\x90"), "bad") + packed(entry(), "x"))
            replies = await reader.read()
            writer.close()
            return replies, server.stats

    replies, stats = run(scenario())
    assert replies == codec.build_ack("good")
    assert stats.records == 9 and stats.protocol_errors == 1


def test_gzip_members_are_counted_after_decompression():
    payload = gzip.compress(plugin_payload(4), mtime=0) + gzip.compress(entry(), mtime=0)
    frame = msgpack.packb(["t", payload, {"compressed": "gzip", "chunk": "z"}], use_bin_type=True)
    assert [e.count for e in ServerProtocol(count_only=True).receive_data(frame)] == [5]
