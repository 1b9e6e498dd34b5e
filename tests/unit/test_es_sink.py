"""The Elasticsearch sink and its shared batcher against the protocol-faithful bulk receiver
(tests/support/elasticsearch.py), with real journals in a tmp dir: status rules, 413 splits, per-item retries,
409 duplicates after a resend, final drops."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.options import parse_options
from driver.outputs.batching import Backoff
from driver.outputs.elasticsearch import codec, formats
from driver.outputs.elasticsearch.batcher import Batcher
from driver.outputs.elasticsearch.client import EsClient
from driver.outputs.elasticsearch.options import settings_from
from driver.outputs.elasticsearch.sink import EsSink
from tests.support.elasticsearch import Credentials, Fault, ItemFault, bulk_receiver
from tests.support.sinks import Waits, drain, run

NOW = time.time_ns()
INDEX = "logs-docker-default"


def settings(url: str, **opts):
    return settings_from(parse_options({"hosts": url, "index": INDEX, **opts}))


def batcher_for(url: str, *, waits: Waits | None = None, bulk_bytes=5 << 20, batch_wait=0.05, **opts) -> Batcher:
    s = settings(url, **opts)
    return Batcher(EsClient(s), bulk_bytes=bulk_bytes, batch_wait=batch_wait, backoff_init=0.01,
                   backoff_max=0.1, backoff=Backoff(0.01, 0.1), sleep=waits or asyncio.sleep)


class Container:
    def __init__(self, tmp: Path, name: str, batcher: Batcher, *, ids: bool = True, index: str = INDEX) -> None:
        self.dir = tmp / name
        self.id = name.ljust(64, "0")
        self.journal = Journal(str(self.dir / "journal"))
        self.store = CursorStore(str(self.dir / "cursors"))
        self.batcher = batcher
        f = codec.container_fields(container_id=self.id, container_name=f"/{name}", image="app:1", labels={},
                                   host_name="h", agent_name="h", agent_version="0.1.0")
        self.template = codec.DocumentTemplate(formats.parse(index).render(codec.format_fields(f), lower=True),
                                               None, f, f"{self.journal.incarnation}-{self.id}-" if ids else None)
        self.sink = self.new_sink()

    def new_sink(self) -> EsSink:
        return EsSink(self.journal, self.store, self.batcher, self.template, container_id=self.id)

    def write(self, lines, source="stdout", start=NOW):
        self.journal.write(b"".join(encode_entry((source, start + i, line, False, False, "", 0))
                                    for i, line in enumerate(lines)))

    def saved(self) -> dict:
        return json.loads((self.dir / "cursors" / "elasticsearch.json").read_text())


def messages(rx, target=INDEX) -> list[str]:
    return [s["message"] for s in rx.cluster.sources(target)]


def test_every_line_is_one_document_in_order_and_the_cursor_moves(tmp_path):
    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"out %d" % i for i in range(3000)])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert messages(rx) == [f"out {i}" for i in range(3000)]
    assert INDEX in rx.cluster.data_streams  # a logs-*-* name: a data stream, written with create
    assert c.sink.stats.indexed == 3000 and c.sink.caught_up()
    assert c.saved()["pos"] == c.journal.end and c.saved()["extra"]["more"]["indexed"] == 3000
    assert all(q.get("filter_path") == codec.FILTER_PATH for q in rx.queries)


def test_a_resend_after_a_lost_answer_is_counted_as_duplicates_not_indexed_twice(tmp_path):
    """The cluster indexed the documents but the answer never came (a closed connection after the write is
    modelled by answering, then forgetting the cursor: the plugin was killed before saving it)."""

    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"line %d" % i for i in range(500)])
            c.sink.sealed = True
            await drain(c)
            # A kill before the cursor save: the restarted sink reads the same journal bytes again.
            c.store.save(c.sink.cursor, pos=0, extra={})
            c.write([b"new %d" % i for i in range(5)], start=NOW + 1000)
            c.sink = c.new_sink()
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.cluster.count(INDEX) == 505 and max(rx.cluster.ids(INDEX).values()) == 1
    assert c.sink.stats.duplicates == 500 and c.sink.stats.indexed == 5
    assert c.sink.saved["duplicates"] == 500 and c.sink.saved["acked"] == 505  # lifetime, as saved
    assert not c.sink.stats.dropped


def test_whole_request_failures_are_retried_with_backoff_and_nothing_is_lost(tmp_path):
    waits = Waits()

    async def main():
        async with bulk_receiver() as rx:
            rx.faults = [Fault(429, 2), Fault(503, 1), Fault(401, 1), Fault(403, 1, "security_exception")]
            rx.close_connections = 1
            b = batcher_for(rx.url, waits=waits)
            c = Container(tmp_path, "app", b)
            c.write([b"line %d" % i for i in range(100)])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert messages(rx) == [f"line {i}" for i in range(100)]
    assert len(waits.waits) == 6 and c.sink.stats.failures == 6 and c.sink.stats.retried == 600
    assert {k: v for k, v in c.sink.stats.statuses.items()} == {0: 1, 429: 2, 503: 1, 401: 1, 403: 1, 200: 1}
    assert c.sink.stats.indexed == 100 and not c.sink.stats.dropped


def test_only_the_items_refused_for_now_go_again(tmp_path):
    waits = Waits()

    async def main():
        async with bulk_receiver() as rx:
            rx.cluster.item_faults = [ItemFault(429, times=3, match=lambda s, _id: s["message"].endswith("7")),
                                      ItemFault(503, times=1, match=lambda s, _id: s["message"] == "line 50")]
            b = batcher_for(rx.url, waits=waits)
            c = Container(tmp_path, "app", b)
            c.write([b"line %d" % i for i in range(100)])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert sorted(messages(rx)) == sorted(f"line {i}" for i in range(100))
    assert max(rx.cluster.ids(INDEX).values()) == 1 and rx.cluster.duplicates == 0  # nothing indexed twice
    assert c.sink.stats.forwarded == 104 and c.sink.stats.retried == 4 and waits.waits
    assert c.sink.stats.indexed == 100


def test_document_errors_are_final_counted_by_type_and_the_rest_is_indexed(tmp_path, caplog):
    async def main():
        async with bulk_receiver() as rx:
            rx.cluster.item_faults = [
                ItemFault(400, "mapper_parsing_exception", times=None, match=lambda s, _id: s["message"] == "bad 1"),
                ItemFault(400, "document_parsing_exception", times=None, match=lambda s, _id: s["message"] == "bad 2"),
            ]
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"ok 0", b"bad 1", b"bad 2", b"ok 3"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert messages(rx) == ["ok 0", "ok 3"]
    assert dict(c.sink.stats.dropped) == {"mapper_parsing_exception": 1, "document_parsing_exception": 1}
    assert c.sink.saved["dropped_mapper_parsing_exception"] == 1 and c.sink.caught_up()
    warned = [r for r in caplog.records if "rejected a document for good" in r.getMessage()]
    assert len(warned) == 1 and warned[0].id.startswith(c.journal.incarnation)  # once, throttled, with its id


def test_413_halves_the_request_and_a_single_document_over_the_limit_is_final(tmp_path):
    async def main():
        async with bulk_receiver(max_content_length=20_000) as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"x%03d" % i + b"." * 100 for i in range(300)] + [b"huge " + b"y" * 30_000] + [b"last"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c, b

    rx, c, b = run(main())
    assert messages(rx) == [f"x{i:03d}" + "." * 100 for i in range(300)] + ["last"]
    assert dict(c.sink.stats.dropped) == {codec.TOO_LARGE: 1} and c.sink.stats.indexed == 301
    assert 413 in rx.statuses and b.bulk_bytes < 20_000  # later requests start below the limit


def test_a_read_only_cluster_keeps_the_lines_until_it_takes_writes_again(tmp_path):
    waits = Waits()

    async def main():
        async with bulk_receiver() as rx:
            rx.cluster.read_only = True
            b = batcher_for(rx.url, waits=waits)
            c = Container(tmp_path, "app", b)
            c.write([b"line %d" % i for i in range(10)])
            c.sink.sealed = True
            task = asyncio.ensure_future(drain(c))
            deadline = time.monotonic() + 20
            while len(waits.waits) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert c.sink.saved_pos == 0 and not c.sink.up  # nothing settled, nothing lost, output down
            assert "cluster_block_exception" in c.sink.stats.last_error  # what the status view shows
            rx.cluster.read_only = False
            await task
            await b.close()
            return rx, c

    rx, c = run(main())
    assert messages(rx) == [f"line {i}" for i in range(10)] and c.sink.up
    assert c.sink.stats.statuses[403] >= 3


def test_hosts_fail_over_and_credentials_reach_the_cluster(tmp_path):
    async def main():
        async with bulk_receiver(credentials=Credentials(users={"elastic": "pw"}, api_keys={"k1": "s3cret"})) as rx:
            dead = "http://127.0.0.1:9"  # discard port: connections refused
            b = batcher_for(f"{dead},{rx.url}", user="elastic", password="pw")
            c = Container(tmp_path, "a", b)
            c.write([b"one"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            b2 = batcher_for(rx.url, api_key="k1:s3cret", **{"es-compress": "true"})
            c2 = Container(tmp_path, "b", b2)
            c2.write([b"two"])
            c2.sink.sealed = True
            await drain(c2)
            await b2.close()
            return rx, c

    rx, c = run(main())
    assert sorted(messages(rx)) == ["one", "two"]
    assert c.sink.stats.statuses[0] == 1  # the dead host, then the next one
    assert rx.encodings[-1] == "gzip" and rx.auth_headers[-1].startswith("ApiKey ")


def test_without_document_ids_elasticsearch_picks_them(tmp_path):
    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b, ids=False)
            c.write([b"a", b"b"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx

    rx = run(main())
    assert messages(rx) == ["a", "b"] and all(not i.startswith("app") for i in rx.cluster.ids(INDEX))


def test_16k_chunks_are_joined_into_one_message_named_by_the_first_chunks_offset(tmp_path):
    chunk = b"a" * 16384

    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.journal.write(encode_entry(("stdout", NOW, b"before", False, False, "", 0)))
            first = c.journal.end
            c.journal.write(b"".join(encode_entry(("stdout", NOW + 1 + i, chunk, True, i == 2, "pid", i + 1))
                                     for i in range(3)))
            c.write([b"after"], start=NOW + 10)
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c, first

    rx, c, first = run(main())
    docs = rx.cluster.docs(INDEX)
    assert [len(d.source["message"]) for d in docs] == [6, 3 * 16384, 5]
    assert docs[1].id == f"{c.journal.incarnation}-{c.id}-{first}" and docs[1].source["event"]["sequence"] == first
    assert c.sink.stats.indexed == c.sink.stats.acked == 5  # in lines, as received: 3 documents of 5 frames


def test_a_long_line_cut_by_the_batch_limit_goes_whole_in_the_next_batch(tmp_path):
    """A batch (taken the decoded way: it starts with a 40 KB line's chunks) ends inside the next 40 KB line: it
    ends before that line's first chunk, so Elasticsearch gets it as one message, not a chunk and a join of the
    other two."""

    def line(byte: bytes, at: int) -> bytes:
        return b"".join(encode_entry(("stdout", at + i, byte * 16384, True, i == 2, f"p{at}", i + 1))
                        for i in range(3))

    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"before"])  # the first batch (C stops before a chunk); the long lines start the next
            first = line(b"a", NOW + 10)
            c.journal.write(first + line(b"b", NOW + 20))
            c.write([b"after"], start=NOW + 30)
            c.sink._limit = len(first) + 20_000  # the first line, the next one's first chunk, part of its second
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert messages(rx) == ["before", "a" * 3 * 16384, "b" * 3 * 16384, "after"]
    assert c.sink.stats.indexed == 8 and c.sink.stats.batches >= 3


def test_counts_are_lifetime_counts_saved_with_the_cursor(tmp_path):
    async def main():
        async with bulk_receiver() as rx:
            rx.cluster.item_faults = [ItemFault(400, "mapper_parsing_exception", times=None,
                                                match=lambda s, _id: s["message"] == "bad")]
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"a", b"bad", b"b"])
            c.sink.sealed = True
            await drain(c)
            restarted = c.new_sink()  # a plugin restart: counts come back from the cursor
            c.sink = restarted
            before = dict(restarted.saved)
            c.write([b"c"], start=NOW + 10)
            restarted.sealed = True
            await drain(c)
            await b.close()
            return before, restarted, c

    before, restarted, c = run(main())
    assert (restarted.stats.indexed, restarted.stats.acked) == (3, 3)
    assert restarted.stats.dropped["mapper_parsing_exception"] == 1
    assert (before["indexed"], before["acked"], before["dropped_mapper_parsing_exception"]) == (2, 2, 1)
    after = restarted.saved  # lifetime counts, never below what was shown before the restart
    assert (after["indexed"], after["acked"], after["status_200"]) == (3, 3, 2)
    extra = c.saved()["extra"]
    assert (extra["acked"], extra["dropped"]) == (3, {"mapper_parsing_exception": 1})
    assert (extra["more"]["indexed"], extra["more"]["duplicates"]) == (3, 0)


def test_a_live_containers_lines_gather_into_one_bulk_instead_of_one_per_arrival(tmp_path):
    """A busy container's lines arrive a few at a time: the sink lets them gather (es-batch-wait bounds the wait)
    before it takes a batch, so they go as one bulk with one cursor save instead of a bulk per arrival. Arrivals
    come in the sink's own wait here (its sleep is the test's), so the figures do not depend on timing."""

    async def main():
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url, batch_wait=1.0)
            c = Container(tmp_path, "app", b)
            waits = []

            async def arriving(seconds: float) -> None:  # dockerd writes 4 times 5 lines while the sink waits
                waits.append(seconds)
                for n in range(1, 5):
                    c.write([b"line %d" % (n * 10 + k) for k in range(5)], start=NOW + n * 10)
                    await asyncio.sleep(0)

            c.sink = EsSink(c.journal, c.store, b, c.template, container_id=c.id, sleep=arriving)
            loop, executor = asyncio.get_running_loop(), ThreadPoolExecutor(2)
            c.write([b"probe"])
            assert await c.sink.step(loop, executor)  # the first batch probes the cluster: no wait
            assert waits == [] and rx.requests == 1
            c.write([b"line 0"])
            assert await c.sink.step(loop, executor)
            first = (rx.requests - 1, c.sink.stats.indexed - 1, c.saved()["pos"] == c.journal.end)
            c.sink.sealed = True  # stopped: the rest goes without waiting
            while await c.sink.step(loop, executor):
                pass
            await b.close()
            return first, waits, rx, c

    (requests, indexed, saved_to_end), waits, rx, c = run(main())
    assert (requests, indexed, saved_to_end) == (1, 21, True)  # the first line and the 4 arrivals' 20 in one bulk
    assert waits == [0.05]  # one wait of the live sink; none once its container stopped
    assert len(messages(rx)) == 22 and rx.requests == 2


def test_a_backlog_or_a_stopped_container_does_not_wait_to_gather(tmp_path):
    """With a full batch waiting (a backlog), or the container stopped, or es-batch-wait=0, batches go at once,
    the next one read ahead while a backlog's travels."""

    async def main(batch_wait: float, sealed: bool, lines: int):
        async with bulk_receiver() as rx:
            b = batcher_for(rx.url, batch_wait=batch_wait)
            c = Container(tmp_path / f"{batch_wait}-{sealed}-{lines}", "app", b)
            waits = []

            async def no_wait(seconds: float) -> None:
                waits.append(seconds)

            c.sink = EsSink(c.journal, c.store, b, c.template, container_id=c.id, sleep=no_wait)
            c.write([b"up"])
            await c.sink.step(asyncio.get_running_loop(), ThreadPoolExecutor(1))  # the probe: the cluster is up
            c.write([b"x" * 100] * lines)
            c.sink.sealed = sealed
            loop, executor = asyncio.get_running_loop(), ThreadPoolExecutor(2)
            while not c.sink.caught_up():
                await c.sink.step(loop, executor)
            await b.close()
            return waits, c.sink.stats.indexed - 1, rx.requests - 1

    assert run(main(1.0, False, 6000)) == ([0.05], 6000, 3)  # 2 full batches, then the last one waited
    assert run(main(1.0, True, 10)) == ([], 10, 1)
    assert run(main(0.0, False, 10)) == ([], 10, 1)
