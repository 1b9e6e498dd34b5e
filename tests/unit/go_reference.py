"""Go's parsers, transcribed step by step from their source, as the oracle for driver/options.py's strict kinds.

Written the way Go writes them (byte loops, the go-units regexp), not the way options.py does, so the property
tests compare two formulations. ``None`` means Go returns an error.
- go-units size: v0.4.0 (dockerd 20.10: a regexp) and v0.5 (later dockerd: a hand parser); a value counts only
  where both versions give it.
- strconv.Atoi / ParseUint / ParseBool, time.ParseDuration (Go 1.19).
"""

from __future__ import annotations

import re

INT64 = 1 << 63
_V04 = re.compile(r"^([0-9]+(\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")  # Go's \d and $ are ASCII / end of text
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")  # enough of ParseFloat here


def _go_int64(x: float) -> int | None:
    return int(x) if -INT64 <= x < INT64 else None  # amd64 wraps out-of-range conversions to MinInt64


def _v04(s: str, base: int) -> int | None:
    m = _V04.match(s)
    if not m or m.group(1).count(".") > 1:  # "1.2.3" passes the regexp, then ParseFloat fails
        return None
    size = float(m.group(1))
    if m.group(3):
        size *= float(base ** " kmgtp".index(m.group(3).lower()))
    return _go_int64(size)


def _v05(s: str, base: int) -> int | None:
    sep = max(s.rfind(c) for c in "0123456789. ")
    if sep < 0:
        return None
    num, sfx = (s[:sep + 1], s[sep + 1:]) if s[sep] != " " else (s[:sep], s[sep + 1:])
    if not _GO_FLOAT.match(num) or "_" in num:
        return None
    size = float(num)
    if size < 0:
        return None
    if sfx:
        if len(sfx) > 3:
            return None
        sfx = sfx.lower()
        if sfx[0] == "b":
            return _go_int64(size) if len(sfx) == 1 else None
        if sfx[0] not in "kmgtp" or (len(sfx) == 2 and sfx[1] != "b") or (len(sfx) == 3 and sfx[1:] != "ib"):
            return None
        size *= float(base ** " kmgtp".index(sfx[0]))
    return _go_int64(size)


def go_units_size(s: str, base: int) -> int | None:
    a, b = _v04(s, base), _v05(s, base)
    return a if a == b else None


def atoi(s: str) -> int | None:
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or any(not "0" <= c <= "9" for c in body):
        return None
    n = int(body) * (-1 if s[0] == "-" else 1)
    return n if -INT64 <= n < INT64 else None


def parse_uint(s: str, bits: int) -> int | None:
    if not s or any(not "0" <= c <= "9" for c in s):
        return None
    n = int(s)
    return n if n < 1 << bits else None


def parse_bool(s: str) -> bool | None:
    return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}.get(s)


_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}


def parse_duration(s: str) -> int | None:
    """time.ParseDuration in nanoseconds, over UTF-8 bytes as Go walks them."""
    b = s.encode("utf-8", "surrogatepass")
    neg = False
    if b[:1] in (b"-", b"+"):
        neg, b = b[:1] == b"-", b[1:]
    if b == b"0":
        return 0
    if not b:
        return None
    d = 0
    while b:
        if not (b[0] == 0x2E or 0x30 <= b[0] <= 0x39):
            return None
        v, i = 0, 0
        while i < len(b) and 0x30 <= b[i] <= 0x39:
            if v > INT64 // 10:
                return None
            v = v * 10 + b[i] - 0x30
            if v > INT64:
                return None
            i += 1
        pre, b = i > 0, b[i:]
        f, scale, post = 0, 1.0, False
        if b[:1] == b".":
            b = b[1:]
            i, overflow = 0, False
            while i < len(b) and 0x30 <= b[i] <= 0x39:
                if not overflow:
                    if f > (INT64 - 1) // 10:
                        overflow = True
                    else:
                        y = f * 10 + b[i] - 0x30
                        if y > INT64:
                            overflow = True
                        else:
                            f, scale = y, scale * 10
                i += 1
            post, b = i > 0, b[i:]
        if not pre and not post:
            return None
        i = 0
        while i < len(b) and not (b[i] == 0x2E or 0x30 <= b[i] <= 0x39):
            i += 1
        if i == 0:
            return None
        unit = _UNITS.get(b[:i].decode("utf-8", "surrogatepass"))
        b = b[i:]
        if unit is None:
            return None
        if v > INT64 // unit:
            return None
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > INT64:
                return None
        d += v
        if d > INT64:
            return None
    if neg:
        return -d
    return d if d <= INT64 - 1 else None
