"""What the outputs registry needs from the Loki output: its option rows, whether a container's options turn it
on, and how to build the container's journal consumer."""

from __future__ import annotations

import socket

from driver.info import LogInfo
from driver.journal import CursorStore, Journal
from driver.outputs import Container, Output
from driver.outputs.batching import Batchers
from driver.outputs.loki.batcher import make_batcher
from driver.outputs.loki.labels import container_labels
from driver.outputs.loki.options import OPTION_ROWS, enabled, settings_from
from driver.outputs.loki.sink import NAME, LokiSink

__all__ = ["OPTION_ROWS", "enabled", "build", "Batchers", "OUTPUT"]


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


def _build(container: Container, batchers: Batchers) -> LokiSink:
    return build(container.journal, container.store, container.info, container.opts, log_path=container.json_log,
                 batchers=batchers)


def _check(opts) -> None:
    """At docker run: the Loki options' combinations, when a loki-url turns the output on."""
    if enabled(opts):
        settings_from(opts)


# One Batchers per plugin process: containers with the same (loki-url, tenant) share a batcher and its client.
OUTPUT = Output(name=NAME, options=OPTION_ROWS, turned_on=enabled, build=_build,
                check=_check, make_shared=lambda: Batchers(make_batcher))
