"""dockerd's ``Info`` (the container a logger is for), its tag templates and its extra attributes.

dockerd sends Info raw; the Go helpers json-file and fluentd use (``ID()``, ``ExtraAttributes`` ...) have to be
reimplemented here. Tags are Go templates in dockerd; logbridge supports the documented fields and rejects any
other template syntax instead of guessing.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

from driver.options import OptionError, Options


@dataclass(frozen=True)
class LogInfo:
    container_id: str
    container_name: str  # with dockerd's leading "/"
    image_id: str  # "sha256:<hex>"
    image_name: str
    entrypoint: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    labels: dict[str, str]
    config: dict[str, str]
    created: str
    daemon_name: str

    @classmethod
    def from_json(cls, info: Any) -> LogInfo:
        """The Info dockerd sends (null fields are empty); ValueError names the first field of the wrong type."""
        if not isinstance(info, dict):
            raise ValueError(f"Info is not a JSON object: {type(info).__name__}")
        cid = _text(info, "ContainerID")
        if not re.fullmatch(r"[0-9a-f]{12,64}", cid):
            raise ValueError(f"Info.ContainerID {cid!r} is not a container id")
        config = _object(info, "Config")
        return cls(
            container_id=cid,
            container_name=_text(info, "ContainerName"),
            image_id=_text(info, "ContainerImageID"),
            image_name=_text(info, "ContainerImageName"),
            entrypoint=_text(info, "ContainerEntrypoint"),
            args=_texts(info, "ContainerArgs"),
            env=_texts(info, "ContainerEnv"),
            labels=_labels(info, "ContainerLabels"),
            config={str(k): str(v) for k, v in config.items()},  # Go sends strings; str() spares a bool a refusal
            created=_text(info, "ContainerCreated"),
            daemon_name=_text(info, "DaemonName") or "docker",
        )

    # The Go helper methods, as dockerd 20.10 defines them.
    @property
    def short_id(self) -> str:
        return self.container_id[:12]

    @property
    def name(self) -> str:
        return self.container_name.removeprefix("/")

    @property
    def short_image_id(self) -> str:
        # dockerd 20.10 up to 29.4.0 cut the first 12 characters *including* "sha256:" (e.g. "sha256:3859d").
        return self.image_id[:12]

    def command(self) -> str:
        return " ".join((self.entrypoint, *self.args)).strip()


def _typed(info: dict, key: str, kind: type, what: str) -> Any:
    value = info.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ValueError(f"Info.{key} is not {what}: {type(value).__name__}")
    return value


def _text(info: dict, key: str) -> str:
    return _typed(info, key, str, "a string")


def _object(info: dict, key: str) -> dict:
    return _typed(info, key, dict, "a JSON object")


def _texts(info: dict, key: str) -> tuple[str, ...]:
    values = _typed(info, key, list, "a list of strings")
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"Info.{key} is not a list of strings")
    return tuple(values)


def _labels(info: dict, key: str) -> dict[str, str]:
    labels = _object(info, key)
    if not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(f"Info.{key} is not a map of strings")
    return dict(labels)


_FIELDS = {
    "ID": lambda i: i.short_id,
    "FullID": lambda i: i.container_id,
    "Name": lambda i: i.name,
    "ImageID": lambda i: i.short_image_id,
    "ImageFullID": lambda i: i.image_id,
    "ImageName": lambda i: i.image_name,
    "DaemonName": lambda i: i.daemon_name,
    "Command": lambda i: i.command(),
    "Hostname": lambda i: socket.gethostname(),
}
_ACTION = re.compile(r"\{\{(.*?)\}\}")
_FIELD = re.compile(r"^\s*\.(\w+)\s*$")


def render_tag(template: str, info: LogInfo) -> str:
    """Expand ``{{.Field}}`` actions; anything else between braces is an error the user sees at ``docker run``."""

    def expand(m: re.Match[str]) -> str:
        field = _FIELD.match(m.group(1))
        if not field or field.group(1) not in _FIELDS:
            raise OptionError(
                f"logbridge: invalid log-opt tag={template!r}: {m.group(0)} is not supported; use "
                + ", ".join("{{." + f + "}}" for f in _FIELDS)
            )
        return _FIELDS[field.group(1)](info)

    out = _ACTION.sub(expand, template)
    if "{{" in out or "}}" in out:
        raise OptionError(f"logbridge: invalid log-opt tag={template!r}: unbalanced {{{{ }}}}")
    return out


def extra_attributes(info: LogInfo, opts: Options) -> dict[str, str]:
    """Labels and env picked by labels/labels-regex/env/env-regex; env wins over labels, as in dockerd."""
    attrs: dict[str, str] = {}
    for key in opts["labels"] or ():
        if key in info.labels:
            attrs[key] = info.labels[key]
    if opts["labels-regex"] is not None:
        for key, value in info.labels.items():
            if opts["labels-regex"].search(key):
                attrs[key] = value
    env = dict(item.split("=", 1) for item in info.env if "=" in item)
    for key in opts["env"] or ():
        if key in env:
            attrs[key] = env[key]
    if opts["env-regex"] is not None:
        for key, value in env.items():
            if opts["env-regex"].search(key):
                attrs[key] = value
    return attrs
