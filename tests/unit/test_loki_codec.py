"""The Loki push codec, checked by decoding its bytes with the protobuf library (push.proto's field numbers)."""

from __future__ import annotations

import cramjam
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver.outputs.loki import codec
from tests.support.loki_proto import LokiPushRequest, PushRequest

T0 = 1_700_000_000 * codec.NS


def build(streams: dict[str, list[tuple[int, bytes]]], metadata: bytes = b"") -> bytes:
    out = []
    for labels, entries in streams.items():
        buf = bytearray()
        for ts, line in entries:
            codec.append_entry(buf, ts, line, metadata)
        out.append(codec.stream_bytes(labels, buf))
    return codec.push_request(out)


def test_push_request_decodes_with_the_protobuf_library():
    body = build({'{container_name="app", source="stdout"}': [(T0 + 5, b"hello"), (T0 + 6, b"")],
                  '{source="stderr"}': [(T0 + codec.NS * 3, b"x" * 300)]})
    req = PushRequest.FromString(body)
    assert [s.labels for s in req.streams] == ['{container_name="app", source="stdout"}', '{source="stderr"}']
    first = req.streams[0].entries
    assert [(e.timestamp.seconds, e.timestamp.nanos, e.line) for e in first] == [
        (1_700_000_000, 5, "hello"), (1_700_000_000, 6, "")]
    assert req.streams[1].entries[0].timestamp.seconds == 1_700_000_003
    assert req.streams[1].entries[0].timestamp.nanos == 0
    assert req.streams[1].entries[0].line == "x" * 300


def test_structured_metadata_pairs():
    md = codec.metadata_bytes({"container_id": "f" * 64, "partial_id": "p1"})
    req = PushRequest.FromString(build({'{a="b"}': [(T0, b"line")]}, md))
    pairs = [(p.name, p.value) for p in req.streams[0].entries[0].structuredMetadata]
    assert pairs == [("container_id", "f" * 64), ("partial_id", "p1")]


def test_lines_go_as_the_bytes_written():
    # Loki's gogo decoder keeps a string field's bytes; a line that is not UTF-8 must not change on its way.
    line = b"caf\xe9 \xff\x00 end"
    req = LokiPushRequest.FromString(build({'{a="b"}': [(T0, line)]}))
    assert req.streams[0].entries[0].line == line


def test_timestamp_at_the_epoch_and_large_lines():
    req = PushRequest.FromString(build({'{a="b"}': [(0, b"zero"), (T0 + 999_999_999, b"y" * 200_000)]}))
    e0, e1 = req.streams[0].entries
    assert (e0.timestamp.seconds, e0.timestamp.nanos) == (0, 0)
    assert (e1.timestamp.seconds, e1.timestamp.nanos, len(e1.line)) == (1_700_000_000, 999_999_999, 200_000)


@given(st.lists(st.tuples(st.integers(0, 2**62), st.binary(max_size=40000).filter(lambda b: True)),
                max_size=20))
def test_any_entries_round_trip(entries):
    req = LokiPushRequest.FromString(build({'{a="b"}': entries}))
    got = [(e.timestamp.seconds * codec.NS + e.timestamp.nanos, e.line) for e in req.streams[0].entries]
    assert got == entries


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(n):
    from google.protobuf.internal import encoder

    out = []
    encoder._EncodeVarint(out.append, n)
    assert codec.varint(n) == b"".join(out)


def test_compress_is_the_snappy_block_format():
    body = build({'{a="b"}': [(T0 + i, b"line %d" % i) for i in range(1000)]})
    packed = codec.compress(body)
    assert bytes(cramjam.snappy.decompress_raw(packed)) == body
    assert codec.decompress(packed) == body
    with pytest.raises(ValueError, match="snappy"):
        codec.decompress(bytes(cramjam.snappy.compress(body)))  # framed


@pytest.mark.parametrize("value, quoted", [
    ("web", '"web"'),
    ('say "hi"', r'"say \"hi\""'),
    ("C:\\dir", r'"C:\\dir"'),
    ("a\nb\tc", r'"a\nb\tc"'),
    ("\x01\x7f", r'"\x01\x7f"'),
    ("héllo ✓", '"héllo ✓"'),
    ("\u200b", r'"\u200b"'),
])
def test_values_are_quoted_as_go_strconv_quote(value, quoted):
    assert codec.go_quote(value) == quoted


def test_labels_string_is_sorted_prometheus_text():
    assert codec.format_labels({"source": "stdout", "container_name": "app", "host": "h"}) == \
        '{container_name="app", host="h", source="stdout"}'


@given(st.lists(st.tuples(st.integers(0, 2**62), st.binary(max_size=20000)), max_size=30), st.booleans())
def test_batch_encoder_matches_the_one_entry_encoder(entries, with_metadata):
    md = codec.metadata_bytes({"container_id": "abc"}) if with_metadata else b""
    one = bytearray()
    for ts, line in entries:
        codec.append_entry(one, ts, line, md)
    batch = bytearray()
    codec.append_entries(batch, [("stdout", ts, line, False, False, "", 0) for ts, line in entries], md)
    assert batch == one


def test_the_c_encoder_is_used_whatever_is_imported_first():
    # driver.frames imports driver.speedups first, as the plugin does: the C encoder must still be found
    # (where it is built: the extension is optional, so this compares with a fresh import of it).
    import subprocess
    import sys

    code = "import driver.frames; from driver.outputs.loki import codec; print(codec._c_encode_stream is not None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    try:
        import driver.outputs.loki._encode  # noqa: F401
    except ImportError:
        pytest.skip("driver/outputs/loki/_encode.c not built")
    assert out.strip() == "True"
