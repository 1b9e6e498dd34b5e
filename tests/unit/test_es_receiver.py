"""The test Elasticsearch receiver's own rules (tests/support/elasticsearch.py), over HTTP: what a real cluster
answers, so the Elasticsearch output's tests mean something."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket

import aiohttp
import pytest

from tests.support.elasticsearch import (
    BulkReceiver,
    Cluster,
    Credentials,
    Fault,
    ItemFault,
    ReceiverThread,
    backing_index_name,
    bulk_receiver,
    filter_path,
)

DS = "logs-docker-default"
TS = "2026-12-02T00:04:17.123456789Z"
NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(*pairs) -> bytes:
    """(action, params, source) triples -> a bulk body; a source given as bytes is sent as is."""
    out = []
    for action, params, source in pairs:
        out.append(json.dumps({action: params}).encode())
        if source is not None:
            out.append(source if isinstance(source, bytes) else json.dumps(source).encode())
    return b"\n".join(out) + b"\n"


def doc(message: str = "hello", **extra) -> dict:
    return {"@timestamp": TS, "message": message, **extra}


def create(_id: str | None, source, index: str = DS) -> tuple:
    params = {"_index": index} if _id is None else {"_index": index, "_id": _id}
    return ("create", params, source)


async def post(rx: BulkReceiver, body: bytes, path: str = "/_bulk", headers=None, **params):
    async with aiohttp.ClientSession() as s:
        r = await s.post(rx.url + path, data=body, headers=headers or NDJSON, params=params)
        text = await r.read()
        return r.status, (json.loads(text) if text else None), r.headers


def run(coro_fn, **kw):
    async def main():
        async with bulk_receiver(**kw) as rx:
            return await coro_fn(rx)

    return asyncio.run(main())


async def until(condition, timeout: float = 10) -> None:
    """Poll the receiver's state (on its own loop) until `condition()` holds; fail after `timeout`."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def statuses(resp: dict) -> list[int]:
    return [next(iter(i.values()))["status"] for i in resp["items"]]


# ---- ids, create/index, data streams -----------------------------------------------------------------------
def test_create_twice_is_409_and_a_data_stream_takes_create_only():
    async def go(rx):
        status, resp, headers = await post(rx, ndjson(create("a", doc()), create("a", doc("again")),
                                                      ("index", {"_index": DS, "_id": "b"}, doc())))
        return status, resp, headers, rx.cluster

    status, resp, headers, cluster = run(go)
    assert status == 200 and resp["errors"] is True
    assert statuses(resp) == [201, 409, 400]
    first, dup, wrong_op = (next(iter(i.values())) for i in resp["items"])
    assert first["_index"] == backing_index_name(DS, 1, cluster._now_ms()) and first["result"] == "created"
    assert dup["error"]["type"] == "version_conflict_engine_exception"
    assert "document already exists (current version [1])" in dup["error"]["reason"]
    assert wrong_op["error"]["reason"] == "only write ops with an op_type of create are allowed in data streams"
    assert [d.source["message"] for d in cluster.docs(DS)] == ["hello"] and cluster.duplicates == 1
    assert headers["X-Elastic-Product"] == "Elasticsearch"


def test_a_plain_index_takes_index_which_replaces_and_ids_are_generated_when_absent():
    async def go(rx):
        body = ndjson(("index", {"_index": "plain", "_id": "x"}, {"v": 1}), ("index", {"_id": "x"}, {"v": 2}),
                      ("index", {}, {"v": 3}))
        return (await post(rx, body, path="/plain/_bulk"))[1], rx.cluster

    resp, cluster = run(go)
    assert statuses(resp) == [201, 200, 201]
    assert resp["items"][1]["index"]["result"] == "updated" and resp["items"][1]["index"]["_version"] == 2
    assert len(resp["items"][2]["index"]["_id"]) == 20
    assert sorted(s["v"] for s in cluster.sources("plain")) == [2, 3]


