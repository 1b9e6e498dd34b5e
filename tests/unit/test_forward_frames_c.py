"""driver/_speedups.c `encode_record_frames` (`RecordEncoder.encode_frames`): journal frames straight to packed
forward Entries, against the decoded path (`FrameDecoder` then `RecordEncoder.encode_batch` with the sink's record
ids), byte for byte.

The reference for the bytes is the pure Python on both sides (`FrameDecoder(pure=True)`,
`RecordEncoder(pure=True)`); the reference for *which* frames C takes is `decode_frames` (the same parser,
driver/_logentry.h), cut at the first chunk to join (``partials=False``) or at the Entry that would overflow the
frame's budget. Inputs: dockerd's captures and hypothesis streams of ordinary frames (stdout/stderr, empty lines,
16 KiB chunks with their metadata, every str header size), odd frames only the decoded way reads (empty,
unknown field, non-canonical varint, no source, garbage, a torn header) and a torn last frame.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import speedups
from driver.frames import MAX_FRAME, FrameDecoder, encode_entry
from driver.outputs.forward.codec import RecordEncoder
from tests.support import forward_frames as ff

from .test_speedups import FIFO_SAMPLES
from .test_speedups_forward import TIME_FORMATS, entry_st, static_st

if speedups.encode_record_frames is None:
    pytest.skip("driver._speedups without encode_record_frames (not built, or LOGBRIDGE_PURE)", allow_module_level=True)

STATIC = {"container_id": "c" * 64, "container_name": "/web"}
BIG = 1 << 30  # a budget nothing reaches


def encoder(static: dict, time_format: str, ids: bool, pure: bool = False) -> RecordEncoder:
    return RecordEncoder(static, time_format=time_format, record_id_key="record_id" if ids else None, pure=pure)


def decoded_way(data: bytes, static: dict, time_format: str, ids: bool, start: int, id_prefix: str):
    """What the sink did before: pure FrameDecoder, then pure RecordEncoder with ids from the frames' offsets."""
    offsets: list[int] = []
    decoder = FrameDecoder(pure=True)
    entries, used = decoder.decode(data, offsets=offsets)
    names = [f"{id_prefix}{start + at:x}" for at in offsets] if ids else None
    return entries, used, offsets, decoder, encoder(static, time_format, ids, pure=True).encode_batch(entries, names)


def expected(data: bytes, static: dict, time_format: str, ids: bool, start: int, id_prefix: str, budget: int,
             partials: bool) -> tuple[int, int, bool, bytes]:
    """(used, count, declined, packed) as encode_frames must return them."""
    offsets: list[int] = []
    entries, stop, _ = speedups.decode_frames(data, 0, offsets)  # the frames the shared parser takes
    names = [f"{id_prefix}{start + at:x}" for at in offsets] if ids else None
    records = encoder(static, time_format, ids, pure=True).encode_batch(entries, names)
    size = 0
    for k, (entry, record) in enumerate(zip(entries, records, strict=True)):
        if (entry[3] and not partials) or size + len(record) > budget:
            return offsets[k], k, True, b"".join(records[:k])
        size += len(record)
    rest = len(data) - stop
    length = int.from_bytes(data[stop:stop + 4], "big") if rest >= 4 else 0
    torn = rest < 4 or (0 < length <= MAX_FRAME and length > rest - 4)  # still being written: not declined
    return stop, len(entries), not torn, b"".join(records)


def check(data: bytes, static: dict, time_format: str, ids: bool, start: int, id_prefix: str, budget: int,
          partials: bool) -> tuple[int, int, bool, bytes]:
    got = encoder(static, time_format, ids).encode_frames(data, budget, partials=partials, start=start,
                                                          id_prefix=id_prefix)
    assert got is not None
    used, count, declined, packed = got
    assert (used, count, declined, packed) == expected(data, static, time_format, ids, start, id_prefix, budget,
                                                       partials)
    # The part C took is exactly what the decoded path makes of those bytes: every frame one entry (nothing
    # skipped, nothing resynchronised), the same Entries, the same record ids.
    entries, taken, offsets, decoder, records = decoded_way(data[:used], static, time_format, ids, start, id_prefix)
    assert taken == used and len(entries) == count and decoder.garbled == 0 and decoder.skipped_bytes == 0
    assert packed == b"".join(records)
    assert len(packed) <= budget
    return got


# ---------------------------------------------------------------------------------------------------------
# inputs

# Ordinary frames: dockerd's layout, a complete line without metadata, a chunk with it.
ordinary_st = entry_st.map(lambda e: e if e[3] else (*e[:3], False, False, "", 0)).filter(
    lambda e: -(2**63) <= e[1] < 2**63 and -(2**31) <= e[6] < 2**31).map(encode_entry)
odd_st = st.one_of(
    st.sampled_from([*ff.ODD.values(), ff.EMPTY_ID_CHUNK, b"\xff\xff\xff\xff", b"\x00\x00\x00\x05garbl"]),
    st.binary(max_size=20),  # anything
    st.builds(ff.chunks, st.binary(max_size=40_000), size=st.sampled_from([5, 16 << 10])),
)


