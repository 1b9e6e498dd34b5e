"""The direct Loki output on a real dockerd: the Loki driver's option set (pipeline stages refused), its labels,
the receiver down while containers write, the plugin SIGKILLed between Loki's store and its 2xx, entries Loki
refuses counted by reason, forward and Loki at once with one of them dead, `docker logs` as with json-file,
structured metadata only when asked for.

The Loki is tests/support/loki.py's protocol-faithful receiver, served from a thread of this process on
127.0.0.1 (the legacy plugin is a host process). Every check is on the order of events (a container exited
while the receiver was down, a push was stored and held when the kill came), never on elapsed time. Counts are
printed (run with -s to see them).
"""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from driver.frames import encode_entry
from driver.outputs.loki.sink import BATCH_BYTES
from tests.process.test_metrics_process import free_port, scrape, total
from tests.support import wait_for, wait_for_entries
from tests.support.loki import LokiLimits, LokiThread
from tests.support.receiver import ReceiverProcess

pytestmark = pytest.mark.e2e

FAST = {"loki-batch-wait": "100ms", "loki-min-backoff": "100ms", "loki-max-backoff": "500ms"}


@pytest.fixture
def loki():
    """Factory: loki(**LokiReceiver kwargs, start=True) -> LokiThread listening on 127.0.0.1; closed at the end."""
    made: list[LokiThread] = []

    def make(start: bool = True, **kwargs) -> LokiThread:
        server = LokiThread(**kwargs)
        made.append(server)
        if start:
            server.up()
        return server

    yield make
    for server in made:
        server.close()


def seq(n: int, first: int = 1) -> tuple[str, ...]:
    return ("sh", "-c", f"seq {first} {n}")


def ok(result) -> None:
    assert result.rc == 0, result.stderr.decode(errors="replace")


def streams_of(server: LokiThread, name: str, tenant: str = "fake") -> dict[tuple, list[tuple]]:
    """What the receiver stored for the container named `name`: {labels: [(ts, line, metadata), ...]}."""

    def read(r):
        return {labels: list(s.entries) for labels, s in r.streams(tenant).items()
                if ("container_name", name) in labels}

    return server.call(read)


def lines_of(server: LokiThread, name: str, tenant: str = "fake") -> list[bytes]:
    return [line for entries in streams_of(server, name, tenant).values() for _, line, _ in entries]


def wait_lines(server: LokiThread, name: str, n: int, tenant: str = "fake", timeout: float = 60) -> list[bytes]:
    return wait_for(f"{n} lines of {name} at the receiver",
                    lambda: (lambda got: got if len(got) >= n else None)(lines_of(server, name, tenant)), timeout)


def numbered(n: int, first: int = 1) -> list[bytes]:
    return [str(i).encode() for i in range(first, n + 1)]


def one_batch_of_short_lines() -> int:
    """Entries in one sink batch (BATCH_BYTES of journal) of the shortest frames `seq` writes: the documented
    bound on what one kill can repeat."""
    frame = encode_entry(("stdout", time.time_ns(), b"1", False, False, "", 0))
    return BATCH_BYTES // len(frame) + 1


def docker_logs(dockerd, cid: str) -> tuple[bytes, bytes]:
    out = dockerd.docker("logs", cid)
    return out.stdout, out.stderr


