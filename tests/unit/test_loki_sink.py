"""The Loki sink and its shared batcher against the protocol-faithful receiver, with real journals in a tmp dir."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.outputs.batching import Backoff
from driver.outputs.loki import codec
from driver.outputs.loki.batcher import Batcher
from driver.outputs.loki.client import LokiClient
from driver.outputs.loki.limits import NS
from driver.outputs.loki.sink import BATCH_BYTES, LokiSink
from tests.support.loki import Fault, LokiReceiver, loki_receiver
from tests.support.sinks import Waits, drain, run
from tests.unit.test_loki_client import settings

NOW = time.time_ns()
LABELS = {"container_name": "app", "host": "h", "filename": "/f.log"}


def batcher_for(url: str, *, waits: Waits | None = None, batch_bytes=1 << 20, batch_wait=1.0, **kw) -> Batcher:
    s = settings(url, **kw)
    return Batcher(LokiClient(s), batch_bytes=batch_bytes, batch_wait=batch_wait, min_backoff=s.min_backoff,
                   max_backoff=s.max_backoff, backoff=Backoff(s.min_backoff, s.max_backoff),
                   sleep=waits or asyncio.sleep)


class Container:
    def __init__(self, tmp: Path, name: str, batcher: Batcher, labels=None, **kw) -> None:
        self.dir = tmp / name
        self.journal = Journal(str(self.dir / "journal"))
        self.store = CursorStore(str(self.dir / "cursors"))
        self.batcher = batcher
        self.kw = kw
        self.labels = dict(LABELS, container_name=name) if labels is None else labels
        self.sink = self.new_sink()

    def new_sink(self) -> LokiSink:
        return LokiSink(self.journal, self.store, self.batcher,
                        None if self.labels == "filtered" else self.labels, container_id="c" * 64, **self.kw)

    def write(self, lines, source="stdout", start=NOW, partial=None):
        data = b""
        for i, line in enumerate(lines):
            entry = (source, start + i, line, False, False, "", 0) if partial is None else partial[i]
            data += encode_entry(entry)
        self.journal.write(data)

    def saved(self) -> dict:
        return json.loads((self.dir / "cursors" / "loki.json").read_text())


def test_every_line_arrives_with_its_labels_and_the_cursor_moves(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"out %d" % i for i in range(3000)])
            c.write([b"err %d" % i for i in range(10)], source="stderr", start=NOW + 5)
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    streams = rx.streams()
    out = streams[(("container_name", "app"), ("filename", "/f.log"), ("host", "h"), ("source", "stdout"))]
    assert [line for _, line, _ in out.entries] == [b"out %d" % i for i in range(3000)]
    err = streams[(("container_name", "app"), ("filename", "/f.log"), ("host", "h"), ("source", "stderr"))]
    assert len(err.entries) == 10
    assert c.sink.stats.acked == 3010 and c.sink.caught_up()
    assert c.saved()["pos"] == c.journal.end and c.saved()["extra"]["acked"] == 3010


def test_one_push_carries_many_containers_streams(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url, batch_wait=3600)
            cs = [Container(tmp_path, f"c{i}", b) for i in range(3)]
            for c in cs:
                c.write([b"line %d" % i for i in range(5)])
            task = asyncio.ensure_future(drain(*cs))
            await rx_wait(lambda: len(b._queue) == 3)
            cs[0].sink.sealed = True  # one container stops: the push goes now, with what the others had
            await task
            await b.close()
            return rx

    rx = run(main())
    assert rx.count() == 15 and len(rx.streams()) == 3
    assert rx.pushes == 1


def test_a_stopped_container_does_not_wait_for_batch_wait(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url, batch_wait=3600)
            c = Container(tmp_path, "app", b)
            c.write([b"last words"])
            task = asyncio.ensure_future(drain(c))
            await rx_wait(lambda: len(b._queue) == 1)
            assert rx.pushes == 0  # waiting for batch-wait, as it should while the container runs
            c.sink.sealed = True  # the FIFO reached EOF
            await task
            await b.close()
            return rx

    assert run(main()).lines() == [b"last words"]


async def rx_wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_entries_of_one_stream_go_in_time_order(tmp_path):
    async def main():
        async with loki_receiver(ordered=True) as rx:  # an ordered Loki would refuse an older entry
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"b", b"a"], partial=[("stdout", NOW + 2, b"b", False, False, "", 0),
                                          ("stdout", NOW + 1, b"a", False, False, "", 0)])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx

    rx = run(main())
    assert rx.lines() == [b"a", b"b"] and rx.statuses == [204]


def test_entries_loki_would_refuse_are_dropped_and_counted_by_reason(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"ok"])
            c.write([b"old"], start=NOW - 8 * 24 * 3600 * NS)
            c.write([b"future"], start=NOW + 3600 * NS)
            c.write([b"x" * 300_000])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.lines() == [b"ok"] and rx.statuses == [204]
    assert dict(c.sink.stats.dropped) == {"greater_than_max_sample_age": 1, "too_far_in_future": 1,
                                          "line_too_long": 1}
    assert c.saved()["extra"]["dropped"]["line_too_long"] == 1


def test_16k_chunks_are_joined_into_one_entry(tmp_path):
    chunks = [("stdout", NOW + i, bytes([65 + i]) * 16384, True, i == 2, "p1", i + 1) for i in range(3)]

    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([x[2] for x in chunks], partial=chunks)
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx

    assert run(main()).lines() == [b"A" * 16384 + b"B" * 16384 + b"C" * 16384]


def test_a_long_line_cut_by_the_batch_limit_goes_whole_in_the_next_batch(tmp_path):
    """The batch's bytes end inside a 40 KB line: the batch ends before its first chunk, and Loki gets one entry."""
    chunks = [("stdout", NOW + 1000 + i, bytes([65 + i]) * 16384, True, i == 2, "p1", i + 1) for i in range(3)]

    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"short %d" % i for i in range(1000)])
            c.sink._limit = c.journal.end + 20_000  # the shorts, the first chunk whole, part of the second
            c.write([x[2] for x in chunks], partial=chunks)
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.lines() == [b"short %d" % i for i in range(1000)] + [b"A" * 16384 + b"B" * 16384 + b"C" * 16384]
    assert c.sink.stats.batches >= 2


