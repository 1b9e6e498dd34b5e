"""`python -m driver status`: live figures per container from the running plugin's status socket, and the state
files' figures ("as of" their save) once the plugin is gone."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.plugin_harness import ROOT, FakeLogger, wait_for
from tests.support.receiver import free_port


def status(state_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driver", "status", "--state-dir", str(state_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def report(state_dir) -> dict:
    r = status(state_dir, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def row(rep: dict, cid: str) -> dict | None:
    return next((r for r in rep["containers"] if r["id"] == cid[:12]), None)


def test_live_view_then_state_files_when_the_plugin_is_down(plugin):
    dead = f"tcp://127.0.0.1:{free_port()}"
    web = FakeLogger(plugin, config={"fluentd-address": dead, "fluentd-retry-wait": "100ms"})
    web.start()
    for i in range(300):
        web.log(b"web %d" % i, source="stderr" if i % 3 == 0 else "stdout")
    done = FakeLogger(plugin)
    done.start()
    for i in range(40):
        done.log(b"done %d" % i)
    done.stop()

    def settled() -> dict | None:
        rep = report(plugin.state_dir)
        w, d = row(rep, web.container_id), row(rep, done.container_id)
        ok = w and d and w["stored"] == 300 and d["state"] == "stopped" and d["stored"] == 40 and \
            w["outputs"][1].get("last_error") and rep["totals"]["stored"] == 340  # totals: saved counts, a save behind
        return rep if ok else None

    rep = wait_for(settled, timeout=30)
    assert rep, report(plugin.state_dir)
    w = row(rep, web.container_id)
    assert rep["live"] and w["state"] == "running" and w["name"] == "test" and w["received"] == 300
    jsonlog, forward = w["outputs"]
    assert jsonlog == {"name": "jsonlog", "backlog_bytes": 0, "lag_seconds": 0.0}
    assert forward["name"] == "forward" and forward["acked"] == 0 and forward["up"] is False
    assert forward["backlog_bytes"] > 0 and forward["lag_seconds"] > 0
    assert dead.removeprefix("tcp://").split(":")[1] in forward["last_error"]
    assert rep["totals"] == {"received": 340, "stored": 340, "dropped": {}}

    text = status(plugin.state_dir).stdout.splitlines()
    assert text[0].startswith("logbridge: live (") and "1 container(s) with a pipeline" in text[0]
    lines = {line.split()[0]: line for line in text[2:-1]}
    assert set(lines) == {web.container_id[:12], done.container_id[:12]}  # one line per container
    assert lines[web.container_id[:12]].split()[1:6] == ["test", "running", "300", "300", "0"]
    assert "forward: acked 0, backlog" in lines[web.container_id[:12]] and "DOWN, last error:" in \
        lines[web.container_id[:12]]
    assert lines[done.container_id[:12]].split()[1:6] == ["test", "stopped", "40", "40", "0"]
    assert text[-1] == "the plugin's totals: received 340 = stored 340 + dropped 0"

    plugin.kill()  # down: the state files speak, with the time of their save
    down = status(plugin.state_dir)
    assert down.returncode == 0, down.stderr
    out = down.stdout.splitlines()
    assert out[0].startswith("logbridge: not answering (") and ", as of 20" in out[0] and out[0].endswith(" UTC")
    saved = report(plugin.state_dir)
    assert not saved["live"] and saved["totals"] is None
    d = row(saved, done.container_id)
    assert (d["state"], d["received"], d["stored"], d["dropped"]) == ("saved", 40, 40, {})
    assert d["as_of"] <= saved["as_of"]
    w = row(saved, web.container_id)
    assert w["outputs"][1]["name"] == "forward" and w["outputs"][1]["acked"] == 0
    assert w["outputs"][1]["backlog_bytes"] > 0  # nothing was acknowledged: it all waits in the journal
    web.close()


def test_no_plugin_and_no_state_is_a_clear_error(tmp_path):
    r = status(tmp_path / "nowhere")
    assert r.returncode == 2
    assert "no plugin answers on" in r.stderr and "--state-dir" in r.stderr


def test_the_command_needs_no_third_party_package():
    """It runs with the host's python3 from a checkout (the managed plugin's dependencies are in its rootfs)."""
    probe = ("import sys, driver.__main__, driver.status; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'prometheus_client', 'google', "
             "'msgpack', 'logbridge_proto'}))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
