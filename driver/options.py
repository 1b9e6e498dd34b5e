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


# ---- value kinds: Go's parsers, as Docker's own drivers apply them to the same keys ----------------------------
# Each parses a string or raises ValueError. Only ASCII forms: Python's int(), float() and \d take any Unicode
# digit and surrounding spaces, Go's parsers take neither.
_INT64 = 1 << 63

# docker/go-units FromHumanSize (decimal) / RAMInBytes (binary): digits, an optional fraction, one optional space,
# an optional unit k m g t p (any case) with an optional b or ib, or a lone b. These are the forms both go-units
# v0.4 (dockerd 20.10, a regexp) and v0.5 (later dockerd, a hand parser) take with the same value.
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(?:([kmgtp])(?:i?b)?|b)?", re.ASCII | re.IGNORECASE)
_UNIT_POWER = {None: 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_go_size(text: str, base: int) -> int:
    """go-units' size in bytes, then json-file's ``max-size must be a positive number``.

    Go computes it in float64 and truncates to int64 (a value past int64 wraps negative, so json-file rejects
    it); Python's floats are the same IEEE doubles, so ``0.1k`` is 100 bytes here as there."""
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError
    value = float(m.group(1)) * base ** _UNIT_POWER[m.group(2) and m.group(2).lower()]
    if not 1 <= value < _INT64:
        raise ValueError
    return int(value)


def _size(base: int) -> Callable[[str], int]:
    return lambda text: parse_go_size(text, base)


def parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool, which dockerd and the json-file driver use.
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError


_ATOI_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


def parse_atoi(text: str) -> int:
    """Go's strconv.Atoi (json-file's max-file): an optional sign, ASCII digits, within int64."""
    if not _ATOI_RE.fullmatch(text):
        raise ValueError
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError
    return value


def _positive_int(text: str) -> int:
    value = parse_atoi(text)
    if value < 1:  # json-file: "max-file cannot be less than 1"
        raise ValueError
    return value


_UINT32_MAX = (1 << 32) - 1


def _retry_count(text: str) -> int:
    # Docker's fluentd-max-retries: strconv.ParseUint (no sign), 32 bits in later dockerd (20.10: 64).
    if not text.isascii() or not text.isdigit():
        raise ValueError
    value = int(text)
    if value > _UINT32_MAX:
        raise ValueError
    return value


_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
       "h": 3600 * 10**9}  # Go's unit table: µ is U+00B5, μ U+03BC
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)", re.ASCII)


def parse_duration_ns(text: str) -> int:
    """Go's time.ParseDuration in nanoseconds: ``[+-]`` then one or more ``<number><unit>`` (``1h2m3.5s``), or
    ``0``; a total past int64 nanoseconds (~292 years) is an error. Fractions are computed as Go does, in
    float64, so the last nanosecond of an odd fraction comes out the same."""
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if rest == "0":
        return 0
    if not rest:
        raise ValueError
    total, pos = 0, 0
    while pos < len(rest):
        m = _DURATION_PART.match(rest, pos)
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        if not whole and not frac or unit not in _NS:
            raise ValueError  # no digits (".s"), a missing unit ("5") or an unknown one ("1d", "1 s")
        value = int(whole or "0") * _NS[unit]
        if value > _INT64:
            raise ValueError
        if frac:
            digits, scale = _fraction(frac)
            value += int(float(digits) * (float(_NS[unit]) / scale))
        total += value
        if value > _INT64 or total > _INT64:
            raise ValueError
        pos = m.end()
    if sign > 0 and total == _INT64:
        raise ValueError
    return sign * total


def _fraction(digits: str) -> tuple[int, float]:
    """The fraction's digits as Go takes them: until one more would overflow int64 (later ones are below 1 ns)."""
    value, scale = 0, 1.0
    for ch in digits:
        if value > (_INT64 - 1) // 10 or value * 10 + int(ch) > _INT64:
            break
        value, scale = value * 10 + int(ch), scale * 10
    return value, scale


