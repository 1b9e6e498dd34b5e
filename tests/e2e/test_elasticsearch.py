"""The Elasticsearch output on a real dockerd, against tests/support/elasticsearch.py (a bulk receiver that
answers as Elasticsearch does: `_id` unique per backing index, data streams, rollover, item errors). Written
against Elastic's logging plugin's option names (hosts, user, password, api_key, index, pipeline, name, ...)
and the document fields of issue 10. Every wait is for an event (a count reached, a state dir gone, a request
hung), never for a time.

The receiver runs in a thread of this process on 127.0.0.1 (`ReceiverThread`): a legacy plugin is a host
process and a managed plugin uses the host network, so both reach it. Counts are printed (run with -s).
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections import Counter

import pytest

from tests.support import wait_for, wait_for_entries
from tests.support.elasticsearch import Credentials, ItemFault, ReceiverThread
from tests.support.receiver import ReceiverProcess, free_port

pytestmark = pytest.mark.e2e

FAST_RETRY = {"backoff_init": "100ms", "backoff_max": "500ms"}  # outages: back within a second of the return
ALL_LOGS = "logs-docker-*"  # the default target's data streams, whatever the version and day
ID = re.compile(r"([0-9a-f]{16})-([0-9a-f]{64})-(\d+)")  # <journal incarnation>-<container id>-<journal offset>
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


@pytest.fixture
def es():
    """Factory: es(port=0, **BulkReceiver kwargs) -> a started ReceiverThread; all closed at the end."""
    made: list[ReceiverThread] = []

    def make(port: int = 0, **kwargs) -> ReceiverThread:
        rx = ReceiverThread(port=port, **kwargs).start()
        made.append(rx)
        return rx

    yield make
    for rx in made:
        rx.close()


def opts(rx: ReceiverThread, **extra: str) -> dict[str, str]:
    return {"hosts": rx.url, **FAST_RETRY, **extra}


def field(source: dict, path: str):
    """A field by its dotted path, whether the source nests it (`{"container": {"id"}}`) or dots it."""
    cur, parts, i = source, path.split("."), 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if isinstance(cur, dict) and key in cur:
                cur, i = cur[key], j
                break
        else:
            raise KeyError(path)
    return cur


def count(rx: ReceiverThread, target: str | None = ALL_LOGS) -> int:
    return rx.call(lambda r: r.cluster.count(target))


def sources(rx: ReceiverThread, target: str | None = ALL_LOGS) -> list[dict]:
    return rx.call(lambda r: [dict(d.source) for d in r.cluster.docs(target)])


def wait_count(rx: ReceiverThread, n: int, target: str | None = ALL_LOGS, timeout: float = 90) -> None:
    try:
        wait_for(f"{n} documents in {target}", lambda: count(rx, target) >= n, timeout)
    finally:
        print(f"\n[{target}] {count(rx, target)} documents of {n}; item statuses "
              f"{dict(rx.call(lambda r: r.cluster.item_statuses))}")


def messages(docs: list[dict], cid: str | None = None) -> Counter[str]:
    return Counter(field(d, "message") for d in docs if cid is None or field(d, "container.id") == cid)


def numbers(n: int, first: int = 1) -> Counter[str]:
    return Counter(str(i) for i in range(first, n + 1))


def es_cursor(plugin, cid: str) -> dict:
    """The Elasticsearch output's saved cursor: pos and extra (indexed, duplicates, dropped by error.type)."""
    path = plugin.state_dir / "containers" / cid / "cursors" / "elasticsearch.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def ok(result) -> None:
    assert result.rc == 0, result.stderr.decode(errors="replace")


def seq(n: int, first: int = 1) -> tuple[str, ...]:
    return ("sh", "-c", f"seq {first} {n}")


