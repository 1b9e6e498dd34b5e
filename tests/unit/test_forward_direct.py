"""The forward sink's direct batches (ForwardSink._direct_batch: journal frames packed in C, no decoded entries)
against its decoded way (read_frames, then _batch), on the same journals: the same records, byte for byte, in
the same order, the same lines counted, the cursor at the same place, the same garbage counted, each frame with
its own chunk id. Batch boundaries may differ (a direct batch ends before a frame C leaves to the decoder), so
records are compared across the whole journal, not batch by batch.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import tempfile
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import speedups
from driver.journal import CursorStore, Journal
from driver.outputs.forward.codec import DEFAULT_MAX_FRAME_BYTES
from driver.outputs.forward.sink import BATCH_BYTES, PROBE_BYTES, ForwardSink
from tests.support import forward_frames as ff
from tests.unit.test_forward_sink import CID, ScriptedClient

from .test_forward_frames_c import odd_st, ordinary_st

if speedups.encode_record_frames is None:
    pytest.skip("driver._speedups without encode_record_frames (not built, or LOGBRIDGE_PURE)", allow_module_level=True)

STATIC = {"container_id": CID, "container_name": "/web", "com.example.team": "caf\u00e9"}


def make_sink(directory: str, *, direct: bool, **kwargs) -> ForwardSink:
    sink = ForwardSink(Journal(f"{directory}/journal"), CursorStore(f"{directory}/cursors"), ScriptedClient(),
                       "tag", STATIC, event_time=kwargs.pop("event_time", True), compress=kwargs.pop("compress", False),
                       container_id=CID, **kwargs)
    sink.direct = direct
    chunk_numbers = itertools.count()
    sink.chunk_ids = lambda: f"chunk-{next(chunk_numbers)}"  # BatchBuilder's default is bound at import
    return sink


def entries_of(data: bytes, chunk_id: str) -> tuple[bytes, int]:
    """A PackedForward frame's packed Entries (inflated) and its size option; its chunk option must be chunk_id."""
    _tag, entries, option = msgpack.unpackb(data, raw=True)  # the Entries are packed as str: keep them bytes
    assert option[b"chunk"] == chunk_id.encode()
    if option.get(b"compressed") == b"gzip":
        entries = gzip.decompress(entries)
    assert len(data) <= DEFAULT_MAX_FRAME_BYTES or option[b"size"] == 1  # an Entry alone over it goes alone
    return entries, option[b"size"]


def take_all(sink: ForwardSink, limit: int, *, sealed: bool) -> tuple[bytes, int, list]:
    """Every batch _prepare takes from the journal (as the worker thread does): the records of all of them
    concatenated, the lines counted, and the batches."""
    sink.sealed = sealed
    records, lines, batches = [], 0, []
    while (batch := sink._prepare(limit)) is not None:
        assert batch.start == (batches[-1].end if batches else 0) and batch.end > batch.start
        for frame in batch.frames:
            packed, size = entries_of(frame.data, frame.chunk_id)
            assert size == frame.count and frame.count
            records.append(packed)
        assert sum(f.count for f in batch.frames) == batch.lines or sink.merge_max  # merged: fewer records
        lines += batch.lines
        batches.append(batch)
    return b"".join(records), lines, batches


def both_ways(data: bytes, limit: int, *, sealed: bool, **kwargs) -> tuple[tuple, tuple]:
    """(records, lines, batches, cursor, garbled, skipped) for the direct and the decoded way on one journal."""
    got = []
    for direct in (True, False):
        with tempfile.TemporaryDirectory() as directory:
            sink = make_sink(directory, direct=direct, **kwargs)
            sink.journal.write(data)
            records, lines, batches = take_all(sink, limit, sealed=sealed)
            chunk_ids = [f.chunk_id for b in batches for f in b.frames]
            assert len(set(chunk_ids)) == len(chunk_ids)
            got.append((records, lines, batches, sink.cursor.pos, sink.decoder.garbled, sink.decoder.skipped_bytes))
    return got[0], got[1]


