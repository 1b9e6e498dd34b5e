"""Documents straight from journal frames in C (_encode.c's encode_frames, DocumentTemplate.frames_documents)
against the decoded way (FrameDecoder, merge_partials_at, DocumentTemplate.documents_pure): the same bulk bytes
for any frames, and the same bodies on the wire when a 413 splits them or gzip packs them."""

from __future__ import annotations

import asyncio
import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import speedups
from driver.frames import FrameDecoder, encode_entry
from driver.journal import CursorStore, Journal
from driver.outputs.batching import Backoff
from driver.outputs.elasticsearch import codec, formats
from driver.outputs.elasticsearch.batcher import Batcher, Part
from driver.outputs.elasticsearch.client import BulkResult, Outcome
from driver.outputs.elasticsearch.sink import EsSink
from driver.partials import merge_partials_at

pytestmark = pytest.mark.skipif(speedups.encode_es_frames is None,
                                reason="driver/outputs/elasticsearch/_encode.c not built")
HOUR = 3600 * 10**9
T0 = 1_764_633_600 * 10**9 - 2 * HOUR


def template(ids: bool, attrs: dict[str, str], index: str = "logs-%{+yyyy.MM.dd.HH}") -> codec.DocumentTemplate:
    f = codec.container_fields(container_id="c" * 64, container_name="/w", image="app:1", labels={"a.b": "%s é"},
                               host_name="h", agent_name="h", agent_version="0.1.0", attrs=attrs)
    values = codec.format_fields(f)
    return codec.DocumentTemplate(formats.parse(index).render(values, lower=True), formats.parse("p%").render(values),
                                  f, "0123456789abcdef-" + "c" * 64 + "-" if ids else None)


def reference(t: codec.DocumentTemplate, frames: bytes, base: int) -> list[bytes]:
    """The decoded way, as EsSink._batch goes it."""
    offsets: list[int] = []
    entries, _ = FrameDecoder().decode(frames, final=True, offsets=offsets)
    entries, offsets = merge_partials_at(entries, [base + at for at in offsets], 1 << 20)
    return t.documents_pure(entries, offsets)


line = st.one_of(
    st.binary(max_size=120),  # invalid UTF-8 and every control byte
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),  # unicode (lone surrogates too)
    st.sampled_from([b"", b"\x00\x1f\x7f", b'"\\<>&', "\u2028\u2029é😀".encode(), b"\r\n\t", b"%s%d%%"]),
)
near = st.integers(0, 3 * HOUR).map(lambda t: T0 + t)  # a few hours: several targets
def weighted(*pairs):
    """One of the strategies, each drawn ``weight`` times as often (one_of draws its alternatives evenly)."""
    table = [s for weight, s in pairs for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


times = weighted((8, near), (1, st.integers(0, 10**9 * 86400 * 20000)), (1, st.just(-1)))  # -1: the decoded way's
plain = st.tuples(st.sampled_from(["stdout", "stderr"]), times, line).map(lambda e: ("plain", e))
chunk = st.tuples(st.sampled_from(["stdout", "stderr"]), times, line, st.booleans(), st.sampled_from(["p", "q"]),
                  st.integers(1, 3)).map(lambda e: ("chunk", e))
garbage = st.binary(min_size=1, max_size=9).map(lambda b: ("garbage", b))
frames = st.lists(weighted((30, plain), (1, chunk), (1, garbage)), max_size=30)  # mostly plain: C's share
attrs = st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)


def encode(items) -> tuple[bytes, bool]:
    """The frames' bytes, and whether every one is ordinary (C takes all of those)."""
    out, ordinary = [], True
    for kind, x in items:
        if kind == "plain":
            source, t, text = x
            out.append(encode_entry((source, t, text, False, False, "", 0)))
            ordinary &= t >= 0 and len(out[-1]) > 4
        elif kind == "chunk":
            source, t, text, last, pid, ordinal = x
            out.append(encode_entry((source, t, text, True, last, pid, ordinal)))
            ordinary = False
        else:
            out.append(x)
            ordinary = False
    return b"".join(out), ordinary


@given(frames, st.booleans(), attrs, st.integers(0, 1 << 40), st.integers(0, 8))
def test_c_takes_a_prefix_of_whole_frames_and_writes_the_reference_bytes(items, ids, extra, base, cut):
    t = template(ids, extra)
    data, ordinary = encode(items)
    data = data[:len(data) - cut] if cut < len(data) else data  # a torn last frame: not taken yet
    used, docs = t.frames_documents(data, base)
    expected = reference(t, data[:used], base)
    assert docs.body == b"".join(expected)
    assert list(docs) == expected and [docs.size(i) for i in range(len(docs))] == list(map(len, expected))
    if ordinary and not cut:
        assert used == len(data)


