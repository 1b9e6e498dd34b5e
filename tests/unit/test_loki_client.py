"""The Loki client: status rules, headers, basic auth from the URL, TLS settings."""

from __future__ import annotations

import asyncio
import time

import pytest

from driver.options import OptionError, parse_options
from driver.outputs.loki import codec
from driver.outputs.loki.client import LokiClient, Outcome, classify, parse_retry_after, split_credentials
from driver.outputs.loki.options import OPTION_ROWS, settings_from
from tests.support.loki import Fault, loki_receiver


def parsed(config: dict):
    """parse_options with the Loki rows in the one table (Loki is a built-in output)."""
    return parse_options(config)


def settings(url: str, **config):
    return settings_from(parsed({"loki-url": url, **config}))


@pytest.mark.parametrize("status, outcome", [
    (200, Outcome.STORED), (204, Outcome.STORED), (429, Outcome.RETRY), (500, Outcome.RETRY),
    (503, Outcome.RETRY), (0, Outcome.RETRY), (401, Outcome.DOWN), (403, Outcome.DOWN), (404, Outcome.DOWN),
    (413, Outcome.SPLIT), (400, Outcome.REJECTED), (422, Outcome.REJECTED),
])
def test_status_rules(status, outcome):
    assert classify(status) is outcome


def test_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None and parse_retry_after("99999") == 3600.0


def test_credentials_leave_the_url_for_a_basic_auth_header():
    url, auth = split_credentials("https://user:s3cret@logs.example/loki/api/v1/push")
    assert url == "https://logs.example/loki/api/v1/push" and auth == "Basic dXNlcjpzM2NyZXQ="


def test_defaults_are_the_drivers():
    s = settings("http://loki:3100/loki/api/v1/push")
    assert (s.batch_bytes, s.batch_wait, s.timeout, s.min_backoff, s.max_backoff) == (1048576, 1.0, 10.0, 0.5, 300.0)
    assert s.tenant is None and not s.structured_metadata and s.limits.max_line_size == 256_000


@pytest.mark.parametrize("config, complaint", [
    ({"loki-pipeline-stages": "- json: {}"}, "pipeline stages are not supported yet"),
    ({"loki-pipeline-stage-file": "/p.yaml"}, "pipeline stages are not supported yet"),
    ({"loki-relabel-config": "- action: nope"}, "loki-relabel-config: rule 1: unknown action"),
    ({"loki-url": "loki:3100"}, "http:// or https://"),
    ({"loki-tls-cert-file": "/c.pem"}, "go together"),
])
def test_bad_options_fail_docker_run(config, complaint):
    with pytest.raises(OptionError, match=complaint):
        settings_from(parsed({"loki-url": "http://l/loki/api/v1/push", **config}))


def test_driver_option_set_is_accepted():
    s = settings("http://l/loki/api/v1/push", **{
        "loki-tenant-id": "t", "loki-external-labels": "job=docker", "loki-batch-size": "400", "loki-batch-wait": "2s",
        "loki-timeout": "1s", "loki-min-backoff": "100ms", "loki-max-backoff": "800ms", "loki-retries": "2",
        "loki-tls-insecure-skip-verify": "true", "loki-proxy-url": "http://proxy:3128", "no-file": "false",
        "keep-file": "true", "max-size": "10m", "max-file": "3", "mode": "non-blocking",
        "max-buffer-size": "4m", "labels": "a", "env": "B", "env-regex": "^C"})
    assert (s.tenant, s.batch_bytes, s.max_backoff, s.proxy_url) == ("t", 400, 0.8, "http://proxy:3128")


