"""Loki labels as Grafana's driver makes them, and Loki's limits on them (a label Loki would refuse fails
docker run)."""

from __future__ import annotations

import pytest

from driver.info import LogInfo
from driver.options import OptionError, parse_options
from driver.outputs.loki import labels, relabel
from driver.outputs.loki.limits import Limits

CID = "c" * 64
PATH = f"/var/log/logbridge/{CID}/{CID}-json.log"


def info(**kw) -> LogInfo:
    return LogInfo.from_json({"ContainerID": CID, "ContainerName": "/web-1", "ContainerImageName": "nginx:1",
                              "ContainerLabels": kw.get("labels", {}), "ContainerEnv": kw.get("env", [])})


def opts(**given):
    parsed = dict(parse_options({k: v for k, v in given.items() if not k.startswith("loki-")}))
    parsed.update({k: v for k, v in given.items() if k.startswith("loki-")})
    return parsed


def make(i=None, o=None, rules=None, **kw):
    return labels.container_labels(i or info(), o or opts(), hostname="node1", log_path=PATH, rules=rules, **kw)


def test_default_labels_are_the_drivers():
    assert make() == {"container_name": "web-1", "host": "node1", "filename": PATH}


def test_external_labels_replace_the_container_name_default():
    got = make(o=opts(**{"loki-external-labels": "job=docker,img={{.ImageName}},id={{.ID}}"}))
    assert got == {"job": "docker", "img": "nginx:1", "id": CID[:12], "host": "node1", "filename": PATH}


@pytest.mark.parametrize("text", ["job", "a=b=c", "job=docker,", "=x"])
def test_malformed_external_labels_fail(text):
    with pytest.raises(OptionError, match="loki-external-labels"):
        make(o=opts(**{"loki-external-labels": text}))


def test_unknown_template_field_names_the_option():
    with pytest.raises(OptionError, match="loki-external-labels value"):
        make(o=opts(**{"loki-external-labels": "a={{.Nope}}"}))


def test_compose_swarm_and_attributes_with_dashes_and_dots():
    i = info(labels={"com.docker.compose.project": "shop", "com.docker.compose.service": "api",
                     "com.docker.swarm.service.name": "s", "com.docker.stack.namespace": "st", "team-name": "core"},
             env=["APP.VERSION=3", "OTHER=x"])
    got = make(i, opts(labels="team-name", env="APP.VERSION"))
    assert got["compose_project"] == "shop" and got["compose_service"] == "api"
    assert got["swarm_service"] == "s" and got["swarm_stack"] == "st"
    assert got["team_name"] == "core" and got["APP_VERSION"] == "3"
    assert "OTHER" not in got


@pytest.mark.parametrize("name", ["9lives", "caf\u00e9", "__reserved", "a:b"])
def test_a_name_loki_refuses_fails_docker_run_naming_it(name):
    with pytest.raises(OptionError, match=repr(name).replace("\\", "\\\\")):
        make(o=opts(**{"loki-external-labels": f"{name}=x"}))


def test_env_regex_attribute_loki_would_refuse():
    with pytest.raises(OptionError, match="'1X'"):
        make(info(env=["1X=a"]), opts(**{"env-regex": "X"}))


def test_too_many_labels_counts_source():
    ext = ",".join(f"l{i}=v" for i in range(12))  # 12 + host + filename + source = 15: accepted
    assert len(make(o=opts(**{"loki-external-labels": ext}))) == 14
    with pytest.raises(OptionError, match="16 label names"):
        make(o=opts(**{"loki-external-labels": ext + ",l12=v"}))


def test_value_length_limit_is_settable():
    with pytest.raises(OptionError, match="longer than 10 bytes"):
        make(limits=Limits(max_label_value_length=10))


def test_relabel_runs_before_source_and_can_drop():
    rules = relabel.parse_config("- action: labeldrop\n  regex: filename|host\n")
    got = make(rules=rules)
    assert got == {"container_name": "web-1"}
    assert labels.with_source(got, "stderr") == {"container_name": "web-1", "source": "stderr"}
    rules = relabel.parse_config("- source_labels: [container_name]\n  regex: web-.*\n  action: drop\n")
    assert make(rules=rules) is None


def test_empty_values_are_dropped_as_loki_does():
    assert "team" not in make(info(labels={"team": ""}), opts(labels="team"))
