"""Fluent forward output on a real dockerd: Docker's fluentd-driver record layout, tags, partials, time formats,
gzip, shared key, TLS, profiles; never blocking a container (aggregator down, hung, killed); the tail after
StopLogging and across a plugin restart; the strict receiver checked against Docker's own fluentd driver.

The aggregator is `python -m driver.receiver` (Fluent Bit flavour, as strict as Fluent Bit's in_forward) on
127.0.0.1: a legacy plugin is a host process and the managed plugin uses the host network, so both reach it.
Counts for the outage and kill runs are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from driver.frames import encode_entry
from driver.outputs.forward.sink import BATCH_BYTES, WINDOW
from tests.support import read_entries, wait_for, wait_for_entries
from tests.support.receiver import ReceiverProcess, free_port, numbers, wait_quiet

pytestmark = pytest.mark.e2e

FAST_RETRY = {"fluentd-retry-wait": "100ms"}  # outage tests: reconnect within a second of the receiver's return
RECORD_KEYS = {"container_id", "container_name", "source", "log"}


@pytest.fixture
def receiver(tmp_path_factory):
    """Factory: receiver(*args, scheme="tcp", port=0, start=True) -> ReceiverProcess; all stopped at the end."""
    made: list[ReceiverProcess] = []

    def make(*args: str, scheme: str = "tcp", port: int = 0, start: bool = True) -> ReceiverProcess:
        r = ReceiverProcess(tmp_path_factory.mktemp("receiver"), *args, scheme=scheme, port=port)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        r.stop()


def seq(n: int, first: int = 1) -> tuple[str, ...]:
    return ("sh", "-c", f"seq {first} {n}")


def ok(result) -> None:
    assert result.rc == 0, result.stderr.decode(errors="replace")


def forward_cursor(plugin, cid: str) -> dict:
    """The forward sink's saved cursor: pos and extra.acked (records acknowledged and saved)."""
    path = Path(plugin.state_dir) / "containers" / cid / "cursors" / "forward.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def report(what: str, sent: int, receiver: ReceiverProcess, plugin, cid: str) -> dict:
    seen = numbers([r["record"]["log"] for r in receiver.records() if r["record"]["container_id"] == cid])
    counts = {
        "sent": sent,
        "received": sum(seen[i] for i in range(1, sent + 1)),
        "unique": sum(1 for i in range(1, sent + 1) if seen[i]),
        "duplicated": sum(seen[i] - 1 for i in range(1, sent + 1) if seen[i] > 1),
        "acked": forward_cursor(plugin, cid).get("extra", {}).get("acked"),
    }
    print(f"\n[{what}] {json.dumps(counts)}")
    return counts