# Journals of many frames: ordinary ones, and now and then one C leaves to the decoder.
journal_st = st.lists(st.one_of(st.lists(ordinary_st, min_size=1, max_size=40).map(b"".join), odd_st),
                      max_size=12).map(b"".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(journal_st, st.integers(0, 30), st.sampled_from([PROBE_BYTES, BATCH_BYTES, 64, 1000, 5000]),
       st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_same_records_as_the_decoded_way(data, cut, limit, sealed, record_ids, compress, event_time):
    data = data[:len(data) - cut] if cut else data  # sealed: a torn tail counted as garbage; else waited for
    direct, decoded = both_ways(data, limit, sealed=sealed, record_ids=record_ids, compress=compress,
                                event_time=event_time)
    assert direct[0] == decoded[0]  # the records, byte for byte (record ids from journal offsets included)
    assert direct[1] == decoded[1]  # lines
    assert direct[3:] == decoded[3:]  # cursor, garbled places, skipped bytes


def test_dockerds_lines_go_straight_in_full_batches():
    """Short lines as dockerd writes them: every batch is a direct one, as long as the decoded way's."""
    data = ff.short_lines(20_000)
    direct, decoded = both_ways(data, BATCH_BYTES, sealed=False, record_ids=True)
    assert direct[0] == decoded[0] and direct[1] == decoded[1] == 20_000
    assert [(b.start, b.end) for b in direct[2]] == [(b.start, b.end) for b in decoded[2]]
    assert [[f.count for f in b.frames] for b in direct[2]] == [[f.count for f in b.frames] for b in decoded[2]]
    with tempfile.TemporaryDirectory() as directory:
        sink = make_sink(directory, direct=True)
        assert sink.direct  # C is there: the sink takes the direct way by itself
        sink._batch = None  # and never the decoded one for these
        sink.journal.write(data)
        assert take_all(sink, BATCH_BYTES, sealed=True)[1] == 20_000


def test_a_frame_full_starts_the_next_one_as_the_builder_does():
    """A batch whose records outgrow one forward frame (long lines): several frames, split where BatchBuilder
    splits them, each with its own chunk id."""
    data = b"".join(ff.frame(b"%06d" % i + b"x" * 3000, time_nano=ff.T0 + i) for i in range(700))  # ~2.1 MB
    direct, decoded = both_ways(data, 4 << 20, sealed=False)
    assert len(direct[2]) == 1 and len(direct[2][0].frames) == 3
    assert [f.count for f in direct[2][0].frames] == [f.count for f in decoded[2][0].frames]
    assert [f.data for f in direct[2][0].frames] == [f.data for f in decoded[2][0].frames]  # same ids: chunk-0..2


def test_garbage_in_the_middle_is_counted_once_and_the_lines_around_it_go():
    data = ff.short_lines(100) + ff.GARBAGE + ff.short_lines(100, time_nano=ff.T0 + 1)
    direct, decoded = both_ways(data, BATCH_BYTES, sealed=False)
    assert direct[0] == decoded[0] and direct[1] == 200
    assert direct[4] == decoded[4] == 1
    # The direct batch ends at the garbage; the decoded batch from there steps over it and takes the rest.
    assert [(b.start, b.end, b.lines) for b in direct[2]] == [(0, len(ff.short_lines(100)), 100),
                                                            (len(ff.short_lines(100)), len(data), 100)]


def test_a_long_line_is_joined_when_merging(tmp_path):
    """forward-merge-partials: a batch with chunks goes the decoded way, which joins them; the direct batch
    before it ends at the first chunk, so the line is not cut by a batch boundary there."""
    line = bytes(range(256)) * 200  # 51,200 bytes: four chunks
    data = ff.short_lines(10) + ff.chunks(line) + ff.short_lines(10, time_nano=ff.T0 + 5)
    with tempfile.TemporaryDirectory() as directory:
        sink = make_sink(directory, direct=True, merge_max=1 << 20, record_ids=True)
        sink.journal.write(data)
        _, lines, batches = take_all(sink, BATCH_BYTES, sealed=False)
    assert lines == 24 and [b.lines for b in batches] == [10, 14]
    unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
    for b in batches:
        for f in b.frames:
            unpacker.feed(entries_of(f.data, f.chunk_id)[0])
    records = [r for _t, r in unpacker]
    assert len(records) == 21 and records[10]["log"].encode("utf-8", "surrogateescape") == line
    assert records[10]["record_id"] == f"{CID[:12]}-{len(ff.short_lines(10)):x}"  # the first chunk's offset
    assert "partial_message" not in records[10]


def test_the_sink_sends_and_acks_direct_batches():
    """Through step(): every line acked once, the counts and the saved cursor as with decoded batches."""
    async def drain(sink: ForwardSink) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            async with asyncio.timeout(60):  # a bound on a failure, not a wait for success
                while await sink.step(loop, executor):
                    pass

    data = ff.short_lines(5000) + ff.EMPTY + ff.short_lines(5000, time_nano=ff.T0 + 7)
    sent = []
    for direct in (True, False):
        with tempfile.TemporaryDirectory() as directory:
            sink = make_sink(directory, direct=direct, record_ids=True)
            sink.journal.write(data)
            asyncio.run(drain(sink))
            assert sink.saved_pos == sink.journal.end and sink.stats.acked == sink.stats.forwarded == 10_000
            sent.append(sorted((r["record_id"], r["log"]) for frame in sink.client.sends for r in frame))
    assert sent[0] == sent[1] and len({rid for rid, _ in sent[0]}) == 10_000