# ------------------------------------------------------------------------------------------ options and labels
def test_the_loki_drivers_option_set_is_accepted_and_pipeline_stages_are_refused(legacy_plugin, docker_run, loki,
                                                                                 tmp_path):
    """Every option of Grafana's driver (clients/cmd/docker-driver/config.go validateDriverOpt) runs a container;
    the push goes through loki-proxy-url (the receiver is the proxy: loki-url's own port is closed), with the
    tenant and the external labels; a relabel rule renames a label."""
    plugin, server = legacy_plugin(), loki()
    dead_port = free_port()
    ca = tmp_path / "ca.pem"
    ca.write_text("not read for an http:// URL\n")
    opts = {
        "loki-url": f"http://127.0.0.1:{dead_port}/loki/api/v1/push",
        "loki-proxy-url": f"http://127.0.0.1:{server.port}",
        "loki-tenant-id": "team-a",
        "loki-external-labels": "job=docker,container_name={{.Name}},cid={{.ID}}",
        "loki-batch-size": "409600",
        "loki-batch-wait": "200ms",
        "loki-timeout": "5s",
        "loki-min-backoff": "100ms",
        "loki-max-backoff": "1s",
        "loki-retries": "3",
        "loki-tls-ca-file": str(ca),
        "loki-tls-server-name": "loki.example",
        "loki-tls-insecure-skip-verify": "false",
        "loki-relabel-config": "- action: labelmap\n  regex: job\n  replacement: kind\n"
                               "- action: labeldrop\n  regex: job\n",
        "no-file": "false",
        "keep-file": "true",
        "labels": "team",
        "env": "STAGE",
        "env-regex": "^STA",
        "max-size": "10m",
        "max-file": "3",
        "mode": "blocking",
    }
    n = 300
    result = docker_run(plugin.driver, *seq(n), name="loki-opts", log_opts=opts,
                        extra_args=["--label", "team=core", "-e", "STAGE=test"])
    ok(result)
    assert wait_lines(server, "loki-opts", n, tenant="team-a") == numbered(n)
    (labels,) = streams_of(server, "loki-opts", tenant="team-a")
    got = dict(labels)
    assert got["kind"] == "docker" and "job" not in got
    assert got["cid"] == result.container_id[:12]
    assert got["team"] == "core" and got["STAGE"] == "test"
    assert server.call(lambda r: set(r.tenant_headers)) == {"team-a"}

    for name in ("loki-pipeline-stages", "loki-pipeline-stage-file"):
        refused = docker_run(plugin.driver, *seq(3), log_opts={"loki-url": server.url, name: "- json: {}"})
        assert refused.rc != 0
        assert f"log-opt {name}: pipeline stages are not supported yet".encode() in refused.stderr, refused.stderr