def duplicate_bound(line: bytes) -> int:
    """Records in the sink's window (WINDOW batches of BATCH_BYTES of journal) of the shortest frames a run of
    `seq 1 <line>` writes: the documented bound (a kill early in the run repeats batches of short lines, more of
    them than of `line`)."""
    frame = encode_entry(("stdout", time.time_ns(), b"1", False, False, "", 0))
    return WINDOW * (BATCH_BYTES // len(frame) + 1)


# ---------------------------------------------------------------------------------------- layout and options
def test_records_have_dockers_fluentd_layout_and_json_log_is_written(legacy_plugin, docker_run, receiver):
    plugin, rcv = legacy_plugin(), receiver()
    n = 500
    result = docker_run(
        plugin.driver,
        *seq(n),
        name="fwd-layout",
        extra_args=["--label", "team=core", "-e", "STAGE=test"],
        log_opts={"fluentd-address": rcv.address, "labels": "team", "env": "STAGE"},
    )
    ok(result)
    cid = result.container_id
    records = rcv.wait_records(n)
    assert len(records) == n
    assert [r["record"]["log"] for r in records] == [str(i) for i in range(1, n + 1)]  # no newline, in order
    for r in records:
        assert r["tag"] == cid[:12]
        assert r["record"] == {
            "container_id": cid,
            "container_name": "/fwd-layout",
            "source": "stdout",
            "log": r["record"]["log"],
            "team": "core",
            "STAGE": "test",
        }
    # EventTime by default: nanoseconds survive (an integer time would make them all zero)
    assert any(r["time_ns"] % 1_000_000_000 for r in records)
    entries = wait_for_entries(plugin.json_log(cid), n)
    assert [e["log"] for e in entries] == [f"{i}\n" for i in range(1, n + 1)]
    assert [e["time"] for e in entries][:3]  # json.log carries the same lines, with newlines
    json_times = [e["time"] for e in entries]
    assert len(json_times) == n


def test_tag_option_integer_time_and_gzip(legacy_plugin, docker_run, receiver):
    plugin, rcv = legacy_plugin(), receiver()
    n = 300
    tagged = docker_run(
        plugin.driver,
        *seq(n),
        name="fwd-tag",
        log_opts={"fluentd-address": rcv.address, "tag": "app.{{.Name}}.{{.ID}}"},
    )
    ok(tagged)
    rcv.wait_records(n)
    integer = docker_run(
        plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "fluentd-sub-second-precision": "false"}
    )
    ok(integer)
    rcv.wait_records(2 * n)
    gzipped = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "forward-compress": "true"})
    ok(gzipped)
    records = rcv.wait_records(3 * n)
    assert len(records) == 3 * n
    by_cid: dict[str, list[dict]] = {}
    for r in records:
        by_cid.setdefault(r["record"]["container_id"], []).append(r)
    assert {tagged.container_id, integer.container_id, gzipped.container_id} == set(by_cid)
    for recs in by_cid.values():
        assert [r["record"]["log"] for r in recs] == [str(i) for i in range(1, n + 1)]
    assert {r["tag"] for r in by_cid[tagged.container_id]} == {f"app.fwd-tag.{tagged.container_id[:12]}"}
    assert all(r["time_ns"] % 1_000_000_000 == 0 for r in by_cid[integer.container_id])
    assert {r["tag"] for r in by_cid[gzipped.container_id]} == {gzipped.container_id[:12]}
    # the tag also goes into json.log's attrs, as with json-file
    assert (
        read_entries(plugin.json_log(tagged.container_id))[0]["attrs"]["tag"]
        == f"app.fwd-tag.{tagged.container_id[:12]}"
    )


def test_a_40000_byte_line_arrives_as_three_partials(legacy_plugin, docker_run, receiver):
    plugin, rcv = legacy_plugin(), receiver()
    cmd = ("sh", "-c", "head -c 40000 /dev/zero | tr '\\000' x; echo; echo after")
    result = docker_run(plugin.driver, *cmd, log_opts={"fluentd-address": rcv.address})
    ok(result)
    records = [r["record"] for r in rcv.wait_records(4)]
    assert len(records) == 4
    parts, after = records[:3], records[3]
    assert [len(p["log"]) for p in parts] == [16384, 16384, 40000 - 2 * 16384]
    assert "".join(p["log"] for p in parts) == "x" * 40000
    assert [p["partial_message"] for p in parts] == ["true"] * 3
    assert [p["partial_ordinal"] for p in parts] == ["1", "2", "3"]
    assert [p["partial_last"] for p in parts] == ["false", "false", "true"]
    assert len({p["partial_id"] for p in parts}) == 1 and parts[0]["partial_id"]
    assert after == {
        "container_id": result.container_id,
        "container_name": after["container_name"],
        "source": "stdout",
        "log": "after",
    }
    entries = wait_for_entries(plugin.json_log(result.container_id), 4)
    assert "".join(e["log"] for e in entries[:3]) == "x" * 40000 + "\n"