def test_rollover_makes_a_new_backing_index_where_the_same_id_indexes_again():
    async def go(rx):
        await post(rx, ndjson(create("a", doc())))
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"{rx.url}/{DS}/_rollover")
            rolled = await r.json()
            r = await s.get(f"{rx.url}/_data_stream/{DS}")
            info = await r.json()
        _, resp, _ = await post(rx, ndjson(create("a", doc())))
        return rolled, info, resp, rx.cluster

    rolled, info, resp, cluster = run(go)
    assert rolled["rolled_over"] and rolled["new_index"].endswith("-000002")
    assert [i["index_name"] for i in info["data_streams"][0]["indices"]] == [rolled["old_index"], rolled["new_index"]]
    assert statuses(resp) == [201] and resp["items"][0]["create"]["_index"] == rolled["new_index"]
    assert cluster.ids(DS) == {"a": 2} and cluster.count(DS) == 2


def test_data_stream_documents_need_a_timestamp_and_matching_constant_keywords():
    async def go(rx):
        body = ndjson(create(None, {"message": "no time"}), create(None, doc(**{"@timestamp": "yesterday"})),
                      create(None, doc(data_stream={"type": "metrics"})),
                      create(None, doc(**{"data_stream.dataset": "docker", "data_stream.namespace": "default"})),
                      create(None, doc(data_stream={"dataset": "other"})), create(None, doc("kept")))
        first = (await post(rx, body))[1]
        rx.cluster.rollover(DS)  # the constants live in the backing index's mapping: a new one starts unset
        second = (await post(rx, ndjson(create(None, doc(data_stream={"dataset": "other"})))))[1]
        return first, second

    first, second = run(go)
    assert statuses(first) == [400, 400, 400, 201, 400, 201]
    reasons = [next(iter(i.values())).get("error", {}).get("reason", "") for i in first["items"]]
    assert "data stream timestamp field [@timestamp] is missing" in reasons[0]
    assert "failed to parse field [@timestamp]" in reasons[1]
    assert "[constant_keyword] field [data_stream.type]" in reasons[2] and "[logs], but got [metrics]" in reasons[2]
    assert "[docker], but got [other]" in reasons[4]
    assert statuses(second) == [201]


def test_bad_sources_fail_their_item_only():
    async def go(rx):
        body = ndjson(create("1", b'{"message": "a", "message": "b", "@timestamp": "2026-12-02"}'),
                      create("2", b"{not json"), create("3", doc(container={"labels": {"a": "1", "a.b": "2"}})),
                      create("4", doc(n=1)), create("5", doc(n="text")), create("6", doc("fine")),
                      create("7", doc(), index="Upper-Case-x"))
        return (await post(rx, body))[1], rx.cluster

    resp, cluster = run(go)
    assert statuses(resp) == [400, 400, 400, 201, 400, 201, 400]
    errors = [next(iter(i.values())).get("error", {}) for i in resp["items"]]
    assert "Duplicate field 'message'" in errors[0]["reason"]
    assert {e["type"] for e in errors[:3]} == {"document_parsing_exception"}
    assert "[container.labels.a]" in errors[2]["reason"]  # undotted labels clash: why the plugin dedots them
    assert "of type [long]" in errors[4]["reason"]
    assert errors[6]["type"] == "invalid_index_name_exception" and "must be lowercase" in errors[6]["reason"]
    assert sorted(cluster.ids()) == ["4", "6"]


# ---- whole-request rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (ndjson(create("a", doc()))[:-1], 400, "The bulk request must be terminated by a newline [\\n]"),
        (b"", 400, "request body is required"),
        (ndjson(("upsert", {"_index": DS}, doc())), 400, "expected field [create], [delete], [index] or [update]"),
        (ndjson(("create", {"_index": DS, "_type": "_doc"}, doc())), 400, "contains an unknown parameter [_type]"),
        (ndjson(create("x" * 513, doc())), 400, "is too long, must be no longer than 512 bytes but was: 513"),
        (ndjson(("create", {}, doc())), 400, "index is missing"),
        (b'{"create": {"_index": "x"}\n{}\n', 400, ""),
    ],
)
def test_malformed_requests_fail_whole(body, status, reason):
    got, resp, _ = run(lambda rx: post(rx, body))
    assert got == status and reason in resp["error"]["reason"] and resp["status"] == status


