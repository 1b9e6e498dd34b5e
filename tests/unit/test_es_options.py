"""The Elasticsearch output's options: Elastic's plugin's names accepted, each bad value or combination failing
docker run with the option's name and the accepted form, secrets never shown."""

from __future__ import annotations

import base64

import pytest

from driver.info import LogInfo
from driver.options import OptionError, parse_options
from driver.outputs import turned_on
from driver.outputs.elasticsearch.options import DEFAULT_INDEX, cloud_host, settings_from
from driver.outputs.elasticsearch.output import template_for
from tests.plugin_harness import info_for

CLOUD_ID = "prod:" + base64.b64encode(b"eu-west-1.aws.found.io$abc123$kib456").decode()


def test_elastic_plugins_option_set_is_accepted_and_turns_the_output_on():
    opts = parse_options({"hosts": "https://es1:9200,es2", "user": "elastic", "password": "pw",
                          "index": "app-%{[container.name]}-%{+yyyy.MM.dd}", "pipeline": "p1", "name": "node-a",
                          "backoff_init": "2s", "backoff_max": "2m", "timeout": "30", "proxy_url": "http://proxy:3128"})
    assert "elasticsearch" in [o.name for o in turned_on(opts)]
    s = settings_from(opts)
    assert s.hosts == ("https://es1:9200", "http://es2:9200")
    assert s.authorization == "Basic " + base64.b64encode(b"elastic:pw").decode()
    assert (s.backoff_init, s.backoff_max, s.timeout, s.agent_name) == (2.0, 120.0, 30.0, "node-a")
    assert s.bulk_bytes == 5_000_000 and s.document_ids and not s.compress


def test_defaults_are_elastic_plugins():
    s = settings_from(parse_options({"hosts": "es"}))
    assert s.index.text == DEFAULT_INDEX and (s.backoff_init, s.backoff_max, s.timeout) == (1.0, 60.0, 90.0)
    assert settings_from(parse_options({"hosts": "es", "timeout": "1m30s"})).timeout == 90.0
    ucfg = settings_from(parse_options({"hosts": "es", "backoff_init": "2", "backoff_max": "3"}))  # seconds
    assert (ucfg.backoff_init, ucfg.backoff_max) == (2.0, 3.0)


def test_the_default_index_names_a_daily_logs_docker_target_per_version():
    info = LogInfo.from_json(info_for("a" * 64, {"hosts": "es"}))
    t = template_for(info, parse_options(info.config), "0" * 16, hostname="h")
    assert t.index.at(1_764_633_600 * 10**9) == "logs-docker-0.1.0-2025.12.02"


def test_the_index_is_lower_cased_as_beats_does_but_not_the_pipeline():
    info = LogInfo.from_json(info_for("a" * 64, {"hosts": "es", "index": "Logs-%{+yyyy}", "pipeline": "My-P"}))
    t = template_for(info, parse_options(info.config), "0" * 16, hostname="h")
    assert t.index.at(1_764_633_600 * 10**9) == "logs-2025" and t.pipeline.at(0) == "My-P"


def test_api_key_cloud_id_and_cloud_auth():
    s = settings_from(parse_options({"hosts": "es", "api_key": "id1:key1"}))
    assert s.authorization == "ApiKey " + base64.b64encode(b"id1:key1").decode()
    encoded = settings_from(parse_options({"hosts": "es", "api_key": "ZW5jb2RlZA=="}))
    assert encoded.authorization == "ApiKey ZW5jb2RlZA=="
    s = settings_from(parse_options({"cloud_id": CLOUD_ID, "cloud_auth": "elastic:pw"}))
    assert s.hosts == ("https://abc123.eu-west-1.aws.found.io:443",)
    assert s.authorization == "Basic " + base64.b64encode(b"elastic:pw").decode()
    # Elastic's plugin requires hosts even with cloud_id, which then wins (Beats' cloudid): accepted the same way.
    both = settings_from(parse_options({"hosts": "http://localhost:9200", "cloud_id": CLOUD_ID}))
    assert both.hosts == ("https://abc123.eu-west-1.aws.found.io:443",)
    ported = "x:" + base64.b64encode(b"example.com:9243$es1$kb").decode()
    assert cloud_host(ported) == "https://es1.example.com:9243"