# ------------------------------------------------------------------------------------------ auth, TLS, profiles
def test_shared_key_handshake_and_wrong_key_never_blocks(legacy_plugin, docker_run, receiver):
    plugin, rcv = legacy_plugin(), receiver("--shared-key", "s3cret")
    n = 200
    good = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "forward-shared-key": "s3cret"})
    ok(good)
    assert [r["record"]["log"] for r in rcv.wait_records(n)] == [str(i) for i in range(1, n + 1)]
    assert "handshake ok" in rcv.log()

    started = time.monotonic()
    bad = docker_run(
        plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "forward-shared-key": "wrong", **FAST_RETRY}
    )
    elapsed = time.monotonic() - started
    ok(bad)
    assert elapsed < 10, f"docker run with a refused shared key took {elapsed:.1f}s"
    assert [e["log"] for e in wait_for_entries(plugin.json_log(bad.container_id), n)] == [
        f"{i}\n" for i in range(1, n + 1)
    ]
    assert wait_quiet(rcv, 3) == 0
    assert not [r for r in rcv.records() if r["record"]["container_id"] == bad.container_id]
    assert "shared_key mismatch" in rcv.log() or "handshake refused" in rcv.log()


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it (openssl CLI)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=logbridge test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


def test_tls_with_a_private_ca_verifies_the_receiver(legacy_plugin, docker_run, receiver, tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    plugin = legacy_plugin()
    rcv = receiver("--tls-cert", str(cert), "--tls-key", str(key), scheme="tls")
    n = 200
    result = docker_run(
        plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "forward-tls-ca-file": str(ca)}
    )
    ok(result)
    assert [r["record"]["log"] for r in rcv.wait_records(n)] == [str(i) for i in range(1, n + 1)]
    # verification is on: without the CA (system store only) nothing is delivered, and nothing blocks
    unverified = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, **FAST_RETRY})
    ok(unverified)
    wait_for_entries(plugin.json_log(unverified.container_id), n)
    assert wait_quiet(rcv, 3) == 0
    assert len(rcv.records()) == n


def test_profile_supplies_address_and_shared_key(legacy_plugin, docker_run, receiver, tmp_path, dockerd):
    rcv = receiver("--shared-key", "from-profile")
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"prod": {"fluentd-address": rcv.address, "forward-shared-key": "from-profile"}}))
    plugin = legacy_plugin(env={"LOGBRIDGE_PROFILES": str(profiles)})
    n = 200
    result = docker_run(plugin.driver, *seq(n), log_opts={"logbridge-profile": "prod"})
    ok(result)
    assert [r["record"]["log"] for r in rcv.wait_records(n)] == [str(i) for i in range(1, n + 1)]
    inspect = dockerd.docker("inspect", "-f", "{{json .HostConfig.LogConfig}}", result.container_id).stdout
    assert b"from-profile" not in inspect and b"24224" not in inspect
    bad = docker_run(plugin.driver, *seq(3), log_opts={"logbridge-profile": "nope"})
    assert bad.rc != 0 and b"no such profile" in bad.stderr


# ----------------------------------------------------------------------------------------- never blocking
def test_aggregator_down_at_start_then_everything_arrives(legacy_plugin, docker_run, receiver):
    plugin = legacy_plugin()
    port = free_port()
    n = 2000
    started = time.monotonic()
    result = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": f"tcp://127.0.0.1:{port}", **FAST_RETRY})
    elapsed = time.monotonic() - started
    ok(result)
    assert elapsed < 10
    wait_for_entries(plugin.json_log(result.container_id), n)
    time.sleep(2)  # a few failed attempts: the backoff must still bring it back quickly
    rcv = receiver(port=port)
    seen = rcv.wait_numbers(n, timeout=60)
    counts = report("aggregator down at start", n, rcv, plugin, result.container_id)
    assert counts["unique"] == n and counts["duplicated"] == 0
    assert seen.total() == n