def test_content_type_gzip_and_the_size_limit_on_the_decompressed_body():
    body = ndjson(*(create(str(i), doc("x" * 100)) for i in range(50)))

    async def go(rx):
        plain = await post(rx, body, headers={"Content-Type": "text/plain"})
        zipped = await post(rx, gzip.compress(body), headers={**NDJSON, "Content-Encoding": "gzip"})
        rx.max_content_length = len(body) - 1
        big = await post(rx, gzip.compress(body), headers={**NDJSON, "Content-Encoding": "gzip"})
        return plain, zipped, big, rx

    plain, zipped, big, rx = run(go)
    assert plain[0] == 406
    assert zipped[0] == 200 and statuses(zipped[1]) == [201] * 50 and rx.encodings[-1] == "gzip"
    assert big[0] == 413 and big[1] is None  # Netty answers 413 with no body
    assert rx.cluster.count(DS) == 50


def test_filter_path_keeps_what_the_output_asks_for():
    resp = {"took": 3, "errors": False, "items": [{"create": {"_index": "i", "_id": "a", "status": 201}},
                                                   {"create": {"_id": "b", "status": 409, "error": {"type": "v"}}}]}
    assert filter_path(resp, "errors,items.*.status,items.*.error") == {
        "errors": False, "items": [{"create": {"status": 201}}, {"create": {"status": 409, "error": {"type": "v"}}}]}
    assert filter_path({"items": [{"create": {"status": 201}}]}, "items.*.error") == {}
    assert filter_path(resp, "**.type") == {"items": [{"create": {"error": {"type": "v"}}}]}

    async def go(rx):
        return (await post(rx, ndjson(create("a", doc())), filter_path="errors,items.*.status,items.*.error"))[1]

    assert run(go) == {"errors": False, "items": [{"create": {"status": 201}}]}


# ---- security ---------------------------------------------------------------------------------------------------
def test_credentials_basic_and_api_key():
    creds = Credentials(users={"elastic": "changeme"}, api_keys={"kid": "secret"})

    def auth(scheme: str, value: str) -> dict:
        return {**NDJSON, "Authorization": f"{scheme} {base64.b64encode(value.encode()).decode()}"}

    async def go(rx):
        body = ndjson(create(None, doc()))
        return [await post(rx, body), await post(rx, body, headers=auth("Basic", "elastic:changeme")),
                await post(rx, body, headers=auth("Basic", "elastic:wrong")),
                await post(rx, body, headers=auth("ApiKey", "kid:secret")),
                await post(rx, body, headers=auth("ApiKey", "kid:nope"))]

    none, basic, wrong, key, bad_key = run(go, credentials=creds)
    assert none[0] == 401
    assert "missing authentication credentials for REST request [/_bulk]" in none[1]["error"]["reason"]
    assert 'Basic realm="security"' in none[2]["WWW-Authenticate"] and "ApiKey" in none[2]["WWW-Authenticate"]
    assert basic[0] == 200 and key[0] == 200
    assert wrong[0] == 401 and "unable to authenticate user [elastic]" in wrong[1]["error"]["reason"]
    assert bad_key[0] == 401 and none[1]["error"]["type"] == "security_exception"