# ---------------------------------------------------------------------------------------------- documents
def test_every_line_is_one_document_with_elastics_fields_and_ours(legacy_plugin, docker_run, es, bb_image):
    plugin, rx = legacy_plugin(), es()
    n = 300
    script = f"echo '  padded line  '; echo to-stderr >&2; seq 1 {n}"
    result = docker_run(plugin.driver, "sh", "-c", script, name="es-fields",
                        extra_args=["--label", "com.example.team=core", "-e", "STAGE=test"],
                        log_opts=opts(rx, name="e2e-agent", labels="com.example.team", env="STAGE"))
    ok(result)
    cid = result.container_id
    wait_count(rx, n + 2)
    docs = sources(rx)
    assert len(docs) == n + 2
    by_message = {field(d, "message"): d for d in docs}
    assert "  padded line  " in by_message  # the line as written: Elastic's plugin trims it
    assert field(by_message["to-stderr"], "stream") == "stderr" and field(by_message["1"], "stream") == "stdout"
    stdout = sorted((d for d in docs if field(d, "stream") == "stdout"), key=lambda d: field(d, "event.sequence"))
    assert [field(d, "message") for d in stdout] == ["  padded line  "] + [str(i) for i in range(1, n + 1)]
    sequences = [field(d, "event.sequence") for d in docs]
    assert len(set(sequences)) == len(sequences)  # the journal offset: exact order, one per entry
    image_name, image_tag = bb_image.rsplit(":", 1)
    for d in docs:
        assert RFC3339_NANO.fullmatch(field(d, "@timestamp"))
        assert field(d, "container.id") == cid and field(d, "container.name") == "es-fields"
        assert field(d, "container.image.name") == image_name and field(d, "container.image.tag") == image_tag
        labels = field(d, "container.labels")  # every label of the container (the image's too), dedotted
        assert labels["com_example_team"] == "core" and not [k for k in labels if "." in k]
        assert field(d, "labels.STAGE") == "test"
        assert field(d, "host.name") == socket.gethostname()
        assert field(d, "agent.name") == "e2e-agent"
    # nanoseconds reach the document (the date mapping keeps milliseconds: event.sequence keeps the order)
    assert any(not field(d, "@timestamp").endswith("000000Z") for d in docs)
    streams = rx.call(lambda r: {name: [i.name for i in ds.indices] for name, ds in r.cluster.data_streams.items()})
    assert len(streams) == 1
    (name, backing), = streams.items()
    assert re.fullmatch(r"logs-docker-[0-9][^-]*-\d{4}\.\d\d\.\d\d", name), name  # logs-docker-<version>-<day>
    assert len(backing) == 1 and backing[0].startswith(f".ds-{name}-")
    for d in rx.call(lambda r: [(x.id, dict(x.source)) for x in r.cluster.docs(ALL_LOGS)]):
        _id, source = d
        m = ID.fullmatch(_id)
        assert m and m.group(2) == cid and int(m.group(3)) == field(source, "event.sequence")
    assert len(plugin.json_log(cid).read_bytes().splitlines()) == n + 2  # json.log as always


def test_elastics_option_set_is_accepted_and_unknown_options_fail(legacy_plugin, docker_run, es, dockerd):
    plugin = legacy_plugin()
    basic = es(credentials=Credentials(users={"elastic": "changeme"}), cluster=None)
    basic.call(lambda r: setattr(r.cluster, "pipelines", {"parse-bb"}))
    keyed = es(credentials=Credentials(api_keys={"kid": "secret"}))
    dead = f"http://127.0.0.1:{free_port()}"
    # every option of Elastic's plugin (x-pack/dockerlogbeat/pipelinemanager/config.go); the first host is dead
    a = docker_run(plugin.driver, *seq(50), name="es-opts-a", log_opts={
        "hosts": f"{dead},{basic.url}", "user": "elastic", "password": "changeme",
        "index": "logbridge-%{[container.name]}-%{+yyyy.MM.dd}", "pipeline": "parse-%{[container.image.name]}",
        "name": "opts-agent", "backoff_init": "100ms", "backoff_max": "1s", "timeout": "30"})
    b = docker_run(plugin.driver, *seq(50), name="es-opts-b",
                   log_opts=opts(keyed, api_key="kid:secret", **{"es-compress": "true"}))
    for r in (a, b):
        ok(r)
    wait_count(basic, 50, "logbridge-es-opts-a-*")
    wait_count(keyed, 50)
    assert {d.pipeline for d in basic.call(lambda r: r.cluster.docs())} == {"parse-bb"}
    assert {field(s, "agent.name") for s in sources(basic, None)} == {"opts-agent"}
    assert basic.call(lambda r: {h for h in r.auth_headers if h}) == {
        "Basic " + base64.b64encode(b"elastic:changeme").decode()}
    assert keyed.call(lambda r: set(r.auth_headers)) == {"ApiKey " + base64.b64encode(b"kid:secret").decode()}
    assert keyed.call(lambda r: set(r.encodings)) == {"gzip"}
    assert keyed.call(lambda r: {q.get("filter_path") for q in r.queries}) == {"errors,items.*.status,items.*.error"}
    # unlike Elastic's plugin, a wrong option fails docker run and says which
    for bad, word in (({"es-no-such-option": "1"}, "es-no-such-option"), ({"index": "x-%{[no.such]}"}, "index"),
                      ({"timeout": "soon"}, "timeout")):
        r = docker_run(plugin.driver, *seq(1), log_opts=opts(keyed, **bad))
        assert r.rc != 0 and word in r.stderr.decode(errors="replace"), r.stderr