def test_a_400_is_final_counted_as_loki_rejected_and_never_resent(tmp_path, caplog):
    async def main():
        # This Loki allows shorter lines than the sink was told: it stores the rest, then answers 400.
        async with loki_receiver() as rx:
            rx.limits.max_line_size = 10
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"short", b"much too long for it", b"tiny"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.lines() == [b"short", b"tiny"]  # the valid part was stored
    assert rx.statuses == [400]  # and the push was not sent again
    assert c.sink.stats.dropped["loki_rejected"] == 3  # the push's lines: which of them Loki kept is unknown
    assert c.saved()["pos"] == c.journal.end
    assert any("max entry size" in getattr(r, "error", "") for r in caplog.records)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_statuses_retry_with_backoff_and_honour_retry_after(tmp_path, status):
    waits = Waits()

    async def main():
        async with loki_receiver() as rx:
            rx.faults.append(Fault(status, times=3, retry_after="7"))
            b = batcher_for(rx.url, waits=waits)
            c = Container(tmp_path, "app", b)
            c.write([b"a", b"b"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.statuses == [status] * 3 + [204]
    assert rx.lines() == [b"a", b"b"]
    assert len(waits.waits) == 3 and all(w >= 7 for w in waits.waits)
    s = c.sink.stats
    assert (s.failures, s.retried, s.forwarded, s.acked, s.statuses[status]) == (3, 6, 8, 2, 3)


def test_backoff_doubles_from_min_up_to_max():
    b = Backoff(0.5, 3.0)
    waits = [b.next() for _ in range(6)]
    assert 0.5 <= waits[0] < 1.0 and 1.0 <= waits[1] < 2.0 and 2.0 <= waits[2] <= 3.0
    assert waits[3:] == [3.0, 3.0, 3.0]
    b.reset()
    assert b.next() < 1.0


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_url_errors_mark_the_output_down_and_keep_the_backlog(tmp_path, status):
    async def main():
        waits = Waits(gated=True)
        async with loki_receiver() as rx:
            rx.faults.append(Fault(status, times=2))
            b = batcher_for(rx.url, waits=waits, **{"loki-max-backoff": "2m"})
            c = Container(tmp_path, "app", b)
            c.write([b"kept"])
            c.sink.sealed = True
            task = asyncio.ensure_future(drain(c))
            await rx_wait(lambda: len(waits.waits) == 1)  # the batcher waits after the first refusal
            assert not b.up and c.sink.saved_pos == 0 and not c.sink.caught_up()  # the backlog is kept
            assert c.sink.stats.statuses[status] == 1 and not c.sink.stats.up
            waits.gate.set()
            await task
            await b.close()
            return rx, waits

    rx, waits = run(main())
    assert waits.waits == [120.0, 120.0]  # retried at loki-max-backoff
    assert rx.lines() == [b"kept"]


def test_413_splits_the_push(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url, batch_wait=3600)
            cs = [Container(tmp_path, f"c{i}", b) for i in range(2)]
            await warm_up(tmp_path, b)
            for c in cs:
                c.write([b"%d" % i * 50 for i in range(200)])
            rx.faults.append(Fault(413, times=1))
            task = asyncio.ensure_future(drain(*cs))
            await rx_wait(lambda: len(b._queue) == 2)  # both parts wait for batch-wait: one push
            for c in cs:
                c.sink.sealed = True
            await task
            await b.close()
            return rx

    rx = run(main())
    assert rx.count() == 401
    assert rx.statuses[1] == 413 and rx.statuses[2:] == [204, 204]  # one push, then one per container


def test_413_alone_reads_smaller_batches(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            await warm_up(tmp_path, b)
            c.write([b"%06d" % i + b"y" * 100 for i in range(3000)])  # ~400 KB of journal: two batches
            rx.faults.append(Fault(413, times=1))
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert sorted(rx.lines())[:-1] == [b"%06d" % i + b"y" * 100 for i in range(3000)]
    assert rx.statuses[1] == 413 and c.sink.stats.dropped == {}
    assert c.sink._limit <= BATCH_BYTES // 2  # half the batch Loki found too large


async def warm_up(tmp_path: Path, b: Batcher) -> None:
    """One line from another container: the batcher is up, sinks read full batches (not probes)."""
    w = Container(tmp_path, "warm-up", b)
    w.write([b"warm"])
    w.sink.sealed = True
    await drain(w)
    assert b.up


def test_connection_closed_and_hang_are_retried(tmp_path):
    waits = Waits()

    async def main():
        async with loki_receiver() as rx:
            rx.close_connections = 2
            b = batcher_for(rx.url, waits=waits, **{"loki-timeout": "200ms"})
            c = Container(tmp_path, "app", b)
            c.write([b"one"])
            c.sink.sealed = True
            await drain(c)
            rx.hang = True
            c.write([b"two"])
            task = asyncio.ensure_future(drain(c))
            await rx_wait(lambda: rx.pushes >= 4)  # the hung push timed out and was sent again
            rx.hang = False
            await task
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.lines() == [b"one", b"two"]
    assert c.sink.stats.statuses[0] >= 3  # no HTTP answer: counted as status 0


def test_tenant_header_and_required_tenant(tmp_path):
    async def main():
        async with loki_receiver(require_tenant=True) as rx:
            b = batcher_for(rx.url, **{"loki-tenant-id": "team-a"})
            c = Container(tmp_path, "app", b)
            c.write([b"for a"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx

    rx = run(main())
    assert rx.lines("team-a") == [b"for a"] and rx.tenant_headers == ["team-a"]


def test_a_filtered_container_is_read_counted_and_not_sent(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b, labels="filtered")
            c.write([b"a", b"b", b"c"])
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c

    rx, c = run(main())
    assert rx.pushes == 0 and c.sink.stats.dropped["filtered"] == 3 and c.sink.caught_up()


def test_a_resend_after_a_kill_is_dropped_by_lokis_duplicate_rule(tmp_path):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b)
            c.write([b"line %d" % i for i in range(100)])
            c.sink.sealed = True
            await drain(c)
            # A kill before the cursor save: a new sink starts from the old position and sends it all again.
            c.store.save(c.sink.cursor, pos=0, extra={})
            c.sink = c.new_sink()
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx

    rx = run(main())
    assert rx.pushes == 2 and rx.count() == 100  # same labels, timestamps and lines: still in the head block


def test_structured_metadata_is_opt_in(tmp_path):
    # A chunk whose sequence does not end in the batch is sent as it is, with its partial ids.
    chunk = [("stdout", NOW + 1, b"first half", True, False, "p9", 1)]

    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            plain = Container(tmp_path, "plain", b)
            c = Container(tmp_path, "app", b, structured_metadata=True)
            for x in (plain, c):
                x.write([b"whole"])
                x.write([b""], partial=chunk)
                x.sink.sealed = True
            await drain(plain, c)
            await b.close()
            return rx

    rx = run(main())
    by_name = {dict(k)["container_name"]: s.entries for k, s in rx.streams().items()}
    assert [md for _, _, md in by_name["plain"]] == [(), ()]  # the driver sends none: neither by default
    assert by_name["app"][0][2] == (("container_id", "c" * 64),)
    assert by_name["app"][1][2] == (("container_id", "c" * 64), ("partial_id", "p9"), ("partial_ordinal", "1"),
                                    ("partial_last", "false"))


def test_counts_survive_a_restart(tmp_path):
    """Every count is a lifetime one saved with the cursor: a new sink continues from exactly what was saved."""
    async def main():
        async with loki_receiver() as rx:
            rx.faults.append(Fault(503, times=1))
            b = batcher_for(rx.url, waits=Waits())
            c = Container(tmp_path, "app", b)
            c.write([b"a", b"b"])
            c.write([b"old"], start=NOW - 30 * 24 * 3600 * NS)
            c.sink.sealed = True
            await drain(c)
            saved = dict(c.sink.saved)
            c.sink = c.new_sink()
            await b.close()
            return c, saved

    c, saved = run(main())
    assert saved == {"acked": 2, "dropped": 0, "dropped_greater_than_max_sample_age": 1, "forwarded": 4,
                     "retried": 2, "failures": 1, "status_503": 1, "status_204": 1}  # the pushes' HTTP statuses
    assert c.sink.saved == saved and c.sink.stats.acked == 2 and c.sink.cursor.pos == c.journal.end


def test_receiver_rejects_framed_snappy_and_missing_content_type():
    import aiohttp
    import cramjam

    async def main():
        async with loki_receiver() as rx:
            body = codec.push_request([codec.stream_bytes('{a="b"}', b"")])
            async with aiohttp.ClientSession() as s:
                r1 = await s.post(rx.url, data=bytes(cramjam.snappy.compress(body)),
                                  headers={"Content-Type": codec.CONTENT_TYPE})
                r2 = await s.post(rx.url, data=codec.compress(body), headers={"Content-Type": ""})
                r3 = await s.post(rx.url, data=codec.compress(b""), headers={"Content-Type": codec.CONTENT_TYPE})
                return r1.status, await r1.text(), r2.status, r3.status

    s1, t1, s2, s3 = run(main())
    assert s1 == 400 and "snappy" in t1
    assert s2 == 400 and s3 == 422


def test_receiver_duplicate_rule_is_lokis():
    rx = LokiReceiver()
    from tests.support.loki import Stream

    s = Stream()
    rx._append(s, 1, b"a", (), "")
    rx._append(s, 1, b"a", (), "")  # equal to the last: dropped
    rx._append(s, 2, b"b", (), "")
    rx._append(s, 1, b"a", (), "")  # in the open head block: dropped
    rx._append(s, 3, b"z" * (256 * 1024), (), "")  # fills and cuts the head block
    rx._append(s, 1, b"a", (), "")  # not the last, not in the head block: stored again
    assert [line[:1] for _, line, _ in s.entries] == [b"a", b"b", b"z", b"a"]
    assert rx._append(s, 3 - 1800 * NS, b"late", (), "") is None  # within the hour behind the newest
    s.highest = 10 * 3600 * NS
    assert "too_far_behind" in rx._append(s, 1, b"late", (), "")


def test_count_only_receiver_counts_without_decoding_messages():
    from tests.support.loki import count_entries

    entries = [("stdout", NOW + i, b"l%d" % i, False, False, "", 0) for i in range(1000)]
    streams = [codec.stream_bytes(f'{{a="{k}"}}', codec.encode_stream(entries[k::3], "stdout")[0]) for k in range(3)]
    assert count_entries(codec.push_request(streams)) == 1000
    with pytest.raises(ValueError):
        count_entries(codec.push_request(streams)[:-3])


def test_build_shares_one_batcher_per_url_and_tenant_and_closes_it_with_the_last_sink(tmp_path):
    from driver.info import LogInfo
    from driver.outputs.loki.batcher import make_batcher
    from driver.outputs.loki.output import Batchers, build
    from tests.unit.test_loki_client import parsed

    def info(cid):
        return LogInfo.from_json({"ContainerID": cid * 64, "ContainerName": f"/{cid}"})

    async def main():
        async with loki_receiver() as rx:
            batchers = Batchers(make_batcher)
            sinks = []
            for cid, tenant in (("a", "t1"), ("b", "t1"), ("c", "t2")):
                d = tmp_path / cid
                opts = parsed({"loki-url": rx.url, "loki-tenant-id": tenant,
                               "loki-relabel-config": "- {action: labeldrop, regex: host}"})
                sinks.append(build(Journal(str(d / "j")), CursorStore(str(d / "c")), info(cid), opts,
                                   log_path=f"/logs/{cid}.log", batchers=batchers, hostname="node"))
            assert sinks[0].batcher is sinks[1].batcher is not sinks[2].batcher
            assert sinks[0]._streams["stdout"] == '{container_name="a", filename="/logs/a.log", source="stdout"}'
            for s in sinks:
                s.journal.write(encode_entry(("stdout", NOW, b"hi", False, False, "", 0)))
                s.sealed = True
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(2) as ex:
                for s in sinks:
                    while await s.step(loop, ex):
                        pass
            shared = sinks[0].batcher
            await sinks[0].aclose()
            assert shared.client._session is not None  # still used by b
            for s in sinks[1:]:
                await s.aclose()
            assert shared.client._session is None and not batchers._by_key
            return rx

    rx = run(main())
    assert rx.count("t1") == 2 and rx.count("t2") == 1


def test_build_refuses_what_loki_would_refuse():
    from driver.info import LogInfo
    from driver.options import OptionError
    from driver.outputs.loki.batcher import make_batcher
    from driver.outputs.loki.output import Batchers, build
    from tests.unit.test_loki_client import parsed

    opts = parsed({"loki-url": "http://l/loki/api/v1/push", "loki-external-labels": "bad-name=x"})
    with pytest.raises(OptionError, match="bad-name"):
        build(None, None, LogInfo.from_json({"ContainerID": "a" * 64}), opts, log_path="/x",
              batchers=Batchers(make_batcher))


def test_counts_are_saved_while_the_batcher_retries_a_push(tmp_path, monkeypatch):
    """Loki away: the batcher retries the push in memory, the sink waits. Its failures still reach the saved
    cursor meanwhile (metrics show saved counts), not only once Loki answers again."""
    import driver.outputs.acked

    monkeypatch.setattr(driver.outputs.acked, "SAVE_COUNTS_EVERY", 0.05)

    async def main():
        async with loki_receiver() as rx:
            rx.faults.append(Fault(503, times=1))
            waits = Waits(gated=True)  # the retry waits until the test lets it go
            b = batcher_for(rx.url, waits=waits)
            c = Container(tmp_path, "app", b)
            c.write([b"a", b"b"])
            c.sink.sealed = True
            delivery = asyncio.ensure_future(drain(c))
            deadline = time.monotonic() + 10
            while c.saved()["extra"].get("failures") != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            saved = c.saved()
            restarted = c.new_sink().saved  # what a restart after a kill now would continue from
            waits.gate.set()
            await delivery
            await b.close()
            return saved, restarted, c

    saved, restarted, c = run(main())
    assert saved["pos"] == 0 and saved["extra"]["failures"] == 1 and saved["extra"]["forwarded"] == 2
    assert (restarted["failures"], restarted["forwarded"], restarted["acked"]) == (1, 2, 0)
    assert c.sink.saved["acked"] == 2 and c.sink.saved["failures"] == 1


# ---- the direct way: ordinary frames encoded in C without decoding them into entries ------------------------
def test_ordinary_frames_go_without_decoding_them_into_entries(tmp_path, monkeypatch):
    async def main():
        async with loki_receiver() as rx:
            b = batcher_for(rx.url)
            c = Container(tmp_path, "app", b, structured_metadata=True)
            decoded = []
            monkeypatch.setattr(c.sink.decoder, "decode", lambda *a, **kw: decoded.append(1) or ([], 0))
            c.write([b"out %d" % i for i in range(3000)])  # a probe's batch, then a full one
            c.write([b"err %d" % i for i in range(10)], source="stderr", start=NOW + 3000)
            c.sink.sealed = True
            await drain(c)
            await b.close()
            return rx, c, decoded

    rx, c, decoded = run(main())
    assert decoded == []  # each line cost no Python tuple (~0.5 us per short line)
    streams = {dict(k)["source"]: s.entries for k, s in rx.streams().items()}
    assert [line for _, line, _ in streams["stdout"]] == [b"out %d" % i for i in range(3000)]
    assert [line for _, line, _ in streams["stderr"]] == [b"err %d" % i for i in range(10)]
    assert {md for _, _, md in streams["stdout"]} == {(("container_id", "c" * 64),)}
    assert c.sink.stats.acked == 3010 and c.saved()["pos"] == c.journal.end
    assert len(rx.statuses) >= 2  # more than one batch went the direct way


def _content(kind: str) -> bytes:
    """Journal bytes for the comparison below."""
    lines = [("stderr" if i % 5 == 0 else "stdout", NOW + i, b"line %d" % i, False, False, "", 0) for i in range(3000)]
    refused = [("stdout", NOW - 8 * 24 * 3600 * NS, b"old", False, False, "", 0),
               ("stderr", NOW + 3600 * NS, b"future", False, False, "", 0),
               ("stdout", NOW + 5000, b"x" * 300_000, False, False, "", 0)]
    if kind == "ordinary":
        return b"".join(map(encode_entry, lines))
    if kind == "refused":  # entries Loki would refuse, between ordinary ones
        return b"".join(map(encode_entry, lines[:100] + refused + lines[100:]))
    if kind == "out of order":
        return b"".join(map(encode_entry, lines[:10] + [("stdout", NOW - 1, b"late", False, False, "", 0)]))
    if kind == "chunks":
        chunks = [("stdout", NOW + 9000, b"c" * 16384, True, i == 1, "p", i + 1) for i in range(2)]
        return b"".join(map(encode_entry, lines[:10] + chunks + lines[10:20]))
    if kind == "garbage":
        return b"".join(map(encode_entry, lines[:10])) + b"\x00\x00\x00\x05junk!" + encode_entry(lines[10])
    assert kind == "torn tail"
    return b"".join(map(encode_entry, lines[:10])) + encode_entry(lines[10])[:-3]


@pytest.mark.parametrize("structured_metadata", [False, True])
@pytest.mark.parametrize("kind, direct", [("ordinary", True), ("refused", True), ("out of order", False),
                                          ("chunks", False), ("garbage", False), ("torn tail", False)])
def test_the_direct_way_makes_the_batch_the_decoded_way_makes(tmp_path, monkeypatch, kind, direct,
                                                               structured_metadata):
    b = batcher_for("http://127.0.0.1:9/loki/api/v1/push")
    made = {}
    for way in ("direct", "decoded"):
        c = Container(tmp_path, way, b, labels=LABELS, structured_metadata=structured_metadata, now_ns=lambda: NOW)
        c.journal.write(_content(kind))
        c.sink.sealed = True
        if way == "direct":
            assert (c.sink._direct_batch(0, BATCH_BYTES) is not None) == direct
        else:
            monkeypatch.setattr(codec, "_c_encode_frames", None)
        batch = c.sink._prepare(BATCH_BYTES)
        part = batch.part
        made[way] = (batch.start, batch.end, batch.lines, batch.dropped,
                     part and ([(labels, bytes(e)) for labels, e in part.streams], part.entries, part.size,
                               part.urgent))
    assert made["direct"] == made["decoded"]
