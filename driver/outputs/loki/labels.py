"""A container's Loki labels, made as Grafana's Loki driver makes them (``clients/cmd/docker-driver/config.go``
``parseConfig``), then checked as Loki's distributor would check them, so a label Loki would refuse fails
``docker run`` instead of every line. Pure.

Order, as in the driver: ``loki-external-labels`` (default ``container_name={{.Name}}``; setting it replaces the
default), then the labels/env attributes with ``-`` and ``.`` turned into ``_``, then ``swarm_service``,
``swarm_stack``, ``compose_service``, ``compose_project`` from the container's labels, then ``host`` and
``filename``; ``loki-relabel-config`` applies to that set; ``source`` (stdout/stderr) is added per entry after it.

Stricter than the driver: it accepts any UTF-8 label name; Loki's push parser reads the legacy
``[a-zA-Z_][a-zA-Z0-9_]*`` names and reserves ``__`` for itself, so other names are refused here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from driver.info import LogInfo, extra_attributes, render_tag
from driver.options import OptionError
from driver.outputs.loki import relabel
from driver.outputs.loki.limits import Limits, labels_problem

DEFAULT_EXTERNAL_LABELS = "container_name={{.Name}}"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_FROM_CONTAINER_LABELS = (("com.docker.swarm.service.name", "swarm_service"), ("com.docker.stack.namespace",
                          "swarm_stack"), ("com.docker.compose.service", "compose_service"),
                          ("com.docker.compose.project", "compose_project"))
SOURCE = "source"
DEFAULT_LIMITS = Limits()


def name_problem(name: str) -> str | None:
    if not _LABEL_NAME.match(name):
        return "Loki label names are letters, digits and _, not starting with a digit"
    if name.startswith("__"):
        return "names starting with __ are reserved by Loki"
    return None


def _check_name(name: str, origin: str) -> None:
    problem = name_problem(name)
    if problem:
        raise OptionError(f"logbridge: invalid Loki label name {name!r} from {origin}: {problem}")


def external_labels(text: str, info: LogInfo) -> dict[str, str]:
    """``name=template,name=template``: split on ``,`` then ``=`` (exactly one per pair, as the driver does);
    values are Docker tag templates ({{.Name}}, {{.ID}} ...)."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        parts = pair.split("=")
        if len(parts) != 2:
            raise OptionError(f"logbridge: invalid log-opt loki-external-labels={text!r}: expected "
                              "name=value pairs separated by commas, like job=docker,container_name={{.Name}}")
        name, template = parts
        _check_name(name, "loki-external-labels")
        try:
            out[name] = render_tag(template, info)
        except OptionError as exc:
            raise OptionError(str(exc).replace("log-opt tag=", "log-opt loki-external-labels value ")) from None
    return out


def attribute_name(key: str) -> str:
    """The driver's ExtraAttributes mapper."""
    return key.replace("-", "_").replace(".", "_")


def container_labels(info: LogInfo, opts: Mapping, *, hostname: str, log_path: str,
                     rules: list[relabel.Rule] | None = None,
                     limits: Limits = DEFAULT_LIMITS) -> dict[str, str] | None:
    """The stream labels of this container without ``source``; None when a relabel rule drops it (the container
    is not sent to Loki). Raises OptionError for a label set Loki would refuse."""
    given = opts.get("loki-external-labels")
    labels = external_labels(given if given is not None else DEFAULT_EXTERNAL_LABELS, info)
    attrs = {attribute_name(k): v for k, v in extra_attributes(info, opts).items()}
    for docker_label, name in _FROM_CONTAINER_LABELS:
        if info.labels.get(docker_label):
            attrs[name] = info.labels[docker_label]
    for name in attrs:
        _check_name(name, "the labels/env attributes")
    labels.update(attrs)
    if hostname:
        labels["host"] = hostname
    labels["filename"] = log_path
    if rules:
        labels = relabel.apply(rules, labels)
        if labels is None:
            return None
        for name in labels:
            _check_name(name, "loki-relabel-config")
    labels = {k: v for k, v in labels.items() if v != ""}  # Loki drops empty values; so do relabel's rules
    # Checked with the source label every entry gets.
    problem = labels_problem(limits, {**labels, SOURCE: "stdout"})
    if problem:
        raise OptionError(f"logbridge: the Loki labels of this container would be refused: {problem}")
    return labels


def with_source(labels: Mapping[str, str], source: str) -> dict[str, str]:
    """The stream of one source: the driver sets ``source`` after relabeling, overriding any set earlier."""
    return {**labels, SOURCE: source} if source else dict(labels)
