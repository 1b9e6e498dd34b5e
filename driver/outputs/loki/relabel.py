"""``loki-relabel-config``: Prometheus relabel rules (YAML), applied once to a container's labels. Pure.

Semantics are Prometheus's ``model/relabel/relabel.go`` (which Grafana's driver calls): regexes are RE2, fully
anchored as ``^(?s:regex)$``; ``replacement`` and a templated ``target_label`` are expanded as Go's
``Regexp.Expand`` does (``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; ``$1x`` names the group "1x", which does
not exist, so it expands to nothing, as in Go). RE2 patterns are translated to Python's ``re`` where they mean
the same and refused where Python would read them differently (lookarounds and back-references RE2 does not
have, ``\\p{..}`` classes, ungreedy mode), so no rule silently matches something else than in the driver.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml


class RelabelError(ValueError):
    """The relabel configuration is wrong; the message says where."""


ACTIONS = ("replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop", "labelkeep",
           "lowercase", "uppercase")
_KEYS = {"source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"}
DEFAULT_SEPARATOR = ";"
DEFAULT_REGEX = "(.*)"
DEFAULT_REPLACEMENT = "$1"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Prometheus's relabelTarget: a label name that may hold $1 / ${name} templates.
_TEMPLATED_NAME = re.compile(r"(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+\Z", re.ASCII)


@dataclass(frozen=True)
class Rule:
    action: str
    source_labels: tuple[str, ...]
    separator: str
    regex: re.Pattern[str]
    target_label: str
    replacement: str
    modulus: int


# ---- RE2 → Python re -----------------------------------------------------------------------------------------
_POSIX = {"alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
          "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
          "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f"}


def translate_re2(pattern: str) -> str:
    """An RE2 pattern as Python ``re`` source with the same meaning (compiled with re.ASCII: RE2's \\d \\w \\s \\b
    are ASCII), or RelabelError naming what Python would read differently."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise RelabelError(f"regex {pattern!r}: trailing backslash")
            nxt = pattern[i + 1]
            if nxt in "pP":
                raise RelabelError(f"regex {pattern!r}: Unicode classes (\\p, \\P) are not supported")
            if nxt.isdigit() and nxt != "0" and not in_class:
                raise RelabelError(f"regex {pattern!r}: back-references are not RE2 syntax")
            if nxt == "C":
                raise RelabelError(f"regex {pattern!r}: \\C is not supported")
            if nxt == "Q":  # \Q...\E: literal text
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            out.append("\\Z" if nxt == "z" else ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2:end] if end > 0 else ""
                if name not in _POSIX:
                    raise RelabelError(f"regex {pattern!r}: unsupported character class [:{name}:]")
                out.append(_POSIX[name])
                i = end + 2
                continue
            if ch == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            elif ch == "[":
                ch = "\\["  # a literal in RE2, a nested set (FutureWarning) in Python
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            if i < n and pattern[i] == "]":  # a leading ] is a literal
                out.append("\\]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:]
            if rest.startswith(("=", "!", "<=", "<!", "P=", ">")):
                raise RelabelError(f"regex {pattern!r}: lookarounds and back-references are not RE2 syntax")
            if rest.startswith("<"):  # Go 1.22's (?<name>re)
                out.append("(?P<")
                i += 3
                continue
            flags = re.match(r"([a-zA-Z-]*)([:)])", rest)
            if flags and "U" in flags.group(1):
                raise RelabelError(f"regex {pattern!r}: the ungreedy flag (?U) is not supported")
            if flags and flags.group(2) == ")" and i > 0:
                raise RelabelError(f"regex {pattern!r}: put flags like (?i) at the start, or use (?i:...)")
        if ch == "$":
            out.append("(?!\\n)\\Z" if "(?m" not in pattern else "$")  # RE2's $ is the end of text, not before \n
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Prometheus's NewRegexp: ``^(?s:pattern)$``, as a Python pattern used with fullmatch."""
    source = translate_re2(pattern)
    flags = ""
    m = re.match(r"\(\?([a-zA-Z]+)\)", source)  # leading global flags stay global in Python
    if m:
        flags, source = m.group(0), source[m.end():]
    try:
        return re.compile(f"{flags}(?s:{source})", re.ASCII)
    except re.error as exc:
        raise RelabelError(f"regex {pattern!r}: {exc}") from None


# ---- Go's Regexp.Expand -----------------------------------------------------------------------------------------
def _name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdigit() or ch == "_"


def expand(template: str, match: re.Match[str]) -> str:
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        k = i + 1 if brace else i
        start = k
        while k < n and _name_char(template[k]):
            k += 1
        name = template[start:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")  # malformed: the $ is plain text
            continue
        i = k + 1 if brace else k
        out.append(_group(match, name))
    return "".join(out)


def _group(match: re.Match[str], name: str) -> str:
    if name.isascii() and name.isdigit() and not (name[0] == "0" and len(name) > 1) and len(name) < 9:
        num = int(name)
        if num <= match.re.groups:
            return match.group(num) or ""
        return ""
    index = match.re.groupindex.get(name)
    return (match.group(index) or "") if index else ""


# ---- parsing and applying -------------------------------------------------------------------------------------
def parse_config(text: str) -> list[Rule]:
    """The YAML list of rules, validated as Prometheus's Config.Validate does (unknown keys are errors: the
    driver unmarshals strictly)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RelabelError(f"not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise RelabelError("expected a YAML list of rules, like - action: labeldrop")
    return [_rule(i, raw) for i, raw in enumerate(data, 1)]


def _text(i: int, raw: dict, key: str, default: str) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise RelabelError(f"rule {i}: {key} must be a string")
    return str(value)


def _rule(i: int, raw: dict) -> Rule:
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise RelabelError(f"rule {i}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(_KEYS))}")
    action = _text(i, raw, "action", "replace").lower()
    if action not in ACTIONS:
        raise RelabelError(f"rule {i}: unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    sources = raw.get("source_labels") or []
    if isinstance(sources, str) or not isinstance(sources, list):
        raise RelabelError(f"rule {i}: source_labels must be a list of label names")
    rule = Rule(action=action, source_labels=tuple(map(str, sources)),
                separator=_text(i, raw, "separator", DEFAULT_SEPARATOR),
                regex=compile_re2(_text(i, raw, "regex", DEFAULT_REGEX)),
                target_label=_text(i, raw, "target_label", ""),
                replacement=_text(i, raw, "replacement", DEFAULT_REPLACEMENT),
                modulus=int(raw.get("modulus") or 0))
    _validate(i, rule, raw)
    return rule


def _validate(i: int, rule: Rule, raw: dict) -> None:
    a = rule.action
    if a == "hashmod" and rule.modulus == 0:
        raise RelabelError(f"rule {i}: relabel configuration for hashmod requires non-zero modulus")
    if a in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not rule.target_label:
        raise RelabelError(f"rule {i}: relabel configuration for {a} action requires 'target_label' value")
    if a == "replace" and not _TEMPLATED_NAME.match(rule.target_label):
        raise RelabelError(f"rule {i}: {rule.target_label!r} is invalid 'target_label' for {a} action")
    if a in ("hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and \
            not _LABEL_NAME.match(rule.target_label):
        raise RelabelError(f"rule {i}: {rule.target_label!r} is invalid 'target_label' for {a} action")
    if a == "labelmap" and not _TEMPLATED_NAME.match(rule.replacement):
        raise RelabelError(f"rule {i}: {rule.replacement!r} is invalid 'replacement' for {a} action")
    if a in ("labeldrop", "labelkeep") and (set(raw) - {"action", "regex"}):
        raise RelabelError(f"rule {i}: {a} action requires only 'regex', and no other fields")
    if a in ("keepequal", "dropequal") and (set(raw) - {"action", "source_labels", "target_label"}):
        raise RelabelError(f"rule {i}: {a} action requires only 'source_labels' and 'target_label'")


def apply(rules: list[Rule], labels: Mapping[str, str]) -> dict[str, str] | None:
    """The labels after the rules, or None when a rule drops the target (drop, a failed keep ...). Labels whose
    value becomes empty are gone, as in Prometheus's label builder."""
    lb = {k: v for k, v in labels.items() if v != ""}
    for rule in rules:
        val = rule.separator.join(lb.get(name, "") for name in rule.source_labels)
        a = rule.action
        if a == "drop" and rule.regex.fullmatch(val):
            return None
        if a == "keep" and not rule.regex.fullmatch(val):
            return None
        if a == "dropequal" and lb.get(rule.target_label, "") == val:
            return None
        if a == "keepequal" and lb.get(rule.target_label, "") != val:
            return None
        if a == "replace":
            m = rule.regex.fullmatch(val)
            if m is None:
                continue
            target = expand(rule.target_label, m)
            if not _LABEL_NAME.match(target):
                continue
            _set(lb, target, expand(rule.replacement, m))
        elif a == "lowercase":
            _set(lb, rule.target_label, val.lower())
        elif a == "uppercase":
            _set(lb, rule.target_label, val.upper())
        elif a == "hashmod":
            digest = hashlib.md5(val.encode()).digest()
            _set(lb, rule.target_label, str(int.from_bytes(digest[8:], "big") % rule.modulus))
        elif a == "labelmap":
            for name, value in list(lb.items()):
                m = rule.regex.fullmatch(name)
                if m:
                    _set(lb, expand(rule.replacement, m), value)
        elif a == "labeldrop":
            for name in [n for n in lb if rule.regex.fullmatch(n)]:
                del lb[name]
        elif a == "labelkeep":
            for name in [n for n in lb if not rule.regex.fullmatch(n)]:
                del lb[name]
    return lb


def _set(lb: dict[str, str], name: str, value: str) -> None:
    if value == "":
        lb.pop(name, None)
    else:
        lb[name] = value