def _insert(frames: list[bytes], odd: list[tuple[int, bytes]]) -> bytes:
    for at, frame in odd:
        frames.insert(min(at, len(frames)), frame)
    return b"".join(frames)


# Mostly ordinary frames, a few odd ones anywhere among them.
stream_st = st.builds(_insert, st.lists(ordinary_st, max_size=20),
                      st.lists(st.tuples(st.integers(0, 20), odd_st), max_size=3))
# The sink's prefix is the short container id and a dash; any text must come out as Python's f-string does.
id_prefix_st = st.sampled_from(["", "cccccccccccc-"]) | st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8)
start_st = st.sampled_from([0, 1, 15, 16, 2**32, 2**63 - 2**40]) | st.integers(0, 2**40)
# Mostly one frame for everything; else budgets that cut the stream into several frames (or take nothing).
budget_st = st.just(BIG) | st.just(BIG) | st.sampled_from([0, 1, 100, 200, 1000]) | st.integers(0, 5000)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream_st, st.integers(0, 30), static_st, st.sampled_from(TIME_FORMATS), st.booleans(), start_st,
       id_prefix_st, budget_st, st.booleans())
def test_matches_the_decoded_path(data, cut, static, time_format, ids, start, id_prefix, budget, partials):
    data = data[:len(data) - cut] if cut else data  # a torn last frame: still being written
    check(data, static, time_format, ids, start, id_prefix, budget, partials)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream_st, static_st, st.sampled_from(TIME_FORMATS), st.booleans(), budget_st)
def test_a_journal_in_pieces_matches(data, static, time_format, ids, budget):
    """Taken as the sink takes it (frame after frame of budget-sized pieces, from where the last stopped; where C
    takes nothing, the rest the decoded way), every entry comes out once, in order, as the decoded path makes it."""
    def decoded(buf: bytes, base: int) -> bytes:
        offsets: list[int] = []
        entries, _ = FrameDecoder(pure=True).decode(buf, final=True, offsets=offsets)
        names = [f"p-{base + at:x}" for at in offsets] if ids else None
        return b"".join(encoder(static, time_format, ids, pure=True).encode_batch(entries, names))

    enc = encoder(static, time_format, ids)
    got: list[bytes] = []
    pos = 0
    while pos < len(data):
        used, count, declined, packed = enc.encode_frames(memoryview(data)[pos:], budget, start=pos, id_prefix="p-")
        if not count:
            got.append(decoded(data[pos:], pos))
            break
        assert len(packed) <= budget
        got.append(packed)
        pos += used
    assert b"".join(got) == decoded(data, 0)


@pytest.mark.parametrize("path", FIFO_SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("time_format", TIME_FORMATS)
def test_dockerd_captures_go_straight(path, time_format):
    """dockerd's frames are all ordinary: C takes every one."""
    data = path.read_bytes()
    for ids in (False, True):
        used, count, declined, packed = check(data, STATIC, time_format, ids, 7, "cccccccccccc-", BIG, True)
        assert used == len(data) and not declined and count


def test_stops_where_the_decoded_way_must_take_over():
    lines = ff.short_lines(3)
    enc = encoder(STATIC, "event_time", False)
    for name, odd in {**ff.ODD, "empty_id_chunk": ff.EMPTY_ID_CHUNK}.items():
        used, count, declined, _ = enc.encode_frames(lines + odd + lines, BIG)
        if name == "empty_id_chunk":  # a chunk C reads (no id: proto3 leaves the empty string out)
            assert (used, count, declined) == (2 * len(lines) + len(odd), 7, False), name
        else:
            assert (used, count, declined) == (len(lines), 3, True), name
    chunked = ff.chunks(b"x" * 40_000)
    assert enc.encode_frames(lines + chunked, BIG, partials=False)[:3] == (len(lines), 3, True)
    assert enc.encode_frames(lines + chunked, BIG)[:3] == (len(lines) + len(chunked), 6, False)
    # Torn: the frame still being written is where it stops, not a reason to decline.
    tail = ff.frame(b"x" * (40_000 - 2 * (16 << 10)), partial=True, last=True, partial_id="p-1", ordinal=3)
    assert chunked.endswith(tail)
    assert enc.encode_frames(lines + chunked[:-1], BIG)[:3] == (len(lines) + len(chunked) - len(tail), 5, False)
    assert enc.encode_frames(b"", BIG) == (0, 0, False, b"")


def test_not_offered_where_the_decoded_way_is_the_only_one():
    assert RecordEncoder(STATIC, pure=True).encode_frames(ff.short_lines(2), BIG) is None
    assert RecordEncoder(STATIC, invalid_utf8="replace").encode_frames(ff.short_lines(2), BIG) is None
    assert RecordEncoder({**STATIC, "log": "shadowed"}).encode_frames(ff.short_lines(2), BIG) is None