def test_credentials_in_a_host_url_become_basic_auth_and_leave_the_url():
    s = settings_from(parse_options({"hosts": "https://u:p@es:9200"}))
    assert s.hosts == ("https://es:9200",) and s.authorization == "Basic " + base64.b64encode(b"u:p").decode()


@pytest.mark.parametrize("opts, message", [
    ({"hosts": "ftp://es"}, "invalid log-opt hosts (value not shown"),
    ({"hosts": "es", "timeout": "soon"}, "invalid log-opt timeout='soon': expected whole seconds"),
    ({"hosts": "es", "backoff_init": "1d"}, "invalid log-opt backoff_init='1d': expected whole seconds"),
    ({"hosts": "es", "es-bulk-size": "lots"}, "invalid log-opt es-bulk-size='lots': expected a size"),
    ({"hosts": "es", "es-compress": "yes"}, "invalid log-opt es-compress='yes': expected true or false"),
    ({"hosts": "es", "index": "x-%{[message]}"}, "invalid log-opt index='x-%{[message]}': expected text with"),
    ({"hosts": "es", "pipeline": "%{+yyyy.MM.dd HH:mm}"}, "invalid log-opt pipeline="),
    ({"hosts": "es", "index": "_x-%{+yyyy}"}, "Elasticsearch would refuse the name (it starts with '_')"),
    ({"hosts": "es", "index": "a:b"}, "would refuse the name (it contains ':')"),
    ({"hosts": "es", "user": "u"}, "log-opts user and password go together"),
    ({"hosts": "es", "user": "u", "password": "p", "api_key": "k"}, "user and api_key exclude each other"),
    ({"hosts": "https://u:p@es", "api_key": "k"}, "user:password in a URL and another way"),
    ({"cloud_id": "nonsense"}, "invalid log-opt cloud_id (value not shown"),
    ({"cloud_id": CLOUD_ID, "cloud_auth": "nocolon"}, "invalid log-opt cloud_auth (value not shown"),
    ({"hosts": "es", "backoff_init": "2m", "backoff_max": "1m"}, "backoff_init is longer than backoff_max"),
    ({"hosts": "es", "es-tls-cert-file": "/c.pem"}, "es-tls-cert-file and es-tls-key-file go together"),
    ({"hosts": "es", "proxy_url": "socks://p"}, "invalid log-opt proxy_url='socks://p'"),
    ({"hosts": "es", "es_bulk_size": "1m"}, "unknown log-opt 'es_bulk_size'"),
])
def test_a_bad_value_or_combination_fails_docker_run_naming_the_option(opts, message):
    with pytest.raises(OptionError) as err:
        parse_options(opts)
    assert message in str(err.value)


def test_secrets_are_never_shown():
    for opts in ({"hosts": "https://u:s3cret@es/\x01"}, {"cloud_id": "s3cret"},
                 {"cloud_id": CLOUD_ID, "cloud_auth": "s3cret"}, {"hosts": "es", "password": "s3cret\n"}):
        with pytest.raises(OptionError) as err:
            parse_options(opts)
        assert "s3cret" not in str(err.value)


def test_an_index_naming_a_field_the_container_lacks_fails_at_start():
    info = LogInfo.from_json(info_for("a" * 64, {"hosts": "es", "index": "x-%{[container.image.tag]}"}))
    info = LogInfo(**{**info.__dict__, "image_name": "app"})  # no tag
    with pytest.raises(OptionError, match=r"container.image.tag\]\} has no value"):
        template_for(info, parse_options(info.config), "0" * 16)
