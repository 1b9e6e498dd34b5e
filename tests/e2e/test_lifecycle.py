"""`docker logs` and json.log through a container's and the plugin's lifecycle on a real dockerd: stopped
containers, `docker restart`, the empty Start/Stop pair of `docker logs` on a stopped container, a plugin
restart while a container writes, dockerd live-restore, and a plugin upgrade with running containers.

Numbered lines make loss and duplication countable: every number must appear exactly once, in order, in
json.log and in `docker logs`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import another_dockerd
from tests.support import (
    Dockerd,
    create_managed_plugin,
    read_entries,
    wait_for,
)
from tests.support.procs import REPO, SupportError, stop_pid
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.e2e


def numbered(n: int, pause: str = "0.01") -> tuple[str, ...]:
    """A container command printing 1..n, one line every `pause` seconds (plus a fork of sleep)."""
    return ("sh", "-c", f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; sleep {pause}; done")


def run_detached(daemon: Dockerd, driver: str, *cmd: str) -> str:
    return (
        daemon.docker("run", "-d", "--network", "none", "--log-driver", driver, "bb:latest", *cmd)
        .stdout.decode()
        .strip()
    )


def logs(daemon: Dockerd, cid: str, *opts: str) -> tuple[bytes, bytes]:
    proc = daemon.docker("logs", *opts, cid)
    return proc.stdout, proc.stderr


def wait_exit(daemon: Dockerd, cid: str, timeout: float = 120) -> None:
    rc = daemon.docker("wait", cid, timeout=timeout).stdout.decode().strip()
    assert rc == "0", f"container {cid[:12]} exited with {rc}"


def stdout_lines(path: Path) -> list[str]:
    return [e["log"] for e in read_entries(path) if e["stream"] == "stdout"]


def count(numbers: list[int], n: int) -> dict[str, int]:
    """The figures a loss test reports: lines found, missing, duplicated, out of order."""
    seen = set(numbers)
    return {
        "written": n,
        "found": len(numbers),
        "missing": len(set(range(1, n + 1)) - seen),
        "duplicated": len(numbers) - len(seen),
        "out_of_order": sum(1 for a, b in zip(numbers, numbers[1:], strict=False) if b < a),
    }


def assert_all_once(path: Path, daemon: Dockerd, cid: str, n: int, what: str) -> dict[str, int]:
    """Every number 1..n exactly once and in order, in json.log and in `docker logs`."""
    try:
        entries = wait_for(f"{n} lines in {path}", lambda: (e := read_entries(path)) and len(e) >= n and e, 30)
    except SupportError:  # fewer than n: say which are missing rather than only that the wait ran out
        entries = read_entries(path) if path.exists() else []
    in_file = [int(e["log"]) for e in entries]
    in_logs = [int(x) for x in logs(daemon, cid)[0].split()]
    figures = count(in_file, n)
    print(f"\n{what}: json.log {figures}; docker logs {count(in_logs, n)}")
    missing = sorted(set(range(1, n + 1)) - set(in_file))
    assert in_file == list(range(1, n + 1)), f"{what}: json.log {figures}, the first missing {missing[:20]}"
    assert in_logs == in_file, f"{what}: docker logs {count(in_logs, n)}"
    return figures


@pytest.fixture(params=["legacy", "managed"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def plugin(kind, legacy_plugin, managed_plugin):
    return legacy_plugin() if kind == "legacy" else managed_plugin()


def restart_plugin(kind: str, plugin) -> float:
    """Legacy: SIGTERM and start again. Managed: `docker plugin disable -f`, `enable`. Returns the gap (s)."""
    t0 = time.monotonic()
    if kind == "legacy":
        plugin.restart()
    else:
        plugin.disable(force=True)
        plugin.enable()
        plugin.wait_running()
    return time.monotonic() - t0


# ---- stop, docker restart, Start/Stop pairs, plugin restart -------------------------------------------------------
def test_docker_logs_after_stop_restart_and_plugin_restart(dockerd, bb_image, kind, plugin):
    # a stopped container; `docker logs` twice: each is an empty StartLogging/StopLogging pair
    cid = dockerd.run(bb_image, "sh", "-c", "seq 1 3; echo err >&2", log_driver=plugin.driver).container_id
    path = plugin.json_log(cid)
    wait_for("3 + 1 lines in json.log", lambda: len(read_entries(path)) == 4, 15)
    inode = path.stat().st_ino
    for _ in range(2):
        assert logs(dockerd, cid) == (b"1\n2\n3\n", b"err\n")
    assert logs(dockerd, cid, "-f") == (b"1\n2\n3\n", b"err\n")  # no follow on a stopped container: it ends
    assert len(read_entries(path)) == 4 and path.stat().st_ino == inode
    # the pairs' FIFOs are dropped from the plugin's table once dockerd closed them (nothing to re-attach)
    wait_for("no FIFO left for the stopped container", lambda: not fifos_of(plugin.state_dir, cid), 10)

    # started again: a new FIFO, the same files, appended
    dockerd.docker("start", "-a", cid)
    wait_for("8 lines in json.log", lambda: len(read_entries(path)) == 8, 15)
    assert logs(dockerd, cid) == (b"1\n2\n3\n" * 2, b"err\n" * 2)
    assert path.stat().st_ino == inode and sorted(p.name for p in path.parent.iterdir()) == [path.name]

    # `docker restart` of a running container: StopLogging, then StartLogging with a new FIFO
    rid = run_detached(dockerd, plugin.driver, "sh", "-c", "seq 1 3; exec sleep 60")
    rpath = plugin.json_log(rid)
    wait_for("3 lines", lambda: len(read_entries(rpath)) == 3, 15)
    dockerd.docker("restart", "-t", "0", rid)
    wait_for("6 lines", lambda: len(read_entries(rpath)) == 6, 15)
    assert logs(dockerd, rid) == (b"1\n2\n3\n" * 2, b"")

    # the plugin restarted: the stopped container's logs are still served, the running one's too
    gap = restart_plugin(kind, plugin)
    assert logs(dockerd, cid) == (b"1\n2\n3\n" * 2, b"err\n" * 2)
    assert logs(dockerd, rid) == (b"1\n2\n3\n" * 2, b"")
    dockerd.docker("rm", "-f", rid)
    print(f"\n{kind}: plugin restart took {gap:.2f} s")


def test_plugin_restart_while_a_container_writes_loses_nothing(dockerd, bb_image, kind, plugin):
    n = 600
    cid = run_detached(dockerd, plugin.driver, *numbered(n))
    path = plugin.json_log(cid)
    wait_for("100 lines before the restart", lambda: len(read_entries(path)) >= 100, 20)
    gap = restart_plugin(kind, plugin)
    print(f"\n{kind}: plugin restart gap {gap:.2f} s")
    wait_exit(dockerd, cid)
    assert_all_once(path, dockerd, cid, n, f"{kind} plugin restart")


# ---- dockerd live-restore ----------------------------------------------------------------------------------------
@pytest.fixture
def live_dockerd(dockerd) -> Iterator[Dockerd]:
    """A second private dockerd with "live-restore": true (the session's daemon is not restarted)."""
    with another_dockerd(config={"live-restore": True}) as daemon:
        yield daemon


def fifos_of(state_dir: Path, cid: str) -> set[str]:
    """The FIFOs the plugin's persisted table says it reads for a container."""
    try:
        table = json.loads((state_dir / "fifos.json").read_text())
    except (FileNotFoundError, ValueError):
        return set()
    table = table.get("fifos", {}) if "format" in table else table  # format 0 (a managed plugin's older rootfs)
    return {fifo for fifo, owner in table.items() if owner == cid}


def restart_keeping_containers(daemon: Dockerd) -> float:
    """SIGTERM dockerd and start it again, without the support class's cleanup of leftover shims (with
    live-restore those shims ARE the running containers). Returns the seconds dockerd was away."""
    t0 = time.monotonic()
    pid = daemon.pid()
    assert pid, "dockerd is not running"
    stop_pid(pid, 40)
    daemon.start()
    return time.monotonic() - t0


def test_live_restore_keeps_every_line(live_dockerd, plugin_dir, legacy_plugin, tmp_path_factory):
    """dockerd restarts with live-restore while containers write: the old FIFO ends without StopLogging, a new
    StartLogging arrives for the same container; json.log holds the lines of both FIFOs in order."""
    legacy = legacy_plugin()
    base = tmp_path_factory.mktemp("live")
    managed = create_managed_plugin(
        live_dockerd, plugin_dir, f"lbm-live-{os.getpid()}", log_root=base / "logs", state_dir=base / "state"
    )
    n = 800
    runs = [(p, run_detached(live_dockerd, p.driver, *numbered(n))) for p in (legacy, managed)]
    for p, cid in runs:
        path = p.json_log(cid)
        wait_for("100 lines before the restart", lambda path=path: len(read_entries(path)) >= 100, 20)
    before = {p.name: fifos_of(p.state_dir, cid) for p, cid in runs}
    assert all(len(f) == 1 for f in before.values()), before
    away = restart_keeping_containers(live_dockerd)
    for p, cid in runs:  # the restored dockerd gave each container a new FIFO (and the old one its EOF)
        wait_for(
            f"a new FIFO for {cid[:12]}",
            lambda p=p, cid=cid: fifos_of(p.state_dir, cid) and fifos_of(p.state_dir, cid) != before[p.name],
            20,
        )
    running = live_dockerd.docker("ps", "-q", "--no-trunc").stdout.decode().split()
    assert {cid for _, cid in runs} <= set(running), "live-restore did not keep the containers running"
    print(f"\ndockerd away for {away:.2f} s")
    failed = []
    for p, cid in runs:  # both checked before failing, each with its plugin's log: a flake says where it was
        wait_exit(live_dockerd, cid)
        try:
            assert_all_once(p.json_log(cid), live_dockerd, cid, n, f"live-restore {p.name}")
        except AssertionError as exc:
            log = p.output_tail(lines=80) if p is legacy else "\n".join(p.log().splitlines()[-80:])
            print(f"--- {p.name}'s log, the last 80 lines ---\n{log}")
            failed.append(str(exc))
    assert not failed, failed


# ---- plugin upgrade with running containers ------------------------------------------------------------------------
@pytest.fixture
def registry() -> Iterator[LocalRegistry]:
    reg = LocalRegistry()
    try:
        yield reg.start()
    finally:
        reg.stop()


def make(daemon: Dockerd, target: str, *, ok: bool = True, **variables: str) -> str:
    args = ["make", "-s", "-C", str(REPO), target, *(f"{k}={v}" for k, v in variables.items())]
    proc = subprocess.run(args, env=daemon.env, capture_output=True, timeout=300)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert (proc.returncode == 0) == ok, f"make {target} exited with {proc.returncode}:\n{out}"
    return out


ELF_MACHINES = {"x86_64": 62, "aarch64": 183}


def foreign_plugin_dir(base: Path, plugin_dir: Path, host_arch: str) -> Path:
    """A plugin whose entrypoint is an ELF header for another CPU (nothing else: it never gets to run)."""
    other = next(arch for arch in ELF_MACHINES if arch != host_arch)
    binary = base / "rootfs" / "opt" / "logbridge" / "bin" / "python"
    binary.parent.mkdir(parents=True)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = ELF_MACHINES[other].to_bytes(2, "little")
    binary.write_bytes(bytes(header))
    binary.chmod(0o755)
    shutil.copyfile(plugin_dir / "config.json", base / "config.json")
    return base


def host_fifo(plugin, fifo: str) -> Path:
    """Where a FIFO path the plugin was given lives on the host (config.json's propagatedMount covers
    /run/docker/logging, so outside rootfs: <plugin dir>/propagated-mount/<id>)."""
    prefix = "/run/docker/logging/"
    assert fifo.startswith(prefix)
    return plugin.dockerd.data_root / "plugins" / plugin.id / "propagated-mount" / fifo[len(prefix) :]


def test_upgrade_with_running_containers(dockerd, bb_image, plugin_dir, managed_plugin, registry, tmp_path):
    """`make push` to a local registry, then `make upgrade` (disable -f, upgrade, architecture check, enable)
    while a container writes: the FIFO survives in the propagated mount, no line is lost, `docker logs` works."""
    plugin = managed_plugin()
    ref = f"{registry.address}/logbridge-upgrade:{os.getpid()}"
    make(dockerd, "push", PLUGIN_DIR=str(plugin_dir), PLUGIN_REF=ref)
    n = 1000
    cid = run_detached(dockerd, plugin.driver, *numbered(n))
    path = plugin.json_log(cid)
    wait_for("100 lines before the upgrade", lambda: len(read_entries(path)) >= 100, 20)
    (fifo,) = fifos_of(plugin.state_dir, cid)
    assert stat.S_ISFIFO(host_fifo(plugin, fifo).stat().st_mode)
    old_pid = plugin.pid()

    t0 = time.monotonic()
    out = make(dockerd, "upgrade", PLUGIN_NAME=plugin.name, PLUGIN_REF=ref)
    gap = time.monotonic() - t0
    assert "architecture x86_64 matches" in out or "architecture aarch64 matches" in out, out
    assert plugin.inspect()["Enabled"]
    assert plugin.wait_running(old_pid) != old_pid
    # the new rootfs is the pushed one (push.sh names its layer after the reference)
    assert (plugin.rootfs / ".docker-plugin-name").read_text().strip() == ref
    assert stat.S_ISFIFO(host_fifo(plugin, fifo).stat().st_mode), "the FIFO did not survive the upgrade"
    assert fifos_of(plugin.state_dir, cid) == {fifo}
    print(f"\nupgrade (disable -f, upgrade, check, enable) took {gap:.2f} s")

    wait_exit(dockerd, cid)
    assert_all_once(path, dockerd, cid, n, "upgrade")

    # built for another CPU: `make upgrade` must leave the plugin disabled rather than try to start it
    host_arch = dockerd.docker("info", "-f", "{{.Architecture}}").stdout.decode().strip()
    foreign = foreign_plugin_dir(tmp_path / "foreign", plugin_dir, host_arch)
    make(dockerd, "push", PLUGIN_DIR=str(foreign), PLUGIN_REF=ref + "-foreign")
    out = make(dockerd, "upgrade", ok=False, PLUGIN_NAME=plugin.name, PLUGIN_REF=ref + "-foreign")
    assert f"but this daemon is {host_arch}: leaving {plugin.name} disabled" in out, out
    assert not plugin.inspect()["Enabled"]