def test_hung_receiver_never_blocks_the_container(legacy_plugin, docker_run, receiver):
    """SIGSTOP the aggregator for 10 s while a container writes 100,000 lines (far more than the 64 KiB pipe and
    the socket buffers hold): the container's writes all complete while the receiver is still stopped."""
    plugin, rcv = legacy_plugin(), receiver()
    n = 100_000
    rcv.pause()
    paused_at = time.monotonic()
    try:
        result = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, **FAST_RETRY})
        finished = time.monotonic() - paused_at
        assert finished < 10, f"the container took {finished:.1f}s while the receiver was stopped"
        ok(result)
        assert len(rcv.records()) == 0
        time.sleep(max(0.0, 10 - (time.monotonic() - paused_at)))
    finally:
        rcv.resume()
    seen = rcv.wait_numbers(n, timeout=90)
    counts = report("receiver SIGSTOP 10s", n, rcv, plugin, result.container_id)
    print(f"[receiver SIGSTOP 10s] container finished {finished:.2f}s after SIGSTOP")
    assert counts["unique"] == n
    assert counts["duplicated"] <= duplicate_bound(str(n).encode())
    assert seen.total() >= n
    assert len(wait_for_entries(plugin.json_log(result.container_id), n)) == n


def test_receiver_sigkill_mid_batch_resends_at_most_one_batch(legacy_plugin, docker_run, receiver):
    plugin = legacy_plugin()
    rcv = receiver("--ack-delay", "0.5")  # each frame waits before its ack: a kill lands between read and ack
    n = 200_000
    result = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, **FAST_RETRY})
    ok(result)
    rcv.wait_records(1, timeout=30)
    rcv.kill()
    before_kill = len(rcv.records())
    assert before_kill < n, "everything arrived before the kill: make the run longer"
    rcv.args = []  # same port, no ack delay this time
    rcv.start()
    seen = rcv.wait_numbers(n, timeout=90)
    counts = report("receiver SIGKILL mid-batch", n, rcv, plugin, result.container_id)
    print(
        f"[receiver SIGKILL mid-batch] records before the kill: {before_kill}; bound {duplicate_bound(str(n).encode())}"
    )
    assert counts["unique"] == n
    assert counts["duplicated"] <= duplicate_bound(str(n).encode())
    assert seen.total() == counts["received"]


# ------------------------------------------------------------------------------------- StopLogging, restarts
def test_tail_after_stop_logging_is_forwarded(legacy_plugin, docker_run, receiver):
    plugin = legacy_plugin()
    rcv = receiver("--ack-delay", "1")
    n = 100_000
    result = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address})
    ok(result)
    at_exit = len(rcv.records())
    seen = rcv.wait_numbers(n, timeout=90)
    print(f"\n[tail after StopLogging] records at the receiver when docker run returned: {at_exit} of {n}")
    assert at_exit < n
    assert all(seen[i] == 1 for i in range(1, n + 1))


def test_sigterm_while_aggregator_down_resumes_after_restart(legacy_plugin, docker_run, receiver, dockerd, bb_image):
    plugin = legacy_plugin()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    n = 3000
    stopped = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": address, **FAST_RETRY})
    ok(stopped)
    running = (
        dockerd.docker(
            "run",
            "-d",
            "--network",
            "none",
            "--log-driver",
            plugin.driver,
            "--log-opt",
            f"fluentd-address={address}",
            "--log-opt",
            "fluentd-retry-wait=100ms",
            bb_image,
            "sh",
            "-c",
            f"seq 1 {n}; sleep 4; seq {n + 1} {2 * n}; sleep 600",
        )
        .stdout.decode()
        .strip()
    )
    wait_for_entries(plugin.json_log(stopped.container_id), n)
    wait_for_entries(plugin.json_log(running), n)
    started = time.monotonic()
    assert plugin.stop() == 0
    print(f"\n[SIGTERM, aggregator down] plugin exited in {time.monotonic() - started:.1f}s")
    rcv = receiver(port=port)
    plugin.start()

    def by_cid() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {stopped.container_id: [], running: []}
        for r in rcv.records():
            out.setdefault(r["record"]["container_id"], []).append(r["record"]["log"])
        return out

    try:
        wait_for("both containers' lines", lambda: len(rcv.records()) >= 3 * n, 60)
    finally:
        print(
            f"[SIGTERM, aggregator down] records per container: "
            f"stopped {len(by_cid()[stopped.container_id])} of {n}, running {len(by_cid()[running])} of {2 * n}"
        )
    by_cid = by_cid()
    assert numbers(by_cid[stopped.container_id]) == numbers([str(i) for i in range(1, n + 1)])
    running_seen = numbers(by_cid[running])
    assert all(running_seen[i] for i in range(1, 2 * n + 1)), "lines of the running container are missing"
    report("SIGTERM+restart, stopped container", n, rcv, plugin, stopped.container_id)
    dockerd.docker("rm", "-f", running)