def test_opensearch_flavour_has_no_api_keys_no_product_header_and_no_logs_data_streams():
    creds = Credentials(users={"admin": "admin"}, api_keys={"kid": "secret"})
    key = {**NDJSON, "Authorization": "ApiKey " + base64.b64encode(b"kid:secret").decode()}

    async def go(rx):
        refused = await post(rx, ndjson(create("a", doc())), headers=key)
        ok = await post(rx, ndjson(("index", {"_index": DS, "_id": "a"}, {"message": "no timestamp needed"})),
                        headers={**NDJSON, "Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()})
        return refused, ok, rx.cluster

    refused, ok, cluster = run(go, flavor="opensearch", credentials=creds)
    assert refused[0] == 401 and "ApiKey" not in refused[2]["WWW-Authenticate"]
    assert ok[0] == 200 and statuses(ok[1]) == [201] and "X-Elastic-Product" not in ok[2]
    assert list(cluster.indices) == [DS] and not cluster.data_streams


# ---- faults -------------------------------------------------------------------------------------------------------
def test_request_faults_then_item_faults_then_blocks():
    async def go(rx):
        body = ndjson(create("a", doc("a")), create("b", doc("b")))
        rx.faults.append(Fault(429, times=1))
        rx.faults.append(Fault(503, times=1))
        rx.faults.append(Fault(413, times=1))
        whole = [await post(rx, body) for _ in range(3)]
        rx.cluster.item_faults.append(ItemFault(429, match=lambda source, _id: _id == "b"))
        first = (await post(rx, body))[1]
        second = (await post(rx, body))[1]  # the fault fired once: b goes in, a is a duplicate now
        rx.cluster.block_writes(DS)
        blocked = (await post(rx, ndjson(create("c", doc("c")))))[1]
        rx.cluster.block_writes(DS, "read_only_allow_delete")
        flood = (await post(rx, ndjson(create("c", doc("c")))))[1]
        rx.cluster.block_writes(DS, None)
        rx.cluster.read_only = True
        cluster_ro = await post(rx, ndjson(create("c", doc("c"))))
        return whole, first, second, blocked, flood, cluster_ro, rx.cluster

    whole, first, second, blocked, flood, cluster_ro, cluster = run(go)
    assert [w[0] for w in whole] == [429, 503, 413]
    assert whole[0][1]["error"]["type"] == "es_rejected_execution_exception" and whole[2][1] is None
    errors = [first["items"][1]["create"]["error"], blocked["items"][0]["create"]["error"]]
    assert statuses(first) == [201, 429] and errors[0]["type"] == "es_rejected_execution_exception"
    assert statuses(second) == [409, 201]
    assert statuses(blocked) == [403] and "FORBIDDEN/8/index write (api)" in errors[1]["reason"]
    assert statuses(flood) == [429] and flood["items"][0]["create"]["error"]["type"] == "cluster_block_exception"
    assert cluster_ro[0] == 403 and cluster_ro[1]["error"]["type"] == "cluster_block_exception"
    assert sorted(cluster.ids(DS)) == ["a", "b"] and cluster.item_statuses[409] == 1


def test_unknown_pipeline_fails_the_item_and_known_ones_are_recorded():
    async def go(rx):
        body = ndjson(("create", {"_index": DS, "_id": "a", "pipeline": "nope"}, doc()), create("b", doc()))
        return (await post(rx, body, pipeline="parse")), rx.cluster

    (status, resp, _), cluster = run(go, cluster=Cluster(pipelines={"parse"}))
    assert statuses(resp) == [400, 201] and "pipeline with id [nope] does not exist" in json.dumps(resp)
    assert [d.pipeline for d in cluster.docs(DS)] == ["parse"]


def test_closed_connections_and_a_hang():
    async def go(rx):
        rx.close_connections = 1
        with pytest.raises(aiohttp.ClientError):
            await post(rx, ndjson(create("a", doc())))
        rx.hang = True
        async with aiohttp.ClientSession() as s:
            task = asyncio.ensure_future(s.post(rx.url + "/_bulk", data=ndjson(create("a", doc())), headers=NDJSON))
            await rx.got_request.wait()
            rx.got_request.clear()
            await asyncio.wait_for(rx.got_request.wait(), 10)  # the hung request reached the handler
            assert not task.done()
            task.cancel()
        return rx.requests, rx.cluster.count()

    assert run(go) == (2, 0)


def test_thread_receiver_goes_down_and_up_on_the_same_port_keeping_its_indices():
    import urllib.request

    rx = ReceiverThread().start()
    try:
        def send(_id: str) -> dict:
            req = urllib.request.Request(rx.url + "/_bulk", data=ndjson(create(_id, doc())), headers=NDJSON)
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        assert statuses(send("a")) == [201]
        port = rx.receiver.port
        rx.down()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        rx.up()
        assert rx.receiver.port == port
        assert statuses(send("a")) == [409] and rx.call(lambda r: r.cluster.count(DS)) == 1
    finally:
        rx.close()


def test_lost_answers_index_first_then_close_and_hooks_can_roll_over_in_between():
    async def go(rx):
        rx.lose_answers = 1
        rx.on_lost_answer = lambda r: r.cluster.rollover(DS)
        with pytest.raises(aiohttp.ClientError):
            await post(rx, ndjson(create("a", doc())))
        resend = (await post(rx, ndjson(create("a", doc()))))[1]  # lands in the new backing index: a second copy
        rx.hang_after_indexing = True
        async with aiohttp.ClientSession() as s:
            task = asyncio.ensure_future(s.post(rx.url + "/_bulk", data=ndjson(create("b", doc())), headers=NDJSON))
            await until(lambda: rx.answers_lost == 2)
            indexed_while_hung = rx.cluster.count(DS)
            rx.release()
            r = await asyncio.wait_for(task, 10)
            answered = r.status
        return resend, indexed_while_hung, answered, rx.cluster

    resend, indexed_while_hung, answered, cluster = run(go)
    assert statuses(resend) == [201] and cluster.ids(DS) == {"a": 2, "b": 1}
    assert [len(i.docs) for i in cluster.resolve(DS)] == [1, 2]
    assert indexed_while_hung == 3 and answered == 200


def test_the_benchs_count_only_receiver_counts_what_the_cluster_would_index():
    from bench.elasticsearch import answer, count_documents

    body = ndjson(*(create(str(i), doc(f"line\\n{i}")) for i in range(1000)))
    assert count_documents(body) == 1000 == statuses(Cluster().bulk(body)).count(201)
    assert json.loads(answer(3)) == {"errors": False, "items": [{"create": {"status": 201}}] * 3}
    for bad in (body[:-1], body + b"{}\n", ndjson(("index", {"_index": "x"}, {"v": 1}))):
        with pytest.raises(ValueError):
            count_documents(bad)


def test_the_benchs_receiver_speaks_keep_alive_http_with_bodies_split_anywhere():
    """bench.elasticsearch's own HTTP/1.1 server: bodies by Content-Length arriving in any pieces, requests one
    after another on one connection (a pipelined head right behind a body too), gzip, 400 for a body that is not
    create pairs, 404 elsewhere; what it counts is what was sent."""
    from bench.elasticsearch import BulkProtocol, Counter

    body = ndjson(*(create(str(i), doc(f"line {i}")) for i in range(500)))
    zipped = gzip.compress(body)

    def request(data: bytes, path: str = "/_bulk?filter_path=errors", extra: bytes = b"") -> bytes:
        return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), len(data), extra)
                + data)

    async def main():
        counter = Counter()
        server = await asyncio.get_running_loop().create_server(lambda: BulkProtocol(counter), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        wire = (request(body) + request(zipped, extra=b"Content-Encoding: gzip\r\n")
                + request(body[:-1]) + request(b"", "/_cat/indices") + request(body, "/logs-x/_bulk"))
        answers = []
        for at in range(0, len(wire), 7001):  # pieces cutting heads and bodies anywhere
            writer.write(wire[at:at + 7001])
            await writer.drain()
        while len(answers) < 5:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answers.append((int(head.split(b" ")[1]), json.loads(await reader.readexactly(length))))
        writer.close()
        server.close()
        return counter.stats, answers

    stats, answers = asyncio.run(asyncio.wait_for(main(), 30))
    assert [status for status, _ in answers] == [200, 200, 400, 404, 200]
    assert all(len(a["items"]) == 500 and not a["errors"] for s, a in answers if s == 200)
    assert stats["records"] == 1500 and stats["requests"] == 4 and stats["protocol_errors"] == 1