def test_elastic_cloud_options_as_elastics_users_have_them(legacy_plugin, docker_run):
    """Elastic's plugin requires hosts even with cloud_id (config.go: "A hosts flag is required"); cloud_id then
    overrides hosts, and cloud_auth the user (libbeat/cloudid OverwriteSettings). Nothing here is reachable:
    the container is not blocked either."""
    plugin = legacy_plugin()
    cloud_id = "e2e:" + base64.b64encode(b"example.invalid:443$es0$kb0").decode()
    result = docker_run(plugin.driver, *seq(5), name="es-opts-cloud", log_opts={
        "hosts": "localhost:9200", "cloud_id": cloud_id, "cloud_auth": "elastic:changeme",
        "proxy_url": f"http://127.0.0.1:{free_port()}"})
    ok(result)
    assert wait_for_entries(plugin.json_log(result.container_id), 5)


# ------------------------------------------------------------------------------------------ failures, resends
def test_receiver_down_while_containers_write_then_every_document_once(legacy_plugin, docker_run, es):
    plugin, rx = legacy_plugin(), es()
    rx.down()
    n, names = 3000, ("es-down-1", "es-down-2", "es-down-3")
    results = [docker_run(plugin.driver, *seq(n), name=name, log_opts=opts(rx)) for name in names]
    for r in results:
        ok(r)
    assert rx.call(lambda r: r.requests) == 0  # every container exited while nothing answered
    rx.up()
    wait_count(rx, len(names) * n)
    docs = sources(rx)
    for r in results:
        assert messages(docs, r.container_id) == numbers(n)  # every line, none twice
    assert count(rx) == len(names) * n


def test_plugin_sigkill_mid_stream_indexes_every_line_exactly_once(legacy_plugin, es, dockerd, bb_image):
    plugin, rx = legacy_plugin(), es()
    n = 2000
    rx.call(lambda r: setattr(r, "hang_after_indexing", True))  # the first bulk is indexed and never answered
    args = [f"--log-opt={k}={v}" for k, v in opts(rx).items()]
    cid = dockerd.docker(
        "run", "-d", "--network", "none", "--log-driver", plugin.driver, *args, bb_image, "sh", "-c",
        f"seq 1 {n}; while [ ! -e /tmp/stop ]; do usleep 10000; done; seq {n + 1} {2 * n}",
    ).stdout.decode().strip()
    try:
        wait_for("a bulk request indexed and hung", lambda: rx.call(lambda r: r.answers_lost) >= 1, 60)
        indexed_before_kill = count(rx)
        plugin.kill()  # its cursor never saw that answer
        rx.call(lambda r: r.release())
        plugin.start()
        dockerd.docker("exec", cid, "touch", "/tmp/stop")
        wait_count(rx, 2 * n)
        docs = sources(rx)
        duplicates = rx.call(lambda r: r.cluster.duplicates)
        print(f"[SIGKILL mid-stream] indexed before the kill {indexed_before_kill}, 409s after the restart "
              f"{duplicates}")
        assert messages(docs) == numbers(2 * n)  # exactly once within the backing index
        assert rx.call(lambda r: len(r.cluster.data_streams[next(iter(r.cluster.data_streams))].indices)) == 1
        assert duplicates >= 1  # the resent batch was there already: answered 409, not indexed twice
    finally:
        dockerd.docker("rm", "-f", cid, check=False)


def test_a_resend_across_a_rollover_makes_a_second_copy(legacy_plugin, docker_run, es):
    """The documented limit: `_id` is unique per backing index only. The first bulk is indexed but its answer is
    lost, and the data stream rolls over before the resend: the resent documents are new in the new backing
    index, so that one batch is there twice (once per backing index); nothing else is."""
    plugin, rx = legacy_plugin(), es()
    target = "logs-docker-rollover"
    rx.call(lambda r: setattr(r, "lose_answers", 1))
    rx.call(lambda r: setattr(r, "on_lost_answer", lambda rcv: rcv.cluster.rollover(target)))
    n = 3000
    ok(docker_run(plugin.driver, *seq(n), name="es-rollover", log_opts=opts(rx, index=target)))
    wait_for("the first bulk indexed, unanswered, and rolled over", lambda: rx.call(lambda r: r.answers_lost), 60)
    old, new = rx.call(lambda r: [i.name for i in r.cluster.data_streams[target].indices])
    wait_count(rx, n, new)  # the resend of the first batch and everything after it
    first_batch = sources(rx, old)
    second_copy = [field(d, "message") for d in first_batch]
    print(f"[resend across a rollover] {len(first_batch)} documents twice, in {old} and {new}: "
          f"{second_copy[:3]}...")
    assert 0 < len(first_batch) < n
    assert messages(sources(rx, new)) == numbers(n)  # the new backing index holds every line once
    twice = {i for i, c in rx.call(lambda r: r.cluster.ids(target)).items() if c == 2}
    assert twice == {d.id for d in rx.call(lambda r: list(r.cluster.docs(old)))}
    assert count(rx, target) == n + len(first_batch)


