"""Prometheus relabel rules as the Loki driver applies them: anchored RE2 regexes, Go's $ expansion."""

from __future__ import annotations

import pytest

from driver.outputs.loki.relabel import RelabelError, apply, compile_re2, parse_config

BASE = {"container_name": "web-1", "host": "node1", "filename": "/x/c.log", "compose_service": "api"}


def run(yaml_text: str, labels=None):
    return apply(parse_config(yaml_text), dict(BASE if labels is None else labels))


def test_replace_with_groups_and_named_groups():
    got = run("""
- source_labels: [container_name]
  regex: '(?P<app>[a-z]+)-(\\d+)'
  target_label: app
  replacement: '${app}_$2'
""")
    assert got["app"] == "web_1"


def test_dollar_name_runs_to_the_longest_name_as_in_go():
    # Go's Expand reads "$1x" as the group named "1x": there is none, so it expands to nothing.
    got = run("""
- source_labels: [container_name]
  regex: '(.*)'
  target_label: a
  replacement: '$1x'
- source_labels: [container_name]
  target_label: b
  replacement: '${1}x $$ $'
""")
    assert "a" not in got  # empty result deletes the target
    assert got["b"] == "web-1x $ $"


def test_regex_is_fully_anchored():
    assert run("- source_labels: [container_name]\n  regex: web\n  action: keep\n") is None
    assert run("- source_labels: [container_name]\n  regex: 'web.*'\n  action: keep\n") is not None
    assert run("- source_labels: [container_name]\n  regex: 'eb-'\n  action: drop\n") is not None


def test_dot_matches_newline_and_dollar_is_end_of_text():
    assert compile_re2("a.b").fullmatch("a\nb")
    assert not compile_re2("a$").fullmatch("a\n")  # Python's $ would also match before a final newline
    assert compile_re2("(?i)WEB").fullmatch("web")


def test_source_labels_joined_with_the_separator():
    got = run("""
- source_labels: [compose_service, container_name]
  separator: '/'
  target_label: svc
""")
    assert got["svc"] == "api/web-1"


def test_labelmap_labelkeep_labeldrop():
    got = run("- action: labelmap\n  regex: 'compose_(.*)'\n  replacement: 'c_$1'\n")
    assert got["c_service"] == "api" and got["compose_service"] == "api"
    assert run("- action: labelkeep\n  regex: 'host|container_name'\n") == {"container_name": "web-1",
                                                                            "host": "node1"}
    assert set(run("- action: labeldrop\n  regex: 'file.*'\n")) == {"container_name", "host", "compose_service"}


def test_missing_source_label_is_empty_and_no_match_means_no_change():
    got = run("- source_labels: [nope]\n  regex: 'x(.*)'\n  target_label: t\n")
    assert got == BASE
    assert run("- source_labels: [nope]\n  action: keep\n  regex: ''\n") == BASE


def test_lowercase_uppercase_hashmod():
    got = run("""
- {source_labels: [container_name], target_label: up, action: uppercase}
- {source_labels: [host], target_label: shard, action: hashmod, modulus: 8}
""")
    assert got["up"] == "WEB-1"
    assert got["shard"] in {str(i) for i in range(8)}


@pytest.mark.parametrize("text, complaint", [
    ("- action: explode\n", "unknown action"),
    ("- action: replace\n  source_labels: [a]\n", "requires 'target_label'"),
    ("- action: labeldrop\n  regex: a\n  target_label: b\n", "requires only 'regex'"),
    ("- action: replace\n  target_label: '1bad'\n", "invalid 'target_label'"),
    ("- action: keep\n  regexp: a\n", "unknown field 'regexp'"),
    ("- action: keep\n  regex: '(?=a)'\n", "lookaround"),
    ("- action: keep\n  regex: '(a)\\1'\n", "back-reference"),
    ("- action: keep\n  regex: '\\pL'\n", "Unicode classes"),
    ("- action: keep\n  regex: '(?U)a+'\n", "ungreedy"),
    ("- action: keep\n  regex: '(unclosed'\n", "regex"),
    ("action: keep\n", "list of rules"),
    (": : :\n", "YAML"),
    ("- action: hashmod\n  target_label: a\n", "modulus"),
])
def test_bad_configs_are_clear_errors(text, complaint):
    with pytest.raises(RelabelError, match=complaint):
        parse_config(text)


def test_posix_classes_and_go_named_groups_translate():
    assert compile_re2("[[:digit:]]+").fullmatch("123")
    assert not compile_re2("[[:digit:]]+").fullmatch("12a")
    assert compile_re2("(?<n>a)b").fullmatch("ab")
    assert not compile_re2(r"\d").fullmatch("\u0663")  # RE2's \d is ASCII
    assert compile_re2(r"\Qa.b\E").fullmatch("a.b") and not compile_re2(r"\Qa.b\E").fullmatch("axb")


def test_empty_config_keeps_the_labels():
    assert run("") == BASE
