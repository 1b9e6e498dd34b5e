"""Every ``--log-opt`` logbridge accepts, declared once: name, kind, default, one-line help.

The node-level rows are here; each output's rows are in its package (driver/outputs/), in the same row format.

The table drives validation at StartLogging (a bad value fails ``docker run`` with a message naming the option and
the accepted form), the defaults, and the options table in the README (``python -m driver.options``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from driver import outputs


class OptionError(ValueError):
    """A log-opt the user must fix; the message reaches ``docker run`` as is."""


# ---- value kinds: each parses a string or raises ValueError with the accepted form --------------------------
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {None: 1, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def _size(base: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        m = _SIZE_RE.match(text.strip())
        if not m:
            raise ValueError
        unit = m.group(2).lower() if m.group(2) else None
        value = int(float(m.group(1)) * base ** _UNITS[unit])
        if value <= 0:
            raise ValueError
        return value

    return parse


def parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool, which dockerd and the json-file driver use.
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError


def _positive_int(text: str) -> int:
    value = int(text, 10)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text, 10)
    if value < 0:
        raise ValueError
    return value


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (``1s``, ``500ms``, ``1m30s``), in seconds."""
    text = text.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            raise ValueError
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError
    return total


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError from exc


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError
        return text

    return parse


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Kind:
    parse: Callable[[str], Any]
    form: str  # the accepted form, as the error message and the README show it


SIZE = Kind(_size(1000), "a size like 10m or 1g (k, m, g: decimal units as json-file, 1k = 1000 bytes)")
RAM_SIZE = Kind(_size(1024), "a size like 1m or 512k (binary units, 1k = 1024 bytes)")
COUNT = Kind(_positive_int, "a whole number of 1 or more")
NON_NEGATIVE = Kind(_non_negative_int, "a whole number of 0 or more")
BOOL = Kind(parse_bool, "true or false")
DURATION = Kind(parse_duration, "a duration like 1s, 500ms or 1m30s")
REGEX = Kind(_regex, "a regular expression")
CSV = Kind(_csv, "a comma-separated list of names")
TEXT = Kind(_text, "any text")
TEMPLATE = Kind(_text, "a template using {{.ID}} {{.FullID}} {{.Name}} {{.ImageID}} {{.ImageFullID}} "
                       "{{.ImageName}} {{.DaemonName}} and plain text")
MODE = Kind(_choice("blocking", "non-blocking"), "blocking or non-blocking")


@dataclass(frozen=True)
class Option:
    name: str
    kind: Kind
    default: str | None
    help: str
    group: str = "json-file"


# The node-level rows: json.log, dockerd's own keys, logbridge's. Each output declares its rows in its package
# (driver/outputs/<name>/); option_table() puts them together.
NODE_OPTIONS: tuple[Option, ...] = (
    # json-file's own options, same meaning.
    Option("max-size", SIZE, "100m", "rotate json.log at this size (bounded by default, unlike json-file)"),
    Option("max-file", COUNT, "3", "how many json.log files to keep, the current one included"),
    Option("compress", BOOL, "false", "gzip rotated files (needs max-file of 2 or more)"),
    Option("labels", CSV, None, "container labels to add to each entry's attrs"),
    Option("labels-regex", REGEX, None, "add the container labels whose keys match"),
    Option("env", CSV, None, "container environment variables to add to each entry's attrs"),
    Option("env-regex", REGEX, None, "add the environment variables whose names match"),
    Option("tag", TEMPLATE, None, "tag stored in attrs (json.log) and used as the forward tag"),
    # Keys dockerd itself handles; they reach the plugin and must not be rejected.
    Option("mode", MODE, "blocking", "dockerd's delivery mode; non-blocking drops lines silently inside dockerd",
           "dockerd"),
    Option("max-buffer-size", RAM_SIZE, None, "dockerd's ring buffer for mode=non-blocking", "dockerd"),
    Option("cache-disabled", BOOL, None, "dockerd's dual-logging cache (not used: logbridge serves docker logs)",
           "dockerd"),
    Option("cache-max-size", SIZE, None, "dockerd's dual-logging cache size (ignored by dockerd 20.10)", "dockerd"),
    Option("cache-max-file", COUNT, None, "dockerd's dual-logging cache files (ignored by dockerd 20.10)", "dockerd"),
    Option("cache-compress", BOOL, None, "dockerd's dual-logging cache compression (ignored by dockerd 20.10)",
           "dockerd"),
    # logbridge's own.
    Option("journal-max-size", SIZE, "256m",
           "cap of the on-disk journal of raw frames; beyond it the oldest unsent frames are dropped and counted",
           "logbridge"),
    Option("logbridge-profile", TEXT, None, "named set of log-opts from the plugin's profiles file (secrets, "
           "destinations that change without recreating containers)", "logbridge"),
)



def option_table() -> tuple[Option, ...]:
    """The one table: the node-level rows, then each registered output's."""
    return NODE_OPTIONS + tuple(row for output in outputs.available() for row in output.options)


class Options(Mapping[str, Any]):
    """Parsed log-opts: every declared option present, with its default when the user gave none."""

    def __init__(self, values: dict[str, Any], given: frozenset[str]) -> None:
        self._values = values
        self.given = given

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _bad(option: Option, value: str) -> OptionError:
    return OptionError(f"logbridge: invalid log-opt {option.name}={value!r}: expected {option.kind.form}")


def parse_options(config: Mapping[str, str] | None) -> Options:
    """Validate dockerd's ``Info.Config``; raises OptionError with a message naming the option and its form."""
    config = dict(config or {})
    table = option_table()
    accepted = {o.name for o in table}
    unknown = sorted(k for k in config if k not in accepted)
    if unknown:
        names = ", ".join(o.name for o in table)
        raise OptionError(f"logbridge: unknown log-opt {unknown[0]!r}; accepted: {names}")
    values: dict[str, Any] = {}
    for option in table:
        raw = config.get(option.name, option.default)
        if raw is None:
            values[option.name] = None
            continue
        try:
            values[option.name] = option.kind.parse(raw)
        except ValueError:
            raise _bad(option, raw) from None
    _check_combinations(values, frozenset(config))
    opts = Options(values, frozenset(config))
    for output in outputs.available():
        output.check(opts)
    return opts


MIN_JOURNAL = 16_000_000  # well above one batch (1 MiB) per consumer, so json.log never loses lines to the cap


def _check_combinations(values: dict[str, Any], given: frozenset[str]) -> None:
    if values["journal-max-size"] < MIN_JOURNAL:
        raise OptionError(f"logbridge: invalid log-opt journal-max-size: expected {SIZE.form}, at least 16m")
    if values["compress"] and values["max-file"] < 2:
        raise OptionError("logbridge: invalid log-opt compress=true: it needs max-file of 2 or more")


def markdown_table() -> str:
    """The README's options table, generated from option_table()."""
    rows = ["| option | default | accepted values | what it does |", "|---|---|---|---|"]
    for o in option_table():
        default = f"`{o.default}`" if o.default is not None else ""
        rows.append(f"| `{o.name}` | {default} | {o.kind.form} | {o.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
