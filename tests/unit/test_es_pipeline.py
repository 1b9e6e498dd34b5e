"""The Elasticsearch output in a real Pipeline (FIFO → journal → consumers) against the protocol-faithful bulk
receiver: turned on by ``hosts`` alone, its own cursor beside a dead forward destination, every line indexed
once, and a resend after an answer lost in transit gives 409 duplicates, counted, not errors."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from driver.frames import encode_entry
from driver.info import LogInfo
from driver.metrics import detail_families
from driver.options import parse_options
from driver.pipeline import Pipeline
from driver.settings import Settings
from tests.plugin_harness import info_for
from tests.support.elasticsearch import BulkReceiver

LINES = 5000  # several batches of every consumer
CID = "e" * 64


def _refused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


async def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _lose_answers(receiver: BulkReceiver, times: int) -> None:
    """The next ``times`` bulk requests are indexed, then their connection closes before the answer: what a
    network cut or a proxy timeout does after the cluster has written."""
    answer = receiver._answer

    async def indexed_then_cut(request):
        resp = await answer(request)
        if receiver.lost < times:
            receiver.lost += 1
            request.transport.close()
            raise asyncio.CancelledError
        return resp

    receiver.lost = 0
    receiver._answer = indexed_then_cut


@pytest.mark.parametrize("ids", [True, False], ids=["ids", "no-ids"])
def test_elasticsearch_gets_every_line_once_beside_a_dead_forward_and_a_lost_answer_is_duplicates(tmp_path, ids):
    """With es-document-ids=false (Elasticsearch picks ids) the same resend makes second copies: at least once,
    as documented; the ids are what makes it exactly once."""
    settings = Settings(log_root=str(tmp_path / "logs"), state_dir=str(tmp_path / "state"))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # as dockerd holds it
    now = time.time_ns()

    async def run():
        receiver = BulkReceiver()
        url = await receiver.start()
        _lose_answers(receiver, 1)
        info = LogInfo.from_json(info_for(CID, {"fluentd-address": _refused_address(), "fluentd-retry-wait": "50ms",
                                                "hosts": url, "index": "logs-docker-test", "backoff_init": "10ms",
                                                "backoff_max": "50ms", "es-batch-wait": "50ms",
                                                "es-document-ids": str(ids).lower()}))
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=2)
        pipeline = Pipeline(info, parse_options(info.config), settings, executor, loop, on_finished=lambda p: None)
        forward, es = pipeline.outputs
        assert (forward.name, es.name) == ("forward", "elasticsearch")
        pipeline.attach(fifo)
        frames = [encode_entry(("stdout", now + i, b"line %d" % i, False, False, "", 0)) for i in range(LINES)]
        for frame in frames:
            os.write(writer, frame)
        total = sum(map(len, frames))
        try:
            assert await _wait(lambda: es.saved_pos == pipeline.journal.end == total and es.caught_up())
            assert forward.saved["acked"] == 0 and not forward.up  # forward owes everything still
            es.flush()
            counts = dict(es.saved)
            return receiver, counts, es.up, pipeline.journal.incarnation
        finally:
            await pipeline.close(grace=0.2)
            executor.shutdown(wait=True)
            await receiver.stop()

    try:
        receiver, counts, up, incarnation = asyncio.run(run())
    finally:
        os.close(writer)
    cluster = receiver.cluster
    assert receiver.lost == 1 and up
    got = [s["message"] for s in cluster.sources("logs-docker-test")]
    if not ids:
        assert len(got) > LINES and sorted(set(got)) == sorted(f"line {i}" for i in range(LINES))
        assert counts["indexed"] == LINES and len(got) == LINES + counts["retried"] and cluster.duplicates == 0
        return
    assert got == [f"line {i}" for i in range(LINES)]
    assert max(cluster.ids("logs-docker-test").values()) == 1  # every line once
    assert all(i.startswith(f"{incarnation}-{CID}-") for i in cluster.ids("logs-docker-test"))
    # The documents of the lost answer were sent again: 409, counted as duplicates, not errors or drops.
    assert counts["duplicates"] == cluster.duplicates > 0
    assert counts["indexed"] + counts["duplicates"] == counts["acked"] == LINES
    assert counts["retried"] == counts["duplicates"] and counts["failures"] == 1
    assert not [k for k in counts if k.startswith("dropped_")] and counts["dropped"] == 0
    # What the metrics show of it (driver/metrics.py's families for the counts only some outputs report).
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in detail_families({"elasticsearch": Counter(counts), "forward": Counter()})
               for s in fam.samples}
    assert samples[("logbridge_sink_lines_duplicates_total", (("sink", "elasticsearch"),))] == counts["duplicates"]
    assert samples[("logbridge_sink_lines_indexed_total", (("sink", "elasticsearch"),))] == counts["indexed"]
    assert samples[("logbridge_sink_responses_total", (("sink", "elasticsearch"), ("status", "0")))] == 1
    assert samples[("logbridge_sink_responses_total", (("sink", "elasticsearch"), ("status", "200")))] >= 2
    assert not [k for k in samples if ("sink", "forward") in k[1]]  # forward reports none of them
