"""Property tests of the plugin API's request bodies (root-controlled: dockerd sends them, anyone with the socket
could): StartLogging's Info through everything StartLogging checks before it opens or writes anything
(Registry.check_start), and ReadLogs' Config (ReadConfig.from_json), from raw body bytes on.

Properties: a body gives a result or the documented error (ValueError for the body and ReadLogs' Config, which the
API turns into an ``Err``; OptionError for StartLogging, whose message docker run shows), never another exception;
and a secret log-opt's value never appears in the error."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driver.api import parse_body
from driver.options import OptionError, option_table
from driver.readlogs import ReadConfig
from driver.registry import Registry
from driver.settings import Settings

CID = "94cf32b388893278c9dc2efa38dcea049404423c80068270a1752a2e5a4b651e"
NAMES = [o.name for o in option_table()]
SECRETS = sorted(o.name for o in option_table() if o.secret)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
strings = st.text(max_size=16)
configs = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), strings | json_values, max_size=5)
infos = st.fixed_dictionaries({}, optional={
    "ContainerID": st.sampled_from([CID, CID[:12], "", "xyz"]) | json_values,
    "ContainerName": st.sampled_from(["/web", ""]) | json_values,
    "ContainerImageID": strings | json_values,
    "ContainerImageName": strings | json_values,
    "ContainerEntrypoint": strings | json_values,
    "ContainerArgs": st.lists(strings, max_size=3) | json_values,
    "ContainerEnv": st.lists(strings, max_size=3) | json_values,
    "ContainerLabels": st.dictionaries(strings, strings, max_size=3) | json_values,
    "ContainerCreated": strings | json_values,
    "DaemonName": strings | json_values,
    "Config": configs | json_values,
}) | json_values
read_configs = st.fixed_dictionaries({}, optional={
    "Tail": st.integers() | st.sampled_from(["10", "-1", "all", ""]) | json_values,
    "Follow": json_values,
    "Since": st.sampled_from(["2026-11-26T14:11:13.367552088Z", "0001-01-01T00:00:00Z", "2026-13-01T00:00:00Z",
                              "yesterday", ""]) | json_values,
    "Until": st.sampled_from(["2026-11-26T14:11:13+01:00"]) | json_values,
}) | json_values


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("props")
    loop = asyncio.new_event_loop()
    settings_ = Settings(log_root=str(root / "logs"), state_dir=str(root / "state"),
                         profiles=str(root / "profiles.json"))
    yield Registry(settings_, loop)
    loop.close()


@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 5_000)
@example(b"{\"a\":" * 5_000)
@example(b"\xff\xfe")
def test_a_body_is_a_json_object_or_a_value_error(raw):
    try:
        body = parse_body(raw)
    except ValueError:
        return
    assert isinstance(body, dict)


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(infos)
@example({"ContainerID": CID, "ContainerArgs": 5})
@example({"ContainerID": CID, "ContainerLabels": {"a": 1}})
@example({"ContainerID": 5})
@example([1])
@example({"ContainerID": CID, "Config": []})
@example({"ContainerID": CID, "Config": {"loki-url": "https://u:hunter22@loki\x00/"}})
def test_start_logging_info_is_accepted_or_refused_with_an_option_error(registry, info):
    try:
        registry.check_start(info)
    except OptionError as exc:
        message = str(exc)
        assert message.startswith("logbridge: ")
        config = info.get("Config") if isinstance(info, dict) else None
        for name in SECRETS:
            value = config.get(name) if isinstance(config, dict) else None
            if isinstance(value, str) and len(value) >= 4:
                assert value not in message, message


@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(read_configs)
@example({"Tail": [1]})
@example({"Since": 5})
@example({"Tail": 1e300})
@example({"Tail": float("inf")})
@example([])
def test_read_logs_config_is_read_or_refused_with_a_value_error(cfg):
    try:
        read = ReadConfig.from_json(cfg)
    except ValueError:
        return
    assert isinstance(read.tail, int) and isinstance(read.follow, bool)
    assert read.since_ns is None or isinstance(read.since_ns, int)
