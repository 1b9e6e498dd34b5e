"""The FIFO frame codec, on bytes dockerd 20.10 really wrote and on damaged streams."""

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from driver.frames import FrameDecoder, encode_entry, encode_frame

DATA = Path(__file__).parent / "data" / "fifo"


def decode_all(buf: bytes, final: bool = True):
    dec = FrameDecoder()
    entries, used = dec.decode(buf, final=final)
    return dec, entries, used


def test_decodes_dockerd_frames_for_seq():
    dec, entries, used = decode_all((DATA / "seq-1-5.bin").read_bytes())
    assert [e[2] for e in entries] == [b"1", b"2", b"3", b"4", b"5"]
    assert all(e[0] == "stdout" and not e[3] for e in entries)
    assert entries[0][1] == 1795702273540888744  # time_nano as dockerd stamped it
    assert dec.garbled == 0 and used == len((DATA / "seq-1-5.bin").read_bytes())


def test_partial_metadata_of_a_40000_byte_line_and_a_line_without_newline():
    _, entries, _ = decode_all((DATA / "partial-40000-short-nonewline.bin").read_bytes())
    sizes = [(len(e[2]), e[3], e[4], e[6]) for e in entries]
    assert sizes == [
        (16384, True, False, 1),
        (16384, True, False, 2),
        (7232, True, True, 3),
        (5, False, False, 0),
        (17, True, False, 1),
    ]
    assert entries[0][5] == entries[1][5] == entries[2][5] != entries[4][5]
    assert entries[0][1] == entries[1][1] == entries[2][1]  # every chunk carries the first chunk's time


def test_incomplete_frame_waits_for_more_bytes():
    buf = (DATA / "seq-1-5.bin").read_bytes()
    dec = FrameDecoder()
    entries, used = dec.decode(buf[:30])
    assert len(entries) == 1 and used == 25
    more, used2 = dec.decode(buf[used:])
    assert [e[2] for e in entries + more] == [b"1", b"2", b"3", b"4", b"5"]
    assert dec.garbled == 0


def test_resyncs_after_garbage_and_counts_it():
    good = [encode_entry(("stdout", 10**18 + i, b"line %d" % i, False, False, "", 0)) for i in range(6)]
    garbage = b"\xff\xff\xff\xff not a frame at all \x00\x01"
    buf = b"".join(good[:3]) + garbage + b"".join(good[3:])
    dec, entries, used = decode_all(buf)
    assert [e[2] for e in entries] == [b"line %d" % i for i in range(6)]
    assert dec.garbled == 1
    assert dec.skipped_bytes == len(garbage)
    assert used == len(buf)


def test_torn_frame_in_the_middle_is_skipped_and_the_rest_kept():
    good = [encode_entry(("stderr", 10**18 + i, b"x" * 50, False, False, "", 0)) for i in range(4)]
    buf = good[0] + good[1][:20] + good[2] + good[3]  # frame 1 lost its tail (a writer died mid-frame)
    dec, entries, _ = decode_all(buf)
    assert len(entries) == 3
    assert dec.garbled == 1


def test_absurd_length_does_not_allocate_or_stall():
    buf = b"\x7f\xff\xff\xff" + encode_frame("stdout", 1, b"after")
    dec, entries, _ = decode_all(buf)
    assert [e[2] for e in entries] == [b"after"]


def test_final_torn_tail_counted_not_waited_for():
    frame = encode_frame("stdout", 1, b"abc")
    dec, entries, used = decode_all(frame + frame[:7], final=True)
    assert len(entries) == 1 and used == len(frame) + 7 and dec.skipped_bytes == 7


def test_zero_length_frame_is_an_empty_entry_and_skipped():
    buf = b"\x00\x00\x00\x00" + encode_frame("stdout", 5, b"x")
    dec, entries, _ = decode_all(buf)
    assert [e[2] for e in entries] == [b"x"] and dec.garbled == 0


entries_st = st.lists(
    st.tuples(
        st.sampled_from(["stdout", "stderr"]),
        st.integers(min_value=1, max_value=2**62),
        st.binary(max_size=300),
        st.booleans(),
        st.booleans(),
        st.text(alphabet="0123456789abcdef", min_size=0, max_size=64),
        st.integers(min_value=0, max_value=1000),
    ).map(lambda t: t if t[3] else (t[0], t[1], t[2], False, False, "", 0)),
    max_size=40,
)


@given(entries_st, st.integers(min_value=1, max_value=97))
def test_any_chunking_gives_the_same_entries(entries, step):
    stream = b"".join(encode_entry(e) for e in entries)
    dec = FrameDecoder()
    got, pending = [], b""
    for i in range(0, len(stream), step):
        pending += stream[i : i + step]
        out, used = dec.decode(pending)
        got += out
        pending = pending[used:]
    out, _ = dec.decode(pending, final=True)
    got += out
    assert got == [tuple(e) for e in entries]
    assert dec.garbled == 0


def test_plausible_length_running_past_the_end_hides_no_frames_at_eof():
    tail = encode_frame("stdout", 2, b"after garbage")
    buf = encode_frame("stdout", 1, b"before") + b"\x00\x00\x10\x00 junk" + tail
    dec = FrameDecoder()
    entries, used = dec.decode(buf)
    assert [e[2] for e in entries] == [b"before"]  # more bytes may still come: wait
    rest, _ = dec.decode(buf[used:], final=True)
    assert [e[2] for e in rest] == [b"after garbage"] and dec.garbled == 1


def test_decoder_counts_lines_and_bytes_per_stream():
    buf = b"".join(encode_entry((s, 1, line, False, False, "", 0))
                   for s, line in [("stdout", b"ab"), ("stderr", b"cde"), ("stdout", b""), ("stderr", b"f")])
    dec = FrameDecoder()
    dec.decode(buf)
    assert dec.counts == (2, 2, 2, 4)