def test_push_sends_protobuf_snappy_tenant_and_basic_auth():
    async def main():
        async with loki_receiver() as rx:
            url = rx.url.replace("http://", "http://me:pw@")
            client = LokiClient(settings(url, **{"loki-tenant-id": "acme"}))
            buf = bytearray()
            codec.append_entry(buf, time.time_ns(), b"hi")
            r1 = await client.push(codec.compress(codec.push_request([codec.stream_bytes('{a="b"}', buf)])))
            rx.faults.append(Fault(500, 1, body="ingester down\nmore detail"))
            r2 = await client.push(b"")
            await client.close()
            return rx, r1, r2

    rx, r1, r2 = asyncio.run(main())
    assert r1.outcome is Outcome.STORED and r1.status == 204
    assert rx.lines("acme") == [b"hi"] and rx.tenant_headers[0] == "acme"
    assert rx.auth_headers[0] == "Basic bWU6cHc="
    assert (r2.outcome, r2.status, r2.message) == (Outcome.RETRY, 500, "ingester down")


def test_connection_refused_is_a_retry():
    async def main():
        async with loki_receiver() as rx:
            url = rx.url
        client = LokiClient(settings(url))
        result = await client.push(b"x")
        await client.close()
        return result

    result = asyncio.run(main())
    assert result.outcome is Outcome.RETRY and result.status == 0


def test_rows_are_new_names_and_their_defaults_parse():
    import driver.options as options

    others = [o.name for o in options.option_table() if o.group != "loki"]
    assert not {o.name for o in OPTION_ROWS} & set(others)
    assert set(OPTION_ROWS) <= set(options.option_table())
    for o in OPTION_ROWS:
        if o.default is not None:
            o.kind.parse(o.default)
    assert all(o.group == "loki" for o in OPTION_ROWS)


def test_output_is_turned_on_by_loki_url():
    from driver.outputs.loki.options import enabled

    assert enabled(parsed({"loki-url": "http://l/loki/api/v1/push"}))
    assert not enabled(parsed({}))


# ---- TLS (the forward tests' throwaway CA) ------------------------------------------------------------------
from tests.unit.test_forward_client import _leaf, _openssl  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA with a server certificate for 127.0.0.1/localhost and a client one (forward's helpers)."""
    cwd = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=logbridge test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)  # fmt: skip
    _leaf(cwd, "server", "serverAuth")
    _leaf(cwd, "client", "clientAuth")
    return cwd


def _server_ctx(pki, client_ca: bool = False):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    if client_ca:
        ctx.load_verify_locations(str(pki / "ca.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _push_over_tls(pki, config: dict, *, client_ca: bool = False, host: str = "127.0.0.1"):
    async def main():
        async with loki_receiver(ssl_context=_server_ctx(pki, client_ca)) as rx:
            client = LokiClient(settings(rx.url.replace("127.0.0.1", host), **config))
            buf = bytearray()
            codec.append_entry(buf, time.time_ns(), b"secure")
            result = await client.push(codec.compress(codec.push_request([codec.stream_bytes('{a="b"}', buf)])))
            await client.close()
            return result, rx.lines()

    return asyncio.run(main())


def test_tls_with_a_private_ca(pki):
    result, lines = _push_over_tls(pki, {"loki-tls-ca-file": str(pki / "ca.pem")})
    assert result.outcome is Outcome.STORED and lines == [b"secure"]


def test_tls_verifies_by_default(pki):
    result, lines = _push_over_tls(pki, {})
    assert result.outcome is Outcome.RETRY and "certificate" in result.message.lower() and lines == []


def test_tls_insecure_skip_verify(pki):
    result, _ = _push_over_tls(pki, {"loki-tls-insecure-skip-verify": "true"})
    assert result.outcome is Outcome.STORED


def test_tls_server_name(pki):
    ca = {"loki-tls-ca-file": str(pki / "ca.pem")}
    assert _push_over_tls(pki, {**ca, "loki-tls-server-name": "localhost"})[0].outcome is Outcome.STORED
    assert _push_over_tls(pki, {**ca, "loki-tls-server-name": "elsewhere"})[0].outcome is Outcome.RETRY


def test_mutual_tls(pki):
    ca = {"loki-tls-ca-file": str(pki / "ca.pem")}
    assert _push_over_tls(pki, ca, client_ca=True)[0].outcome is Outcome.RETRY
    mtls = {**ca, "loki-tls-cert-file": str(pki / "client.pem"), "loki-tls-key-file": str(pki / "client.key")}
    assert _push_over_tls(pki, mtls, client_ca=True)[0].outcome is Outcome.STORED
