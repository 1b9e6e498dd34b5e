"""What the outputs registry needs from the Elasticsearch output: its option rows, whether a container's options
turn it on, and how to build the container's journal consumer."""

from __future__ import annotations

import socket

from driver import __version__
from driver.info import LogInfo, extra_attributes
from driver.journal import CursorStore, Journal
from driver.options import OptionError
from driver.outputs import Container, Output
from driver.outputs.batching import Batchers
from driver.outputs.elasticsearch import formats
from driver.outputs.elasticsearch.batcher import make_batcher
from driver.outputs.elasticsearch.codec import DocumentTemplate, container_fields, format_fields
from driver.outputs.elasticsearch.options import OPTION_ROWS, enabled, settings_from
from driver.outputs.elasticsearch.sink import NAME, EsSink

__all__ = ["OPTION_ROWS", "enabled", "build", "template_for", "OUTPUT"]


def template_for(info: LogInfo, opts, incarnation: str, *, hostname: str | None = None) -> DocumentTemplate:
    """The container's document template; OptionError when its index or pipeline cannot be rendered for it."""
    settings = settings_from(opts)
    host = socket.gethostname() if hostname is None else hostname
    fields = container_fields(container_id=info.container_id, container_name=info.container_name,
                              image=info.image_name, labels=info.labels, host_name=host,
                              agent_name=settings.agent_name or host, agent_version=__version__,
                              attrs=extra_attributes(info, opts))
    values = format_fields(fields)
    try:
        index = settings.index.render(values, lower=True)  # Beats lower-cases the index, not the pipeline
        pipeline = settings.pipeline.render(values) if settings.pipeline is not None else None
    except formats.FormatError as exc:
        raise OptionError(f"logbridge: invalid log-opt index or pipeline: {exc}") from None
    why = formats.index_name_error(index.at(0))
    if why:
        raise OptionError(f"logbridge: invalid log-opt index={settings.index.text!r}: for this container "
                          f"Elasticsearch would refuse the name ({why})")
    prefix = f"{incarnation}-{info.container_id}-" if settings.document_ids else None
    return DocumentTemplate(index, pipeline, fields, prefix)


def build(journal: Journal, store: CursorStore, info: LogInfo, opts, *, batchers: Batchers,
          hostname: str | None = None) -> EsSink:
    """The Elasticsearch sink of one container (OptionError, before anything starts, for options it refuses)."""
    settings = settings_from(opts)
    template = template_for(info, opts, journal.incarnation, hostname=hostname)
    batcher = batchers.attach(settings)

    async def let_go() -> None:
        await batchers.detach(settings)

    return EsSink(journal, store, batcher, template, container_id=info.container_id,
                  max_message=settings.max_message, on_close=let_go)


def _build(container: Container, batchers: Batchers) -> EsSink:
    return build(container.journal, container.store, container.info, container.opts, batchers=batchers)


def _check(opts) -> None:
    """At docker run: the Elasticsearch options' combinations, when hosts or cloud_id turn the output on."""
    if enabled(opts):
        settings_from(opts)


# One Batchers per plugin process: containers with the same destination share a batcher and its client.
OUTPUT = Output(name=NAME, options=OPTION_ROWS, turned_on=enabled, build=_build,
                check=_check, make_shared=lambda: Batchers(make_batcher))
