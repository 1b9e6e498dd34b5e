"""driver/_speedups.c `encode_frame_lines` (`jsonfile.encode_frames`): journal frames straight to json-file lines,
against the decoded way (`FrameDecoder` then `encode_entries`), byte for byte, and the json.log writer that uses it.

The reference for the bytes is the pure Python (`FrameDecoder(pure=True)`, `encode_entries_pure`); the reference
for *which* frames C takes is `decode_frames` (the same parser, driver/_logentry.h), cut at the first entry the
line encoder leaves to Python (an empty chunk that is not the last). The writer with C
must leave json.log, its rotated files and every counter exactly as the writer without it does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import speedups
from driver.frames import MAX_FRAME, FrameDecoder, encode_entry
from driver.journal import CursorStore, Journal
from driver.jsonfile import encode_attrs, encode_entries_pure, encode_frames
from driver.sinks.jsonlog import JsonLogWriter
from driver.stats import ContainerStats
from tests.support import forward_frames as ff

from .test_speedups import ATTRS_JSON, FIFO_SAMPLES, entries_st, stream_st

if speedups.encode_frame_lines is None:
    pytest.skip("driver._speedups without encode_frame_lines (not built, or LOGBRIDGE_PURE)", allow_module_level=True)

NS = 10**9
attrs_st = st.sampled_from([None, ATTRS_JSON, encode_attrs({"tag": 'a"b<c>'})])


def c_takes(entry: tuple) -> bool:
    """Whether the C line encoder takes this decoded entry (else the batch stops before it)."""
    _, _, line, partial, last, _, _ = entry
    return bool(line) or not partial or last  # an int64 time always falls in years 1677..2262


def expected(data: bytes, attrs_json: bytes | None) -> tuple:
    """(used, count, declined, joined, counts) as encode_frames must return them."""
    offsets: list[int] = []
    entries, stop, _ = speedups.decode_frames(data, 0, offsets)  # the frames the shared parser takes
    for k, entry in enumerate(entries):
        if not c_takes(entry):
            entries, stop, declined = entries[:k], offsets[k], True
            break
    else:
        rest = len(data) - stop
        length = int.from_bytes(data[stop:stop + 4], "big") if rest >= 4 else 0
        declined = not (rest < 4 or 0 < length <= MAX_FRAME and length > rest - 4)  # a torn tail: not declined
    counts = [0, 0, 0, 0]
    for source, _, line, *_ in entries:
        k = 2 if source == "stderr" else 0
        counts[k] += 1
        counts[k + 1] += len(line)
    return stop, len(entries), declined, b"".join(encode_entries_pure(entries, attrs_json)), tuple(counts)


def check(data: bytes, attrs_json: bytes | None) -> tuple:
    got = encode_frames(data, attrs_json)
    assert got == expected(data, attrs_json)
    used, count, _, joined, _ = got
    # What C took is exactly what the decoded way makes of those bytes: every frame one entry, no garbage.
    decoder = FrameDecoder(pure=True)
    entries, taken = decoder.decode(data[:used], final=True)
    assert (taken, len(entries), decoder.garbled, decoder.skipped_bytes) == (used, count, 0, 0)
    assert joined == b"".join(encode_entries_pure(entries, attrs_json))
    return got


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream_st, st.integers(0, 30), attrs_st)
def test_matches_the_decoded_way(data, cut, attrs_json):
    check(data[:len(data) - cut] if cut else data, attrs_json)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries_st, max_size=30), attrs_st)
def test_every_frame_dockerd_writes(entries, attrs_json):
    """Only ordinary frames: C stops only at what the line encoder leaves to Python."""
    entries = [e for e in entries if -(2**63) <= e[1] < 2**63 and -(2**31) <= e[6] < 2**31]
    data = b"".join(map(encode_entry, entries))
    used, count, declined, _, _ = check(data, attrs_json)
    assert declined == (count < len(entries))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream_st, attrs_st)
def test_a_journal_in_pieces_matches(data, attrs_json):
    """Taken as the writer takes it (C from where it stopped; where C takes nothing, one frame's worth the decoded
    way), every entry comes out once, in order, as the decoded way makes it of the whole stream."""
    pure = FrameDecoder(pure=True)
    entries, _ = pure.decode(data, final=True)
    want = b"".join(encode_entries_pure(entries, attrs_json))
    got, pos, decoder = [], 0, FrameDecoder(pure=True)
    while pos < len(data):
        used, count, _, joined, _ = encode_frames(memoryview(data)[pos:], attrs_json)
        if count:
            got.append(joined)
            decoder.found_frames()
            pos += used
            continue
        # the decoded way for what C left: decode up to the next frame C takes again
        entries, used = decoder.decode(data[pos:], final=True)
        got.append(b"".join(encode_entries_pure(entries, attrs_json)))
        pos += used
    assert b"".join(got) == want


@pytest.mark.parametrize("path", FIFO_SAMPLES, ids=lambda p: p.name)
def test_dockerd_captures_go_straight(path):
    data = path.read_bytes()
    used, count, declined, _, _ = check(data, ATTRS_JSON)
    assert used == len(data) and count and not declined


def test_stops_where_the_decoded_way_must_take_over():
    lines = ff.short_lines(3)
    for name, odd in ff.ODD.items():
        assert encode_frames(lines + odd + lines, None)[:3] == (len(lines), 3, True), name
    empty_chunk = encode_entry(("stdout", 5, b"", True, False, "p", 1))
    assert encode_frames(lines + empty_chunk, None)[:3] == (len(lines), 3, True)
    oldest = encode_entry(("stdout", -(2**63), b"x", False, False, "", 0))  # 1677: every int64 time is taken
    assert encode_frames(lines + oldest, None)[:3] == (len(lines) + len(oldest), 4, False)
    chunked = ff.chunks(b"x" * 40_000)
    assert encode_frames(lines + chunked[:-1], None)[:3] == (len(lines) + len(chunked) - len(ff.frame(
        b"x" * (40_000 - 2 * (16 << 10)), partial=True, last=True, partial_id="p-1", ordinal=3)), 5, False)
    assert encode_frames(b"", None) == (0, 0, False, b"", (0, 0, 0, 0))


# ---------------------------------------------------------------------------------------------------------
# the writer: with C and without it, the same files and the same counts


def run_writer(tmp: Path, pieces: list[bytes], direct: bool, max_size: int | None, attrs_json: bytes | None):
    journal = Journal(str(tmp / "journal"))
    w = JsonLogWriter(journal, CursorStore(str(tmp / "cursors")), str(tmp / "logs" / "c-json.log"), max_size, 50,
                      False, attrs_json, ContainerStats("c"))
    w.direct = direct
    for piece in pieces:
        journal.write(piece)
        while w.pump():
            pass
    w.sealed = True
    while w.pump():
        pass
    w.close()
    files = {p.name: p.read_bytes() for p in sorted((tmp / "logs").iterdir())}
    s = w.stats
    return files, (s.lines_written, s.to_json(), w.cursor.pos)


# Journal appends as the FIFO brings them: odd streams, and runs of ordinary lines long enough to rotate inside.
pieces_st = st.lists(stream_st | st.builds(ff.short_lines, st.integers(1, 80)), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(pieces_st, st.sampled_from([None, 300, 2000]), attrs_st)
def test_the_writer_leaves_the_same_files_and_counts(tmp_path_factory, pieces, max_size, attrs_json):
    with_c = run_writer(tmp_path_factory.mktemp("c"), pieces, True, max_size, attrs_json)
    without = run_writer(tmp_path_factory.mktemp("py"), pieces, False, max_size, attrs_json)
    assert with_c == without


def test_the_writer_takes_ordinary_batches_in_c(tmp_path, monkeypatch):
    """A mutation check for the test above: the direct path does run (and rotates inside a joined batch)."""
    calls = []
    real = encode_frames
    monkeypatch.setattr("driver.sinks.jsonlog.encode_frames", lambda *a: calls.append(1) or real(*a))
    files, (written, _, _) = run_writer(tmp_path, [ff.short_lines(500)], True, 4000, None)
    assert calls and written == 500 and len(files) > 2
    assert sum(body.count(b"\n") for body in files.values()) == 500
