"""The Elasticsearch bulk client against the protocol-faithful receiver: what each answer means, TLS, gzip,
failover between hosts, timeouts."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from driver.options import parse_options
from driver.outputs.elasticsearch.client import EsClient, Outcome
from driver.outputs.elasticsearch.codec import Documents
from driver.outputs.elasticsearch.options import settings_from
from tests.support.elasticsearch import Fault, bulk_receiver
from tests.unit.test_loki_client import _server_ctx, pki  # noqa: F401  (pki: the forward tests' throwaway CA)

DOC = b'{"create":{"_index":"logs-docker-default"}}\n{"@timestamp":"2026-12-02T00:00:00.000000001Z","message":"m"}\n'


def client_for(hosts: str, **opts) -> EsClient:
    return EsClient(settings_from(parse_options({"hosts": hosts, **opts})))


def bulk(hosts_of, *, receiver=None, **opts):
    """One bulk request of DOC; ``hosts_of(url)`` makes the hosts option from the receiver's URL."""

    async def main():
        async with bulk_receiver(**(receiver or {})) as rx:
            setup = opts.pop("setup", None)
            if setup:
                setup(rx)
            client = client_for(hosts_of(rx.url), **opts)
            result = await client.bulk(DOC, 1)
            await client.close()
            return result, rx

    return asyncio.run(main())


def test_a_2xx_without_errors_settles_every_item_and_gzip_is_sent_when_asked():
    result, rx = bulk(lambda url: url, **{"es-compress": "true"})
    assert result.outcome is Outcome.ANSWERED and result.items is None and rx.cluster.count() == 1
    assert rx.encodings == ["gzip"] and rx.body_bytes == len(gzip.compress(DOC, 1))


@pytest.mark.parametrize("status, outcome", [(429, Outcome.RETRY), (503, Outcome.RETRY), (401, Outcome.RETRY),
                                             (404, Outcome.RETRY), (413, Outcome.SPLIT)])
def test_whole_request_statuses(status, outcome):
    result, rx = bulk(lambda url: url, setup=lambda rx: rx.faults.append(Fault(status)))
    assert (result.outcome, result.status) == (outcome, status) and rx.cluster.count() == 0


def test_a_failed_host_hands_the_next_request_to_the_next_one():
    async def main():
        async with bulk_receiver() as rx:
            rx.faults.append(Fault(503))
            client = client_for(f"{rx.url},http://127.0.0.1:9")
            first = await client.bulk(DOC, 1)  # 503: next host
            second = await client.bulk(DOC, 1)  # refused: back to the first
            third = await client.bulk(DOC, 1)
            await client.close()
            return first, second, third, rx

    first, second, third, rx = asyncio.run(main())
    assert (first.status, second.status, third.status) == (503, 0, 200) and rx.cluster.count() == 1


def test_a_hanging_cluster_times_out_and_is_retried():
    result, rx = bulk(lambda url: url, setup=lambda rx: setattr(rx, "hang", True), timeout="100ms")
    assert result.outcome is Outcome.RETRY and result.status == 0 and "Timeout" in result.message


def test_tls_with_a_private_ca_and_verification_by_default(pki):  # noqa: F811
    ca = {"es-tls-ca-file": str(pki / "ca.pem")}
    ok, rx = bulk(lambda url: url, receiver={"ssl_context": _server_ctx(pki)}, **ca)
    assert ok.outcome is Outcome.ANSWERED and rx.cluster.count() == 1
    refused, rx = bulk(lambda url: url, receiver={"ssl_context": _server_ctx(pki)})
    assert refused.outcome is Outcome.RETRY and "certificate" in refused.message.lower() and rx.cluster.count() == 0
    skipped, _ = bulk(lambda url: url, receiver={"ssl_context": _server_ctx(pki)},
                      **{"es-tls-insecure-skip-verify": "true"})
    assert skipped.outcome is Outcome.ANSWERED


def test_mutual_tls(pki):  # noqa: F811
    ctx = {"ssl_context": _server_ctx(pki, client_ca=True)}
    ca = {"es-tls-ca-file": str(pki / "ca.pem")}
    assert bulk(lambda url: url, receiver=ctx, **ca)[0].outcome is Outcome.RETRY
    mtls = {**ca, "es-tls-cert-file": str(pki / "client.pem"), "es-tls-key-file": str(pki / "client.key")}
    assert bulk(lambda url: url, receiver=ctx, **mtls)[0].outcome is Outcome.ANSWERED


def _part(tag: str, n: int) -> Documents:
    line = (b'{"create":{"_index":"logs-docker-default"}}\n'
            b'{"@timestamp":"2026-12-02T00:00:00Z","message":"%s-%06d ' + b"x" * 200 + b'"}\n')
    return Documents.of(line.replace(b"%s", tag.encode()) % i for i in range(n))


@pytest.mark.parametrize("how", ["plain", "gzip", "tls"])
def test_a_body_handed_over_in_pieces_arrives_whole_and_in_order(how, pki):  # noqa: F811
    """Several parts' views (a whole part, one run, scattered runs) go out without being joined: Elasticsearch
    reads every document of them once, in order, plain, gzipped and over TLS, with a body large enough (~6 MiB)
    that the socket takes it in several writes."""
    a, b, c = _part("a", 12000), _part("b", 9000), _part("c", 6000)
    scattered = [i for i in range(6000) if i % 1000 < 990]  # 6 runs of consecutive documents
    pieces = [*a.pieces(range(12000)), *b.pieces(range(100, 8000)), *c.pieces(scattered)]
    expected = ([f"a-{i:06d}" for i in range(12000)] + [f"b-{i:06d}" for i in range(100, 8000)]
                + [f"c-{i:06d}" for i in scattered])
    receiver = {"ssl_context": _server_ctx(pki)} if how == "tls" else {}
    opts = {"es-compress": "true"} if how == "gzip" else {"es-tls-ca-file": str(pki / "ca.pem")} if how == "tls" else {}

    async def main():
        async with bulk_receiver(**receiver) as rx:
            client = client_for(rx.url, **opts)
            result = await client.bulk(pieces, len(expected))
            await client.close()
            return result, [doc["message"].split(" ")[0] for doc in rx.cluster.sources()]

    result, got = asyncio.run(main())
    assert result.outcome is Outcome.ANSWERED and result.items is None
    assert got == expected
    assert all(isinstance(p, memoryview) for p in pieces[1:]) and pieces[0] is a.body  # none was copied