def test_container_started_again_after_retention_removed_its_state_gets_new_ids(legacy_plugin, docker_run, es,
                                                                                 dockerd):
    plugin = legacy_plugin(env={"RETENTION_SECONDS": "1", "RETENTION_INTERVAL": "0.2"})
    rx = es()
    n = 500
    first = docker_run(plugin.driver, *seq(n), name="es-retention", log_opts=opts(rx))
    ok(first)
    cid = first.container_id
    wait_count(rx, n)
    state = plugin.state_dir / "containers" / cid
    wait_for("retention to remove the stopped container's state", lambda: not state.exists(), 60)
    dockerd.docker("start", "-a", cid)  # same container id; the journal starts again at offset 0
    wait_count(rx, 2 * n)
    ids = rx.call(lambda r: r.cluster.ids(ALL_LOGS))
    assert rx.call(lambda r: r.cluster.duplicates) == 0  # no new line was taken for an old one
    assert messages(sources(rx)) == Counter({k: 2 for k in numbers(n)})
    assert len(ids) == 2 * n and len({ID.fullmatch(i).group(1) for i in ids}) == 2  # two incarnations


def test_items_rejected_for_good_are_dropped_once_and_the_rest_indexed(legacy_plugin, docker_run, es):
    plugin, rx = legacy_plugin(), es()
    reject = ItemFault(400, "document_parsing_exception", "failed to parse field [message]", times=None,
                       match=lambda source, _id: str(field(source, "message")).startswith("bad"))
    rx.call(lambda r: r.cluster.item_faults.append(reject))
    script = "for i in $(seq 1 200); do if [ $((i % 10)) = 0 ]; then echo bad $i; else echo $i; fi; done"
    first = docker_run(plugin.driver, "sh", "-c", script, name="es-reject", log_opts=opts(rx))
    ok(first)
    wait_count(rx, 180)
    # counted by error.type in the output's saved counts (what the status view and the metrics show)
    wait_for("the rejects counted", lambda: es_cursor(plugin, first.container_id).get("extra", {}).get("dropped")
             == {"document_parsing_exception": 20}, 30)
    # a later container through the same batcher: once its lines are in, any retry of the rejects would be too
    later = docker_run(plugin.driver, *seq(20), name="es-reject-later", log_opts=opts(rx))
    ok(later)
    wait_count(rx, 200)
    docs = sources(rx)
    assert not [d for d in docs if field(d, "message").startswith("bad")]
    assert messages(docs) == numbers(200) - Counter(str(i) for i in range(10, 201, 10)) + numbers(20)
    assert rx.call(lambda r: r.cluster.item_statuses[400]) == 20  # each reject sent once: final, not retried


def test_elasticsearch_dead_does_not_delay_forward(legacy_plugin, docker_run, es, tmp_path):
    plugin = legacy_plugin()
    forward = ReceiverProcess(tmp_path / "forward").start()
    try:
        port = free_port()
        n = 2000
        result = docker_run(plugin.driver, *seq(n), name="es-and-forward", log_opts={
            "hosts": f"http://127.0.0.1:{port}", **FAST_RETRY, "fluentd-address": forward.address})
        ok(result)
        forward_logs = forward.wait_records(n)
        assert [r["record"]["log"] for r in forward_logs] == [str(i) for i in range(1, n + 1)]  # complete
        rx = es(port=port)  # Elasticsearch comes back: it gets everything too
        wait_count(rx, n)
        assert messages(sources(rx)) == numbers(n)
    finally:
        forward.stop()


def test_managed_plugin_indexes(managed_plugin, docker_run, es):
    plugin, rx = managed_plugin(), es()
    n = 1000
    ok(docker_run(plugin.driver, *seq(n), log_opts=opts(rx, **{"es-compress": "true"})))
    wait_count(rx, n)
    assert messages(sources(rx)) == numbers(n)
    print(json.dumps({"bulk requests": rx.call(lambda r: r.requests)}))