def test_every_line_arrives_with_the_drivers_labels_and_docker_logs_is_unchanged(
        legacy_plugin, docker_run, json_file_run, loki, dockerd):
    plugin, server = legacy_plugin(), loki()
    n = 2000
    cmd = ("sh", "-c", f"seq 1 {n}; seq 1 {n // 2} >&2; echo '   '; printf 'no newline'")
    container_labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web",
                        "com.docker.swarm.service.name": "shop_web", "com.docker.stack.namespace": "shop",
                        "app.tier": "front"}
    extra = [a for k, v in container_labels.items() for a in ("--label", f"{k}={v}")]
    result = docker_run(plugin.driver, *cmd, name="loki-labels", extra_args=[*extra, "-e", "RUN-ID=7"],
                        log_opts={"loki-url": server.url, "labels": "app.tier", "env": "RUN-ID", **FAST})
    ok(result)
    cid = result.container_id
    stdout_lines = [*numbered(n), b"   ", b"no newline"]
    wait_lines(server, "loki-labels", len(stdout_lines) + n // 2)
    streams = streams_of(server, "loki-labels")
    common = {"container_name": "loki-labels", "host": socket.gethostname(), "filename": str(plugin.json_log(cid)),
              "compose_project": "shop", "compose_service": "web", "swarm_service": "shop_web",
              "swarm_stack": "shop", "app_tier": "front", "RUN_ID": "7"}
    by_source = {dict(labels)["source"]: entries for labels, entries in streams.items()}
    assert {labels: None for labels in streams} == {
        tuple(sorted({**common, "source": src}.items())): None for src in ("stdout", "stderr")}
    # in order, whitespace-only line included (the driver drops it), no structured metadata unless asked for
    assert [line for _, line, _ in by_source["stdout"]] == stdout_lines
    assert [line for _, line, _ in by_source["stderr"]] == numbered(n // 2)
    assert all(md == () for entries in by_source.values() for _, _, md in entries)
    stamps = [ts for ts, _, _ in by_source["stdout"]]
    assert stamps == sorted(stamps)
    assert len(wait_for_entries(plugin.json_log(cid), len(stdout_lines) + n // 2)) == len(stdout_lines) + n // 2
    # `docker logs` as with json-file
    reference, _ = json_file_run(*cmd)
    assert docker_logs(dockerd, cid) == docker_logs(dockerd, reference.container_id)

    with_md = docker_run(plugin.driver, *seq(50), name="loki-md",
                         log_opts={"loki-url": server.url, "loki-structured-metadata": "true", **FAST})
    ok(with_md)
    wait_lines(server, "loki-md", 50)
    (entries,) = streams_of(server, "loki-md").values()
    assert {md for _, _, md in entries} == {(("container_id", with_md.container_id),)}


# ------------------------------------------------------------------------------------------- Loki away
def test_receiver_down_while_containers_write_then_every_line_arrives(legacy_plugin, docker_run, loki):
    """Three containers write and exit while the receiver is down; once it is up again every line arrives, once."""
    plugin, server = legacy_plugin(), loki()
    server.down()
    n = 5000
    names = [f"loki-down-{i}" for i in range(3)]
    for name in names:
        ok(docker_run(plugin.driver, *seq(n), name=name, log_opts={"loki-url": server.url, **FAST}))
    assert server.call(lambda r: r.pushes) == 0  # nothing could be pushed: every container exited meanwhile
    server.up()
    for name in names:
        got = wait_lines(server, name, n)
        counts = Counter(got)
        print(f"\n[receiver down] {name}: {len(got)} entries stored, {len(counts)} distinct of {n}")
        assert sorted(got, key=int) == numbered(n)


def test_plugin_sigkill_between_store_and_2xx_repeats_at_most_one_batch(legacy_plugin, docker_run, loki, dockerd,
                                                                        bb_image):
    """The receiver stores a push and holds its answer; the plugin is SIGKILLed then, twice, while a container
    writes. After the restarts every line is stored at least once, and what Loki keeps twice is at most one
    batch per kill."""
    plugin, server = legacy_plugin(), loki()
    server.call(lambda r: setattr(r, "hold_after_store", True))  # the first push is held
    n = 60_000
    cid = dockerd.docker(
        "run", "-d", "--network", "none", "--name", "loki-kill", "--log-driver", plugin.driver,
        *[a for k, v in {"loki-url": server.url, **FAST}.items() for a in ("--log-opt", f"{k}={v}")],
        bb_image, "sh", "-c", f"seq 1 {n // 2}; while [ ! -e /tmp/go ]; do usleep 20000; done; "
        f"seq {n // 2 + 1} {n}").stdout.decode().strip()
    kills = 2
    for k in range(kills):
        if k:  # hold the next push, then let the container write its second half
            server.call(lambda r: setattr(r, "hold_after_store", True))
            dockerd.docker("exec", cid, "touch", "/tmp/go")
        wait_for("a push stored and held", lambda k=k: server.call(lambda r: r.held) > k, 30)
        plugin.kill()
        server.call(lambda r: (setattr(r, "hold_after_store", False), r.release()))
        plugin.restart()
    got = wait_lines(server, "loki-kill", n, timeout=90)
    counts = Counter(got)
    repeated = sum(c - 1 for c in counts.values())
    print(f"\n[plugin SIGKILL x{kills}] stored {len(got)}, distinct {len(counts)} of {n}, kept twice {repeated}, "
          f"bound {kills} x {one_batch_of_short_lines()}")
    assert set(counts) == set(numbered(n))
    assert repeated <= kills * one_batch_of_short_lines()
    assert dockerd.docker("wait", cid).stdout.strip() == b"0"


# ------------------------------------------------------------------------------------------- refused entries
def test_entries_loki_refuses_are_counted_by_reason_and_the_rest_stored(legacy_plugin, docker_run, loki):
    """Lines over the plugin's loki-max-line-size are dropped before sending (line_too_long); lines the receiver's
    stricter max_line_size refuses get a 400 for their push, counted as loki_rejected and never resent; every
    other line is stored. A container that loki-relabel-config drops is counted as filtered."""
    addr = f"127.0.0.1:{free_port()}"
    plugin = legacy_plugin(env={"METRICS_ADDR": addr})
    server = loki(limits=LokiLimits(max_line_size=100))
    mid, long = "m" * 150, "L" * 300
    script = (f"seq 1 1000; for i in 1 2 3; do echo {mid}; done; echo 1001; "
              f"for i in 1 2 3 4; do echo {long}; done; seq 1002 2000")
    result = docker_run(plugin.driver, "sh", "-c", script, name="loki-refused",
                        log_opts={"loki-url": server.url, "loki-max-line-size": "200", **FAST})
    ok(result)
    # a container a relabel rule drops is read and counted as filtered, never sent
    drop = "- action: drop\n  source_labels: [container_name]\n  regex: loki-filt.*\n"
    ok(docker_run(plugin.driver, *seq(100), name="loki-filtered",
                  log_opts={"loki-url": server.url, "loki-relabel-config": drop, **FAST}))

    def settled():
        m = scrape(addr)
        done = total(m, "logbridge_sink_lines_acked_total", sink="loki") + \
            total(m, "logbridge_sink_lines_dropped_total", sink="loki")
        return m if done >= 2107 else None

    m = wait_for("every loki entry acked or dropped", settled, 60)
    stored = lines_of(server, "loki-refused")
    too_long = total(m, "logbridge_sink_lines_dropped_total", sink="loki", reason="line_too_long")
    rejected = total(m, "logbridge_sink_lines_dropped_total", sink="loki", reason="loki_rejected")
    statuses = Counter(server.call(lambda r: list(r.statuses)))
    print(f"\n[refused] stored {len(stored)}; dropped line_too_long {too_long}, loki_rejected {rejected}; "
          f"answers {dict(statuses)}")
    assert too_long == 4
    assert rejected >= 3  # the mid lines' pushes: every entry of them counted, Loki stored their valid part
    assert long.encode() not in stored and mid.encode() not in stored
    assert sorted(stored, key=int) == numbered(2000)  # every other line, once
    assert 1 <= statuses[400] <= 3
    assert total(m, "logbridge_sink_lines_retried_total", sink="loki") == 0  # a 400 is never resent
    assert total(m, "logbridge_sink_lines_dropped_total", sink="loki", reason="filtered") == 100
    assert server.call(lambda r: sum(len(s.entries) for s in r.streams().values())) == len(stored)


# ------------------------------------------------------------------------------------------- two outputs
def test_forward_and_loki_at_once_one_dead_the_other_complete(legacy_plugin, docker_run, loki, tmp_path):
    plugin, server = legacy_plugin(), loki()
    forward = ReceiverProcess(tmp_path / "forward").start()
    try:
        n = 3000
        dead_forward = {"fluentd-address": f"tcp://127.0.0.1:{free_port()}", "fluentd-retry-wait": "100ms"}
        dead_loki = {"loki-url": f"http://127.0.0.1:{free_port()}/loki/api/v1/push", **FAST}
        a = docker_run(plugin.driver, *seq(n), name="both-forward-dead",
                       log_opts={"loki-url": server.url, **FAST, **dead_forward})
        b = docker_run(plugin.driver, *seq(n), name="both-loki-dead",
                       log_opts={"fluentd-address": forward.address, **dead_loki})
        ok(a)
        ok(b)
        assert wait_lines(server, "both-forward-dead", n) == numbered(n)
        records = forward.wait_records(n)
        assert [r["record"]["log"] for r in records] == [str(i) for i in range(1, n + 1)]
        assert {r["record"]["container_id"] for r in records} == {b.container_id}
        assert lines_of(server, "both-loki-dead") == []
        for r in (a, b):
            assert [e["log"] for e in wait_for_entries(plugin.json_log(r.container_id), n)] == \
                [f"{i}\n" for i in range(1, n + 1)]
    finally:
        forward.stop()

