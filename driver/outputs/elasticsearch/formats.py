"""Beats format strings, as Elastic's logging plugin takes them for ``index`` and ``pipeline``.

Supported: ``%{+<date>}`` (the entry's UTC time; Joda letters ``yyyy``, ``yy``, ``MM``, ``dd``, ``HH`` and the
separators ``. - _``) and ``%{[<field>]}`` for the fields every document of a container carries (``FIELDS``).
Anything else in ``%{…}`` is refused at ``docker run``: Beats would fail each event at send time instead.

Fields are the same for every line of a container, so a format is rendered once per container into a
``DatedName``: the text with only the date left to fill, formatted once per day (or hour) it names. Pure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

FIELDS = ("agent.name", "agent.version", "host.name", "container.id", "container.name", "container.image.name",
          "container.image.tag")
_REF = re.compile(r"%\{([^}]*)\}")
_DATE = re.compile(r"(?:yyyy|yy|MM|dd|HH|[._-])+")
_JODA = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H"}
_JODA_TOKEN = re.compile(r"yyyy|yy|MM|dd|HH|[._-]")
FORM = ("text with %{+yyyy.MM.dd} (the entry's UTC date; letters yyyy yy MM dd HH) and %{[field]} for "
        + ", ".join(FIELDS))


class FormatError(ValueError):
    """A format string logbridge cannot render the way Beats would."""


@dataclass(frozen=True)
class Format:
    """A parsed format string: literal text, ``("date", strftime)`` and ``("field", name)`` parts."""

    text: str
    parts: tuple = ()

    @property
    def dated(self) -> bool:
        return any(isinstance(p, tuple) and p[0] == "date" for p in self.parts)

    def render(self, fields: Mapping[str, str], *, lower: bool = False) -> DatedName:
        """The container's fields filled in; FormatError for a field this container does not have (Beats:
        "key not found")."""
        out = []
        for part in self.parts:
            if isinstance(part, tuple) and part[0] == "date":
                out.append(part[1])
                continue
            if isinstance(part, str):
                value = part
            else:
                value = fields.get(part[1])
                if not value:
                    raise FormatError(f"%{{[{part[1]}]}} has no value for this container")
            out.append((value.lower() if lower else value).replace("%", "%%"))  # not the directives: %H ≠ %h
        pattern = "".join(out)
        return DatedName(pattern, hourly="%H" in pattern)


def parse(text: str) -> Format:
    """A Beats format string; FormatError says which reference is not supported."""
    parts: list = []
    pos = 0
    for m in _REF.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        ref = m.group(1)
        if ref.startswith("+"):
            if not _DATE.fullmatch(ref[1:]):
                raise FormatError(f"{m.group(0)}: a date takes only yyyy, yy, MM, dd, HH and . - _")
            parts.append(("date", "".join(_JODA.get(t, t) for t in _JODA_TOKEN.findall(ref[1:]))))
        elif ref.startswith("[") and ref.endswith("]") and ref[1:-1] in FIELDS:
            parts.append(("field", ref[1:-1]))
        else:
            raise FormatError(f"{m.group(0)} is not supported")
        pos = m.end()
    rest = text[pos:]
    if "%{" in rest:
        raise FormatError(f"{rest[rest.index('%{'):]!r}: an unclosed %{{")
    if rest:
        parts.append(rest)
    return Format(text, tuple(parts))


@dataclass
class DatedName:
    """A rendered format: a strftime pattern over the entry's UTC time (no ``%`` directive: a constant)."""

    pattern: str
    hourly: bool = False
    _cache: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def constant(self) -> bool:
        return "%" not in self.pattern.replace("%%", "")

    def at(self, time_nano: int) -> str:
        """The name for an entry of this time, computed once per day (or hour) it names."""
        key = time_nano // (3_600_000_000_000 if self.hourly else 86_400_000_000_000)
        name = self._cache.get(key)
        if name is None:
            if len(self._cache) > 64:  # entries from many days: keep it bounded
                self._cache.clear()
            name = self._cache[key] = _strftime(self.pattern, time.gmtime(time_nano // 1_000_000_000))
        return name


def _strftime(pattern: str, tm: time.struct_time) -> str:
    """time.strftime, also for a pattern holding NUL (an es-index or pipeline value may): strftime refuses one,
    and the batch's documents would never be made; Elasticsearch answers for the name instead (a 400 per item,
    counted as dropped). A value's % is doubled in the pattern, so no directive spans a NUL."""
    if "\0" in pattern:
        return "\0".join(time.strftime(piece, tm) for piece in pattern.split("\0"))
    return time.strftime(pattern, tm)


_BAD_INDEX_CHARS = set('\\/*?"<>| ,#:')


def index_name_error(name: str) -> str | None:
    """Why Elasticsearch would refuse this index or data stream name (MetadataCreateIndexService's rules)."""
    if not name:
        return "it is empty"
    bad = sorted(set(name) & _BAD_INDEX_CHARS)
    if bad:
        return f"it contains {bad[0]!r}"
    if name[0] in "-_+":
        return f"it starts with {name[0]!r}"
    if name in (".", ".."):
        return "it is . or .."
    if len(name.encode()) > 255:
        return "it is longer than 255 bytes"
    if name != name.lower():
        return "it has upper-case letters"
    return None
