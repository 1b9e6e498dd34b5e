"""Log-opt values parse exactly as Go parses them in Docker's own drivers: the forms json-file and fluentd accept,
with the same values, and a clear OptionError naming the option for everything else."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.options import OptionError, option_table, parse_options, parse_value
from tests.unit import go_reference as go

_BY_NAME = {o.name: o for o in option_table()}


@pytest.mark.parametrize(("key", "value"), [
    ("max-size", "\u0661\u0660m"),  # Arabic-Indic "10m": Python's int()/float() take it, Go does not
    ("max-file", "\u0663"),
    ("max-size", " 10m"),
    ("max-size", "10m "),
    ("max-size", "10m\n"),
    ("max-file", "99999999999999999999"),  # past int64: strconv.Atoi's range error
    ("max-size", "99999999999999999999"),  # past int64 bytes: json-file's "must be a positive number"
    ("max-size", "9223372036854775807"),  # float64(2**63-1) is 2**63: Go's int64() wraps it negative
    ("max-size", "1e6"),
    ("max-size", "10ki"),
    ("max-file", "3.0"),
    ("max-file", "3 "),
    ("compress", "yes"),
    ("compress", " true"),
    ("fluentd-retry-wait", "1 s"),
    ("fluentd-retry-wait", "\uff11s"),  # fullwidth digit one
    ("fluentd-max-retries", "+3"),  # strconv.ParseUint takes no sign
])
def test_what_go_rejects_is_rejected_naming_the_option(key, value):
    with pytest.raises(OptionError) as err:
        parse_options({key: value})
    assert f"log-opt {key}=" in str(err.value) and "expected" in str(err.value)


@pytest.mark.parametrize(("key", "value", "parsed"), [
    ("max-file", "+3", 3),  # strconv.Atoi takes a sign: json-file accepts max-file=+3 as 3
    ("max-file", "007", 7),
    ("max-size", "10 m", 10_000_000),
    ("max-size", "10MB", 10_000_000),
    ("max-size", "1.5GiB", 1_500_000_000),  # FromHumanSize: decimal whatever the i
    ("max-size", "0.1k", 100),
    ("max-size", "10", 10),
    ("max-size", "10b", 10),
    ("max-size", "9223372036854774784", 9223372036854774784),  # the largest float64 below 2**63
    ("max-buffer-size", "2MiB", 2 << 20),
    ("fluentd-buffer-limit", "1.5k", 1536),
    ("compress", "T", True),
    ("fluentd-retry-wait", "1h2m3.5s", 3723.5),
    ("fluentd-retry-wait", "+1.s", 1.0),
    ("fluentd-retry-wait", ".5\u00b5s", 5e-7),
    ("fluentd-retry-wait", "", 1.0),  # Docker's fluentd driver: empty is not given
    ("fluentd-max-retries", "4294967295", 4294967295),
    ("mode", "", "blocking"),  # dockerd: LogModeUnset
])
def test_what_go_accepts_is_accepted_with_go_s_value(key, value, parsed):
    opts = {key: value, "mode": "non-blocking"} if key == "max-buffer-size" else {key: value}
    assert parse_options(opts)[key] == parsed


# ---- the property: whatever the string, Go's value or an OptionError naming the option ---------------------
def _go_value(name: str, text: str):
    """What Docker's driver makes of the value, or None where it fails (with the bounds its drivers check)."""
    kind = _BY_NAME[name].kind.form
    if name in ("max-size", "cache-max-size", "journal-max-size", "forward-merge-max-size", "es-bulk-size",
                "es-max-message-size"):
        n = go.go_units_size(text, 1000)
        return n if n is not None and n > 0 else None
    if name in ("max-buffer-size", "fluentd-buffer-limit"):
        n = go.go_units_size(text, 1024)
        return n if n is not None and n > 0 else None
    if name in ("max-file", "cache-max-file", "forward-window"):  # forward-window: a count as max-file is
        n = go.atoi(text)
        return n if n is not None and n >= 1 else None
    if name == "fluentd-max-retries":
        return go.parse_uint(text, 32)
    if "true or false" in kind:
        return go.parse_bool(text)
    if "duration" in kind:
        ns = go.parse_duration(text)
        if ns is None or ns < 0:
            return None
        if name == "fluentd-async-reconnect-interval" and ns and not 10**8 <= ns <= 10**10:
            return None
        return ns / 1e9
    raise AssertionError(name)


# Docker's own drivers' options (json-file, dockerd's keys, fluentd) and the outputs' rows of the same kinds; the
# Loki rows have their own tests; Elastic's plugin's timeouts take whole seconds too, which Go's durations do not.
STRICT = [o.name for o in option_table() if o.name not in ("journal-max-size",) and o.group != "loki" and any(
    word in o.kind.form for word in ("size like", "whole number", "true or false", "duration"))
    and not o.kind.form.startswith("whole seconds")]
# Forms Docker's own drivers accept that logbridge rejects on purpose: a negative duration (a wait or timeout
# below zero), and fluentd-max-retries past 32 bits (dockerd 20.10 parses 64, later ones 32).
_CHARS = "0123456789.+- kKmMgGtTpPiIbBnsuh\u00b5\u03bcTtFfRrUuEeAaLlSs\u0663\n_xX"


_NUMBERS = ["", "0", "1", "10", "007", "1.5", "0.1", "1.", ".5", "1.2.3", "+1", "-1", "-0", "\u0661\u0660",
            "9223372036854774784", "9223372036854775807", "9223372036854775808", "4294967295", "4294967296",
            "99999999999999999999", "0.0000000001", "1.00000000000000000001", "12345678901234567890123"]
_UNITS = ["", " ", "k", "K", "kb", "KiB", "ki", "m", "MB", "g", "gib", "t", "p", "b", "B", "i", "ib", "e3",
          "ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h", "1h", "s5m", "m30s", "h0.5s", "x", "\n", " m",
          "  m", "\u212a"]


def _near_valid():
    part = st.sampled_from(_NUMBERS) | st.text("0123456789.", max_size=6)
    return st.builds(lambda a, b, c, d: a + b + c + d, st.sampled_from(["", "", "+", "-", " "]), part,
                     st.sampled_from(_UNITS), st.sampled_from(["", "", "", "5s", ".5m", " ", "30s"]))


_ANY = st.one_of(_near_valid(), st.text(_CHARS, max_size=14), st.text(max_size=8),
                 st.sampled_from(["true", "False", "1", "0", "T", "f", "TRUE", "tRUE", "yes", ""]))


# 1,000 examples of 10 strings: 10,000 strings, each tried on every strict option, in a few seconds.
@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_ANY, min_size=10, max_size=10))
def test_any_string_parses_to_go_s_value_or_fails_naming_the_option(texts):
    for text in texts:
        for name in STRICT:
            _check(name, text)


def _check(name: str, text: str) -> None:
    option = _BY_NAME[name]
    blank = text == "" and option.blank_is_default
    expected = None if blank and option.default is None else _go_value(name, option.default if blank else text)
    try:
        value = parse_value(option, text)
    except OptionError as exc:
        assert f"log-opt {name}=" in str(exc)
        # Where Go accepts it, only the deliberate exceptions may be refused.
        assert expected is None or (name == "fluentd-max-retries" and go.parse_uint(text, 64) is not None), \
            (name, text, expected)
        return
    if blank and option.default is None:
        assert value is None
        return
    assert expected is not None, f"{name}={text!r} accepted as {value!r}; Go rejects it"
    assert value == expected and type(value) is type(expected), (name, text, value, expected)