def test_documents_cut_out_again_as_they_were():
    t = template(True, {})
    data = b"".join(encode_entry(("stdout", T0 + i * HOUR // 2, b"l%d" % i, False, False, "", 0)) for i in range(9))
    used, docs = t.frames_documents(data, 100)  # across hours: pieces joined
    expected = reference(t, data, 100)
    assert used == len(data) and list(docs) == expected
    assert docs.joined([0, 1, 3, 4, 5, 8]) == b"".join(expected[i] for i in [0, 1, 3, 4, 5, 8])
    assert docs[-1] == expected[-1] and codec.Documents.of(expected).body == docs.body


class Sent:
    """A client that keeps each bulk body (gunzipped when gzip is on, as the cluster reads it) and answers
    413 to any over ``limit`` bytes."""

    url = "fake"

    def __init__(self, limit: int, gzip_on: bool) -> None:
        self.limit, self.gzip_on, self.bodies = limit, gzip_on, []

    async def bulk(self, body, documents: int) -> BulkResult:
        body = b"".join(body) if isinstance(body, list) else body  # the batcher hands its pieces over
        if self.gzip_on:
            body = gzip.decompress(gzip.compress(body, 1))
        if len(body) > self.limit:
            return BulkResult(Outcome.SPLIT, 413, message="too large")
        self.bodies.append(body)
        return BulkResult(Outcome.ANSWERED, 200)

    async def close(self) -> None:
        pass


def drain_bodies(tmp: Path, data: bytes, c_on: bool, limit: int, gzip_on: bool, monkeypatch) -> list[bytes]:
    monkeypatch.setattr(codec, "_encode_frames", speedups.encode_es_frames if c_on else None)
    monkeypatch.setattr(codec, "_encode_documents", speedups.encode_es_documents if c_on else None)
    t = template(True, {"k": "v"})
    journal = Journal(str(tmp / "journal"))
    journal.write(data)
    client = Sent(limit, gzip_on)

    async def main():
        b = Batcher(client, bulk_bytes=5 << 20, batch_wait=0, backoff_init=0.01, backoff_max=0.1,
                    backoff=Backoff(0.01, 0.1))
        sink = EsSink(journal, CursorStore(str(tmp / "cursors")), b, t, container_id="c" * 64)
        sink.sealed = True
        loop = asyncio.get_running_loop()
        while await sink.step(loop, None):
            pass
        await b.close()
        assert sink.caught_up()

    asyncio.run(asyncio.wait_for(main(), 60))
    return client.bodies


@pytest.mark.parametrize("gzip_on", [False, True])
def test_a_413_split_and_gzip_send_the_same_bodies_as_the_decoded_way(tmp_path, monkeypatch, gzip_on):
    """Frames with a chunked line and garbage among plain ones: C takes what it can, the rest goes decoded."""
    entries = [("stdout", T0 + i, b"line %d \xff\x01" % i, False, False, "", 0) for i in range(400)]
    entries[150:150] = [("stderr", T0 + 150, b"a" * 300, True, i == 2, "p", i + 1) for i in range(3)]
    frames = list(map(encode_entry, entries))
    frames.insert(300, b"\x00\x00\x00\x03abc")  # not a LogEntry: the decoder steps over it
    data = b"".join(frames)
    c_bodies = drain_bodies(tmp_path / "c", data, True, 20_000, gzip_on, monkeypatch)
    py_bodies = drain_bodies(tmp_path / "py", data, False, 20_000, gzip_on, monkeypatch)
    assert len(c_bodies) > 1 and all(len(b) <= 20_000 for b in c_bodies)  # split
    assert b"".join(c_bodies) == b"".join(py_bodies)
    docs = b"".join(c_bodies).split(b"\n")
    assert len(docs) == 2 * 401 + 1  # every line once (the chunks joined into one)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=50)
@given(frames, st.one_of(st.just(1 << 20), st.integers(64, 4096)))
def test_the_sink_sends_the_decoded_ways_bytes_whatever_the_batch_limit(items, limit):
    """Chunks are joined within a batch, so where batches end changes what a chunked line becomes when its
    chunks are far apart: with small batches, only plain lines and garbage."""
    if limit < 1 << 20:
        items = [x for x in items if x[0] != "chunk"]
    data, _ = encode(items)
    with tempfile.TemporaryDirectory() as tmp:
        mp = pytest.MonkeyPatch()
        try:
            bodies = {}
            for c_on in (True, False):
                root = Path(tmp) / str(c_on)
                journal = Journal(str(root / "journal"))
                journal.write(data)
                b = Batcher(Sent(1 << 30, False), bulk_bytes=5 << 20, batch_wait=0, backoff_init=0.01,
                            backoff_max=0.1)
                mp.setattr(codec, "_encode_frames", speedups.encode_es_frames if c_on else None)
                sink = EsSink(journal, CursorStore(str(root / "cursors")), b, template(True, {}),
                              container_id="c" * 64)
                sink.sealed = True
                got = []
                while (batch := sink._prepare(limit)) is not None:
                    if batch.part is not None:
                        got.append(batch.part.docs.body)
                bodies[c_on] = b"".join(got)
            assert bodies[True] == bodies[False]
        finally:
            mp.undo()


def test_a_part_of_a_list_of_documents_is_documents():
    part = Part([b"a\n", b"bc\n"], None)
    assert isinstance(part.docs, codec.Documents) and part.size == 5 and part.docs[1] == b"bc\n"
