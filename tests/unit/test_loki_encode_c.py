"""The C Loki entry encoder against its Python reference (codec.encode_stream_reference)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import speedups
from driver.outputs.loki import codec
from tests.support.loki_proto import LokiPushRequest

pytestmark = pytest.mark.skipif(speedups.encode_loki_stream is None, reason="driver/outputs/loki/_encode.c not built")
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