# ----------------------------------------------------------------------------------------- receiver vs Docker
def test_strict_receiver_accepts_dockers_own_fluentd_driver(docker_run, receiver, legacy_plugin):
    rcv = receiver()
    n = 300
    builtin = docker_run(
        "fluentd", *seq(n), name="fwd-builtin", log_opts={"fluentd-address": rcv.address, "fluentd-request-ack": "true"}
    )
    ok(builtin)
    records = rcv.wait_records(n)
    assert len(records) == n
    assert [r["record"]["log"] for r in records] == [str(i) for i in range(1, n + 1)]
    assert rcv.count_in_log("protocol error") == 0
    # logbridge sends the same record layout and tag as Docker's driver
    plugin = legacy_plugin()
    ours = docker_run(plugin.driver, *seq(n), name="fwd-ours", log_opts={"fluentd-address": rcv.address})
    ok(ours)
    mine = rcv.wait_records(2 * n)[n:]
    assert {k for r in records for k in r["record"]} == {k for r in mine for k in r["record"]} == RECORD_KEYS
    assert records[0]["record"]["container_name"] == "/fwd-builtin"
    assert mine[0]["record"]["container_name"] == "/fwd-ours"
    assert records[0]["tag"] == builtin.container_id[:12] and mine[0]["tag"] == ours.container_id[:12]


# ------------------------------------------------------------------------------------------------ managed
def test_managed_plugin_forwards(managed_plugin, docker_run, receiver):
    plugin, rcv = managed_plugin(), receiver()
    n = 1000
    result = docker_run(plugin.driver, *seq(n), log_opts={"fluentd-address": rcv.address, "forward-compress": "true"})
    ok(result)
    records = rcv.wait_records(n)
    assert [r["record"]["log"] for r in records] == [str(i) for i in range(1, n + 1)]
    assert {r["tag"] for r in records} == {result.container_id[:12]}
    assert len(wait_for_entries(plugin.json_log(result.container_id), n)) == n


CONFIG_DIR = "/etc/logbridge"  # where the plugin looks for profiles.json (LOGBRIDGE_PROFILES' default)


def test_managed_plugin_profile_with_tls_and_shared_key_from_the_config_mount(
    managed_plugin, docker_run, receiver, plugin_dir, tmp_path
):
    """A managed plugin sees only its own filesystem: profiles.json and the CA it names come through config.json's
    settable mount at /etc/logbridge."""
    config = json.loads((plugin_dir / "config.json").read_text())
    mount = next((m for m in config.get("mounts", []) if m.get("destination") == CONFIG_DIR), None)
    assert mount is not None and "source" in mount.get("settable", []), (
        f"config.json needs a mount with a settable source at {CONFIG_DIR} (profiles, certificates)"
    )
    host_dir = tmp_path / "etc-logbridge"
    host_dir.mkdir()
    ca, cert, key = make_ca_and_server_cert(host_dir)
    rcv = receiver("--shared-key", "mounted", "--tls-cert", str(cert), "--tls-key", str(key), scheme="tls")
    (host_dir / "profiles.json").write_text(
        json.dumps(
            {
                "prod": {
                    "fluentd-address": rcv.address,
                    "forward-shared-key": "mounted",
                    "forward-tls-ca-file": f"{CONFIG_DIR}/ca.pem",
                }
            }
        )
    )
    plugin = managed_plugin(env={f"{mount['name']}.source": str(host_dir)})
    n = 300
    result = docker_run(plugin.driver, *seq(n), log_opts={"logbridge-profile": "prod"})
    ok(result)
    assert [r["record"]["log"] for r in rcv.wait_records(n)] == [str(i) for i in range(1, n + 1)]
    assert "handshake ok" in rcv.log()
