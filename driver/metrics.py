"""Prometheus view of the accounting: a collector that reads the registry's counters at scrape time.

Nothing on the data path touches prometheus_client: pipelines bump plain ints (driver.stats) and this collector
turns them into metric families when scraped. Per-container series exist only while the container has a pipeline
(it runs, or its journal still has backlog); totals keep the finished containers' counts.

Every counter is a lifetime count that never goes below a value already exposed, across restarts and SIGKILLs:
it shows the counts as last saved with the cursors (what a restart continues from), which run behind the live
ones by at most one save (json.log: 1 s; an output: one batch, or 1 s while its client retries).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from driver import __version__, outputs, statefiles
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
            received.add_metric([stream], sum(s.lines_received(stream) for s in all_stats))
            received_b.add_metric([stream], sum(s.bytes_received(stream) for s in all_stats))
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
        yield CounterMetricFamily(
            "logbridge_json_log_write_errors", "json.log writes that failed (not a full disk) and wait to be retried",
            value=sum(s.write_errors for s in all_stats),
        )
        dropped = CounterMetricFamily("logbridge_lines_dropped", "lines lost, by reason", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], sum(s.lines_dropped(reason) for s in all_stats))
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
            saved, _ = p.saved_counts()
            jbytes.add_metric([cid], p.journal.size())
            jmax.add_metric([cid], p.journal.max_bytes)
            jsegs.add_metric([cid], p.journal.segment_count())
            for c in p.consumers:
                backlog.add_metric([cid, c.name], max(0, p.journal.end - c.done_pos))
                lag.add_metric([cid, c.name], p.lag_seconds(c.name))
            cwritten.add_metric([cid], saved.lines_written)
            for reason in DROP_REASONS:
                cdropped.add_metric([cid, reason], saved.lines_dropped(reason))
        yield from (jbytes, jmax, jsegs, backlog, lag, cwritten, cdropped)
        refused = CounterMetricFamily("logbridge_state_save_failures",
                                      "writes of a plugin state file the disk refused (each is retried)",
                                      labels=["file"])
        for name, count in sorted(self.registry.state_files.failures.items()):
            refused.add_metric([name], count)
        yield refused
        recovered = CounterMetricFamily("logbridge_state_files_recovered",
                                        "state files found unreadable (corrupt, or another version's) and recovered "
                                        "from since the plugin started", labels=["file", "problem"])
        for (kind, problem), count in sorted(statefiles.recovered.items()):
            recovered.add_metric([kind, problem], count)
        yield recovered
        yield from self._output_families(live)

    def _output_families(self, live) -> Iterator[Metric]:
        """Each output's counts, labelled by its name (``sink``, as when forward was the only one)."""
        sinks = [(p.container_id[:12], s) for p in live for s in p.outputs]
        totals = self.registry.output_totals()
        names = [o.name for o in outputs.available()]
        names += sorted(set(totals) - set(names))  # an output unregistered while it still runs
        counts = {name: totals.get(name, Counter()) for name in names}
        fams = {
            "forwarded": CounterMetricFamily("logbridge_sink_lines_forwarded",
                                             "records written to the aggregator, resends included", labels=["sink"]),
            "acked": CounterMetricFamily("logbridge_sink_lines_acked",
                                         "lines the destination acknowledged, each once (a resend after a kill "
                                         "counts when its acknowledgement is saved)", labels=["sink"]),
            "retried": CounterMetricFamily("logbridge_sink_lines_retried", "records sent again after a failure",
                                           labels=["sink"]),
            "failures": CounterMetricFamily("logbridge_sink_failures", "failed delivery attempts", labels=["sink"]),
        }
        for key, fam in fams.items():
            for name in names:
                fam.add_metric([name], counts[name][key])
            yield fam
        dropped = CounterMetricFamily("logbridge_sink_lines_dropped", "records a sink lost, by reason",
                                      labels=["sink", "reason"])
        for name in names:
            dropped.add_metric([name, "journal_cap"], counts[name]["dropped"])
            for key in sorted(k for k in counts[name] if k.startswith("dropped_")):
                dropped.add_metric([name, key.removeprefix("dropped_")], counts[name][key])
        yield dropped
        yield from detail_families(counts)
        up = GaugeMetricFamily("logbridge_sink_up", "1 when the sink's last delivery attempt succeeded",
                               labels=["container_id", "sink"])
        for cid, s in sinks:
            up.add_metric([cid, s.name], 1 if s.up else 0)
        yield up


def detail_families(counts: dict[str, Counter]) -> Iterator[Metric]:
    """Counts only some outputs report (driver.outputs.OutputConsumer's optional keys), for the outputs that
    report them: ``indexed`` and ``duplicates`` (a resend the destination already held: Elasticsearch's 409),
    and ``status_<code>``, the requests by HTTP status (0: no answer)."""
    for key, name, help_text in (("indexed", "logbridge_sink_lines_indexed", "records the destination stored"),
                                 ("duplicates", "logbridge_sink_lines_duplicates",
                                  "records the destination already held (a resend; Elasticsearch's 409)")):
        fam = CounterMetricFamily(name, help_text, labels=["sink"])
        for sink, c in counts.items():
            if key in c:
                fam.add_metric([sink], c[key])
        yield fam
    statuses = CounterMetricFamily("logbridge_sink_responses", "requests by HTTP status (0: no answer)",
                                   labels=["sink", "status"])
    for sink, c in counts.items():
        for key in sorted((k for k in c if k.startswith("status_")), key=lambda k: int(k[7:])):
            statuses.add_metric([sink, key.removeprefix("status_")], c[key])
    yield statuses


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
