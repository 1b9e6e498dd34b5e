"""The journal: splice from a real pipe, segments, cursors, the byte cap and its exact drop accounting."""

import os

import pytest

from driver.frames import FrameDecoder, encode_entry
from driver.journal import Cursor, CursorStore, Journal


def frames(n: int, start: int = 0, size: int = 20) -> bytes:
    return b"".join(
        encode_entry(("stdout", 10**18 + i, b"%0*d" % (size, i), False, False, "", 0)) for i in range(start, start + n)
    )


def pipe_with(data: bytes) -> int:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, data)
    os.close(w)
    return r


def test_splice_moves_pipe_bytes_into_segments_and_survives_reopen(tmp_path):
    data = frames(500)
    j = Journal(str(tmp_path / "j"), segment_bytes=4096)
    r = pipe_with(data)
    moved = 0
    while (n := j.splice_from(r, 1 << 20)) > 0:
        moved += n
    assert n == -1 and moved == len(data)  # -1: EOF, the writer is gone
    assert j.segment_count() > 1
    assert j.read(0, len(data)) == data
    j.close()
    again = Journal(str(tmp_path / "j"), segment_bytes=4096)  # a restarted plugin: end = size of the files
    assert again.end == len(data) and again.read(100, 50) == data[100:150]


def test_empty_pipe_with_a_writer_returns_zero(tmp_path):
    r, w = os.pipe()
    os.set_blocking(r, False)
    j = Journal(str(tmp_path / "j"))
    assert j.splice_from(r, 1 << 20) == 0
    os.close(w)
    assert j.splice_from(r, 1 << 20) == -1


def test_release_deletes_only_segments_every_consumer_passed(tmp_path):
    j = Journal(str(tmp_path / "j"), segment_bytes=1000)
    j.write(frames(300))
    before = j.segment_count()
    j.release(2500)
    assert j.start <= 2500 < j.start + 1000 + 1000
    assert j.segment_count() < before
    assert j.read(2500, 10) != b""


def test_cap_drops_oldest_and_counts_exact_frames(tmp_path):
    j = Journal(str(tmp_path / "j"), segment_bytes=1000, max_bytes=3000)
    cur = Cursor("slow")
    j.cursors["slow"] = cur
    data = frames(400)  # 400 frames of 39 bytes
    j.write(data)
    lost = j.enforce_cap()
    assert j.size() <= 3000 + 1000
    (name, nframes, nbytes), *_ = lost
    total_frames = sum(f for _, f, _ in lost)
    assert name == "slow" and nbytes > 0
    # The cursor lands on a frame boundary: decoding from it gives whole frames with nothing garbled.
    dec = FrameDecoder()
    rest, _ = dec.decode(j.read(cur.pos, j.end - cur.pos), final=True)
    assert dec.garbled == 0
    assert total_frames + len(rest) == 400
    assert cur.dropped_frames == total_frames


def test_take_refuses_when_the_cap_moved_the_cursor(tmp_path):
    j = Journal(str(tmp_path / "j"), segment_bytes=1000, max_bytes=2000)
    cur = Cursor("c")
    j.cursors["c"] = cur
    j.write(frames(200))
    start = cur.pos
    j.enforce_cap()
    assert not j.take(cur, start, 39)
    assert j.take(cur, cur.pos, 39)


def test_cursor_store_round_trip_and_atomic_file(tmp_path):
    store = CursorStore(str(tmp_path / "c"))
    cur = store.load("jsonlog")
    assert cur.pos == 0
    cur.dropped_frames = 3
    store.save(cur, pos=1234, extra={"inode": 5, "size": 10})
    back = store.load("jsonlog")
    assert (back.pos, back.dropped_frames, back.extra) == (1234, 3, {"inode": 5, "size": 10})
    assert sorted(os.listdir(tmp_path / "c")) == ["jsonlog.json"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_is_reported_not_fatal(tmp_path):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    j = Journal(str(mnt / "j"), segment_bytes=1 << 20)
    try:
        stored = j.write(frames(5000))
        assert 0 < stored < len(frames(5000))
        assert j.end == stored
    finally:
        j.close()
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_cursor_saves_after_the_first_overwrite_one_slot_in_place(tmp_path):
    store = CursorStore(str(tmp_path / "c"))
    cur = store.load("forward")
    assert not store.save(cur, pos=1, in_place_only=True)  # nothing open yet: the caller goes to a worker thread
    store.save(cur, pos=2, extra={"acked": 1})
    path = tmp_path / "c" / "forward.json"
    inode = path.stat().st_ino
    assert store.save(cur, pos=3, extra={"acked": 2}, in_place_only=True)
    assert path.stat().st_ino == inode and path.stat().st_size == CursorStore.SLOT
    assert (store.load("forward").pos, store.load("forward").extra) == (3, {"acked": 2})
    store.save(cur, pos=4, extra={"long": "x" * 600})  # too long for the slot: a new file, renamed into place
    assert store.load("forward").extra == {"long": "x" * 600}
    store.save(cur, pos=5, extra={})  # and back to one slot, with no tail of the long one left
    assert path.stat().st_size == CursorStore.SLOT and store.load("forward").pos == 5
    store.close()
    assert store.save(cur, pos=6) and store.load("forward").pos == 6  # a save after close opens it again
    store.close()


def test_closing_with_every_consumer_at_the_end_keeps_only_an_empty_segment_at_the_end(tmp_path):
    data = frames(300)
    j = Journal(str(tmp_path / "j"), segment_bytes=1000)
    j.write(data)
    j.release(len(data) - 1, closing=True)  # a consumer still short of the end: the last segment stays
    assert j.read(len(data) - 10, 10) == data[-10:]
    j.release(len(data), closing=True)
    segs = sorted((tmp_path / "j").glob("*.seg"))  # (beside them: the incarnation file)
    assert [(s.name, s.stat().st_size) for s in segs] == [(f"{len(data):020d}.seg", 0)]
    j.close()
    again = Journal(str(tmp_path / "j"), segment_bytes=1000)  # the container starts again
    assert again.start == again.end == len(data)  # offsets go on: saved cursors at the end stay valid
    more = frames(3, start=300)
    again.write(more)
    assert again.read(len(data), len(more)) == more


def test_incarnation_is_kept_across_reopen_and_new_when_the_journal_starts_again_at_zero(tmp_path):
    """Document ids are (incarnation, offset): a journal that restarts at offset 0 must not reuse the old id, or
    Elasticsearch would answer 409 for new lines that happen to land at offsets it has seen."""
    j = Journal(str(tmp_path / "j"))
    j.write(frames(10))
    first = j.incarnation
    assert len(first) == 16 and int(first, 16) >= 0
    j.close()
    again = Journal(str(tmp_path / "j"))  # a restart: same stream, same id
    assert again.incarnation == first
    again.destroy()  # retention removed the state; the incarnation file may be left over
    reborn = Journal(str(tmp_path / "j"))
    assert reborn.end == 0 and reborn.incarnation != first
    reborn.close()
    assert Journal(str(tmp_path / "j")).incarnation == reborn.incarnation


def test_a_lost_or_garbled_incarnation_file_gets_a_new_id(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.write(frames(3))
    first = j.incarnation
    j.close()
    (tmp_path / "j" / "incarnation").write_text("not hex at all\n")
    second = Journal(str(tmp_path / "j")).incarnation
    assert second != first and len(second) == 16
    (tmp_path / "j" / "incarnation").unlink()
    assert Journal(str(tmp_path / "j")).incarnation not in (first, second)
