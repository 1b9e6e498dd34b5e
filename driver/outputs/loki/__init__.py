"""The direct Loki output: a drop-in for Grafana's Loki driver that never blocks a container and never forgets.

Pure parts: ``codec`` (PushRequest protobuf, snappy block), ``labels`` (the driver's labels), ``relabel``
(Prometheus relabel rules), ``limits`` (Loki's validation limits). I/O: ``client`` (HTTP), ``batcher`` (one per
(loki-url, tenant), shared by containers), ``sink`` (one container's journal consumer). ``options`` holds the
rows for the one options table. What the outputs registry needs: ``OPTION_ROWS``, ``enabled(opts)``, ``build``.
"""

from __future__ import annotations

import socket

from driver.info import LogInfo
from driver.journal import CursorStore, Journal
from driver.outputs.loki.batcher import Batchers
from driver.outputs.loki.labels import container_labels
from driver.outputs.loki.options import OPTION_ROWS, enabled, settings_from
from driver.outputs.loki.sink import LokiSink

__all__ = ["OPTION_ROWS", "enabled", "build", "Batchers"]


def build(journal: Journal, store: CursorStore, info: LogInfo, opts, *, log_path: str, batchers: Batchers,
          hostname: str | None = None) -> LokiSink:
    """The Loki sink of one container (OptionError, before anything starts, for options Loki would refuse)."""
    settings = settings_from(opts)
    labels = container_labels(info, opts, hostname=socket.gethostname() if hostname is None else hostname,
                              log_path=log_path, rules=list(settings.relabel_rules), limits=settings.limits)
    batcher = batchers.attach(settings)

    async def let_go() -> None:
        await batchers.detach(settings)

    return LokiSink(journal, store, batcher, labels, container_id=info.container_id, limits=settings.limits,
                    structured_metadata=settings.structured_metadata, on_close=let_go)