def parse_duration(text: str) -> float:
    """A Go duration of 0 or more, in seconds (a negative wait or timeout means nothing useful here)."""
    ns = parse_duration_ns(text)
    if ns < 0:
        raise ValueError
    return ns / 1e9


def _reconnect_interval(text: str) -> float:
    # Docker's fluentd-async-reconnect-interval: 0 (off) or between 100ms and 10s.
    seconds = parse_duration(text)
    if seconds and not 0.1 <= seconds <= 10:
        raise ValueError
    return seconds


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


def _secret(text: str) -> str:
    # A control character (a newline from a key file, a NUL) would make a handshake that never matches.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError
    return text


@dataclass(frozen=True)
class Kind:
    parse: Callable[[str], Any]
    form: str  # the accepted form, as the error message and the README show it


SIZE = Kind(_size(1000), "a size like 10m, 1.5g or 500kb (ASCII digits, then k, m, g, t or p in any case, "
                         "optionally followed by b; decimal units as json-file, 1k = 1000 bytes)")
RAM_SIZE = Kind(_size(1024), "a size like 1m, 512k or 2MiB (binary units, 1k = 1024 bytes)")
COUNT = Kind(_positive_int, "a whole number of 1 or more (ASCII digits)")
RETRY_COUNT = Kind(_retry_count, "a whole number from 0 to 4294967295 (ASCII digits)")
BOOL = Kind(parse_bool, "true or false (also 1, 0, t, f, TRUE, FALSE, True, False)")
DURATION = Kind(parse_duration, "a duration like 1s, 500ms or 1m30s (units ns, us, ms, s, m, h)")
RECONNECT = Kind(_reconnect_interval, "0 or a duration from 100ms to 10s")
SECRET = Kind(_secret, "text without control characters")
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
    secret: bool = False  # an error names the option but never shows its value
    blank_is_default: bool = False  # "" means "not given", as dockerd or Docker's fluentd driver read the key


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
           "dockerd", blank_is_default=True),
    Option("max-buffer-size", RAM_SIZE, None, "dockerd's ring buffer for mode=non-blocking", "dockerd"),
    Option("cache-disabled", BOOL, None, "dockerd's dual-logging cache (not used: logbridge serves docker logs)",
           "dockerd", blank_is_default=True),
    Option("cache-max-size", SIZE, None, "dockerd's dual-logging cache size (ignored by dockerd 20.10)", "dockerd"),
    Option("cache-max-file", COUNT, None, "dockerd's dual-logging cache files (ignored by dockerd 20.10)", "dockerd"),
    Option("cache-compress", BOOL, None, "dockerd's dual-logging cache compression (ignored by dockerd 20.10)",
           "dockerd"),
    # logbridge's own.
    Option("journal-max-size", SIZE, "256m",
           "cap of the on-disk journal of raw frames; beyond it the oldest unsent frames are dropped and counted",
           "logbridge"),
    Option("finished-max-age", DURATION, "1h", "how long the outputs retry a stopped or removed container's unsent "
           "lines (from its end, across plugin restarts); then they are dropped and counted (reason "
           "finished_max_age) and the container leaves the metrics; json.log keeps every line", "logbridge"),
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
    if option.secret:  # the message reaches docker run, dockerd's log and ours
        return OptionError(f"logbridge: invalid log-opt {option.name} (value not shown: it is a secret): "
                           f"expected {option.kind.form}")
    return OptionError(f"logbridge: invalid log-opt {option.name}={value!r}: expected {option.kind.form}")


def parse_value(option: Option, raw: str | None) -> Any:
    """One log-opt's value (``None``: not given); OptionError names the option and the accepted form."""
    if raw is None or (raw == "" and option.blank_is_default):
        raw = option.default
    if raw is None:
        return None
    try:
        return option.kind.parse(raw)
    except ValueError:
        raise _bad(option, raw) from None


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
        values[option.name] = parse_value(option, config.get(option.name))
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
