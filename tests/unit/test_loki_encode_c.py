"""The C Loki entry encoder against its Python reference (codec.encode_stream_reference)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import speedups
from driver.frames import encode_entry
from driver.outputs.loki import codec
from tests.support.loki_proto import LokiPushRequest

pytestmark = pytest.mark.skipif(speedups.encode_loki_stream is None or speedups.encode_loki_frames is None
                                or speedups.decode_frames is None, reason="the C modules are not built")
INT64_MAX = codec.INT64_MAX

entry = st.tuples(st.sampled_from(["stdout", "stderr", "x"]), st.integers(0, INT64_MAX), st.binary(max_size=3000),
                  st.booleans(), st.booleans(), st.text(max_size=4), st.integers(0, 5))
bound = st.integers(-1, INT64_MAX)


@given(st.lists(entry, max_size=40), st.sampled_from(["stdout", "stderr"]), st.binary(max_size=50), bound, bound,
       st.integers(0, 4000))
def test_c_matches_the_reference(entries, source, md, oldest, newest, longest):
    got = speedups.encode_loki_stream(entries, source, md, oldest, newest, longest)
    assert got == codec.encode_stream_reference(entries, source, md, oldest, newest, longest)


def test_output_decodes_as_a_stream():
    entries = [("stdout", 1_700_000_000_000_000_000 + i, b"line %d" % i, False, False, "", 0) for i in range(300)]
    encoded, sent, size, *_ = speedups.encode_loki_stream(entries, "stdout", b"", -1, INT64_MAX, INT64_MAX)
    req = LokiPushRequest.FromString(codec.stream_bytes('{a="b"}', encoded))
    assert [e.line for e in req.streams[0].entries] == [e[2] for e in entries] and sent == 300


@pytest.mark.parametrize("bad", [
    [["stdout", 1, b"list, not tuple"]],
    [("stdout", -1, b"negative time")],
    [("stdout", 2**64, b"time too large")],
    [("stdout", 1, "str line")],
    [("stdout", 1)],
    [(None, 1, b"x")],
])
def test_declines_what_the_decoder_does_not_make(bad):
    assert speedups.encode_loki_stream(bad, "stdout", b"", -1, INT64_MAX, INT64_MAX) is None


def test_wrapper_falls_back_to_the_reference():
    bad = [("stdout", -5 * codec.NS, b"before the epoch")]
    assert codec.encode_stream(bad, "stdout") == codec.encode_stream_reference(bad, "stdout")



# ---- encode_frames: journal frames straight to streams, against decode_frames then the reference encoder ----
frame_entry = st.tuples(st.sampled_from(["stdout", "stderr"]), st.integers(-(1 << 63), INT64_MAX),
                        st.binary(max_size=300), st.just(False), st.just(False),
                        st.just(""), st.just(0))
odd_frame = st.one_of(
    st.just(b"\x00\x00\x00\x00"),  # an empty LogEntry: FrameDecoder skips it
    st.just(b"\x00\x00\x00\x05garbl"),  # not a LogEntry
    st.just(b"\xff\xff\xff\xff"),  # a length no frame has
    st.builds(lambda t: encode_entry(("stdout", t, b"chunk", True, False, "p", 1)), st.integers(0, INT64_MAX)),
)
frame_stream = st.lists(st.one_of(frame_entry.map(encode_entry), odd_frame), max_size=30)


def frames_reference(data: bytes, md: bytes, oldest: int, newest: int, longest: int) -> tuple:
    """What encode_frames must return: decode_frames' ordinary frames up to the first chunk to join or time
    before 1970, each source's encoded as encode_stream_reference does."""
    offsets: list[int] = []
    entries, stop, _ = speedups.decode_frames(data, 0, offsets)
    k = next((i for i, e in enumerate(entries) if e[3] or e[1] < 0), len(entries))
    if k < len(entries):
        used, declined = offsets[k], True
    else:
        used = stop
        rest = len(data) - stop
        length = int.from_bytes(data[stop:stop + 4], "big") if rest >= 4 else 0
        declined = rest >= 4 and not (0 < length <= 1_000_000 and length > rest - 4)
    taken = entries[:k]
    streams = [(source, *codec.encode_stream_reference(taken, source, md, oldest, newest, longest))
               for source in sorted({e[0] for e in taken})]
    return used, k, declined, streams


@given(frame_stream, st.integers(0, 40), st.binary(max_size=20), bound, bound, st.integers(0, 400))
def test_encode_frames_matches_decoding_then_the_reference(frames, cut, md, oldest, newest, longest):
    data = b"".join(frames)
    data = data[:len(data) - cut] if cut else data  # a torn last frame: still being written
    got = codec.encode_frames(data, md, oldest, newest, longest)
    assert got is not None
    used, count, declined, streams = got
    assert (used, count, declined, [tuple(s) for s in streams]) == frames_reference(data, md, oldest, newest,
                                                                                   longest)


def test_encode_frames_output_decodes_as_the_lines_written():
    now = 1_700_000_000_000_000_000
    entries = [("stderr" if i % 3 == 0 else "stdout", now + i, b"line %d" % i, False, False, "", 0)
               for i in range(500)]
    used, count, declined, streams = codec.encode_frames(b"".join(map(encode_entry, entries)))
    assert count == 500 and not declined and [s[0] for s in streams] == ["stderr", "stdout"]
    for source, encoded, sent, *_ in streams:
        req = LokiPushRequest.FromString(codec.stream_bytes('{a="b"}', encoded))
        assert [e.line for e in req.streams[0].entries] == [e[2] for e in entries if e[0] == source]
        assert sent == len(req.streams[0].entries)
