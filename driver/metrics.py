"""Prometheus view of the accounting: a collector that reads the registry's counters at scrape time.

Nothing on the data path touches prometheus_client: pipelines bump plain ints (driver.stats) and this collector
turns them into metric families when scraped. Per-container series exist only while the container has a pipeline
(it runs, or its journal still has backlog); totals keep the finished containers' counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from driver import __version__
from driver.procmem import pss_bytes
from driver.stats import DROP_REASONS, STREAMS, ContainerStats

STARTED = time.time()


class LogbridgeCollector:
    def __init__(self, registry) -> None:
        self.registry = registry  # driver.registry.Registry

    def collect(self) -> Iterator[Metric]:
        live = list(self.registry.pipelines.values())
        all_stats: list[ContainerStats] = [self.registry.totals()]

        info = GaugeMetricFamily("logbridge_build_info", "logbridge version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "logbridge_uptime_seconds", "seconds since the plugin started", value=time.time() - STARTED
        )
        yield GaugeMetricFamily(
            "logbridge_containers_active", "containers with a pipeline (running or backlog)", value=len(live)
        )
        pss = pss_bytes()
        if pss is not None:
            yield GaugeMetricFamily("logbridge_process_pss_bytes", "the plugin's memory (proportional set size)",
                                    value=pss)

        received = CounterMetricFamily(
            "logbridge_lines_received", "log lines read from dockerd", labels=["stream"]
        )
        received_b = CounterMetricFamily(
            "logbridge_received_bytes", "bytes of log lines read from dockerd", labels=["stream"]
        )
        for stream in STREAMS:
            received.add_metric([stream], sum(s.received_lines[stream] for s in all_stats))
            received_b.add_metric([stream], sum(s.received_bytes[stream] for s in all_stats))
        yield received
        yield received_b
        yield CounterMetricFamily(
            "logbridge_lines_written",
            "lines written to json.log files",
            value=sum(s.lines_written for s in all_stats),
        )
        yield CounterMetricFamily(
            "logbridge_rotations", "json.log rotations", value=sum(s.rotations for s in all_stats)
        )
        dropped = CounterMetricFamily("logbridge_lines_dropped", "lines lost, by reason", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], sum(s.dropped_lines[reason] for s in all_stats))
        yield dropped

        jbytes = GaugeMetricFamily("logbridge_journal_bytes", "bytes held in the container's journal",
                                   labels=["container_id"])
        jmax = GaugeMetricFamily("logbridge_journal_max_bytes", "the container's journal cap (journal-max-size)",
                                 labels=["container_id"])
        jsegs = GaugeMetricFamily("logbridge_journal_segments", "segment files of the container's journal",
                                  labels=["container_id"])
        backlog = GaugeMetricFamily("logbridge_backlog_bytes",
                                    "journal bytes not yet written (json.log) or acknowledged (sinks)",
                                    labels=["container_id", "sink"])
        lag = GaugeMetricFamily("logbridge_sink_lag_seconds", "seconds since the consumer was last caught up",
                                labels=["container_id", "sink"])
        cwritten = CounterMetricFamily("logbridge_container_lines_written", "lines written to json.log, per container",
                                       labels=["container_id"])
        cdropped = CounterMetricFamily("logbridge_container_lines_dropped", "lines lost, per container and reason",
                                       labels=["container_id", "reason"])
        for p in live:
            cid = p.container_id[:12]
            jbytes.add_metric([cid], p.journal.size())
            jmax.add_metric([cid], p.journal.max_bytes)
            jsegs.add_metric([cid], p.journal.segment_count())
            for c in p.consumers:
                backlog.add_metric([cid, c.name], max(0, p.journal.end - c.done_pos))
                lag.add_metric([cid, c.name], p.lag_seconds(c.name))
            cwritten.add_metric([cid], p.stats.lines_written)
            for reason in DROP_REASONS:
                cdropped.add_metric([cid, reason], p.stats.dropped_lines[reason])
        yield from (jbytes, jmax, jsegs, backlog, lag, cwritten, cdropped)
        yield from self._forward_families(live)

    def _forward_families(self, live) -> Iterator[Metric]:
        sinks = [(p.container_id[:12], p.forward) for p in live if p.forward is not None]
        totals = self.registry.finished_forward
        fams = {
            "forwarded": CounterMetricFamily("logbridge_sink_lines_forwarded",
                                             "records written to the aggregator, resends included", labels=["sink"]),
            "acked": CounterMetricFamily("logbridge_sink_lines_acked", "records the aggregator acknowledged",
                                         labels=["sink"]),
            "retried": CounterMetricFamily("logbridge_sink_lines_retried", "records sent again after a failure",
                                           labels=["sink"]),
            "failures": CounterMetricFamily("logbridge_sink_failures", "failed delivery attempts", labels=["sink"]),
        }
        for key, fam in fams.items():
            fam.add_metric(["forward"], sum(s.run_counts()[key] for _, s in sinks) + totals.get(key, 0))
            yield fam
        dropped = CounterMetricFamily("logbridge_sink_lines_dropped", "records a sink lost, by reason",
                                      labels=["sink", "reason"])
        dropped.add_metric(["forward", "journal_cap"],
                           sum(s.run_counts()["dropped"] for _, s in sinks) + totals.get("dropped", 0))
        yield dropped
        up = GaugeMetricFamily("logbridge_sink_up", "1 when the sink's last delivery attempt succeeded",
                               labels=["container_id", "sink"])
        for cid, s in sinks:
            up.add_metric([cid, "forward"], 1 if s.stats.connected else 0)
        yield up


def make_metrics_app(registry) -> web.Application:
    prom = CollectorRegistry(auto_describe=False)
    prom.register(LogbridgeCollector(registry))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(prom)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "containers": len(registry.pipelines)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
