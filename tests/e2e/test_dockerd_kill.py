"""SIGKILL of dockerd mid-stream, no live-restore (issue 11 point 4), on a private dockerd of its own.

Two containers write lines carrying a run id and a sequence number, to json.log and to a forward receiver. dockerd
is SIGKILLed while they write and started again (it stops the containers it finds: no live-restore). What died
inside dockerd (its copier's buffer) is not ours to keep; everything else is: json.log holds for the killed run a
gap-free, duplicate-free prefix of what each container wrote, the receiver the same lines (duplicates at most one
batch), and the FIFO table (fifos.json) no entry for a FIFO whose logger is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter

import pytest

from driver.frames import encode_entry
from driver.outputs.forward.sink import BATCH_BYTES, WINDOW
from tests.e2e.conftest import another_dockerd, unique_name
from tests.support import LegacyPlugin, read_entries, wait_for
from tests.support.receiver import ReceiverProcess

pytestmark = pytest.mark.e2e

CONTAINERS = 2
BEFORE_KILL = 2000  # lines each container has in json.log when dockerd is killed
WRITER = 'i=0; while :; do echo "$RUN $i"; i=$((i+1)); usleep 1000; done'


def sequence(lines: list[str], run: str) -> list[int]:
    """The sequence numbers of `run`'s lines, in the order they were stored."""
    out = []
    for line in lines:
        rid, _, n = line.rstrip("\n").partition(" ")
        if rid == run:
            out.append(int(n))
    return out


def test_dockerd_sigkill_mid_stream_keeps_a_gap_free_prefix_and_no_dead_fifo(tmp_path):
    receiver = ReceiverProcess(tmp_path / "receiver").start()
    name = unique_name("k")
    plugin = LegacyPlugin(name, tmp_path / "logs", tmp_path / "state")
    plugin.start()
    try:
        with another_dockerd() as daemon:
            runs = {}
            for _ in range(CONTAINERS):
                run = secrets.token_hex(4)
                started = daemon.run("bb:latest", "sh", "-c", WRITER, log_driver=plugin.driver,
                                     log_opts={"fluentd-address": receiver.address},
                                     extra_args=["-d", "-e", f"RUN={run}"])
                assert started.rc == 0, started.stderr.decode(errors="replace")
                runs[run] = started.container_id
            for run, cid in runs.items():
                wait_for(f"{BEFORE_KILL} lines of {run} in json.log",
                         lambda c=cid: len(read_entries(plugin.json_log(c))) >= BEFORE_KILL, 60)
            table = json.loads((plugin.state_dir / "fifos.json").read_text())["fifos"]
            assert sorted(table.values()) == sorted(runs.values())  # both FIFOs attached
            daemon.crash()
            killed_at = time.monotonic()
            # The plugin sees its FIFOs' writer gone (EOF): each container's pipeline finishes and leaves the table.
            wait_for("the FIFO table to drop the dead FIFOs",
                     lambda: json.loads((plugin.state_dir / "fifos.json").read_text())["fifos"] == {}, 60)
            daemon.start()
            for cid in runs.values():  # dockerd stops what it finds running (no live-restore)
                wait_for(f"{cid[:12]} stopped", lambda c=cid: daemon.docker(
                    "inspect", "-f", "{{.State.Running}}", c).stdout.strip() == b"false", 60)
            print(f"\ndockerd back {time.monotonic() - killed_at:.1f} s after the kill")

            # A container started now logs as usual: the plugin carried on.
            after = daemon.run("bb:latest", "sh", "-c", "seq 1 5", log_driver=plugin.driver)
            assert after.rc == 0 and after.stdout == b"1\n2\n3\n4\n5\n"
            wait_for("the new container's lines", lambda: len(read_entries(plugin.json_log(after.container_id))) == 5,
                     30)

            frame = len(encode_entry(("stdout", time.time_ns(), b"%s %d\n" % (b"x" * 8, 10**6), False, False, "", 0)))
            for run, cid in runs.items():
                stored = sequence([e["log"] for e in read_entries(plugin.json_log(cid))], run)
                assert len(stored) >= BEFORE_KILL
                assert stored == list(range(len(stored))), f"{run}: json.log is not a gap-free, duplicate-free prefix"
                n = len(stored)

                def complete(r=run, n=n) -> list[int] | None:
                    got = sequence(receiver.logs(), r)
                    return got if set(got) == set(range(n)) else None

                forwarded = wait_for(f"{run}: the receiver to hold json.log's lines", complete, 60)
                twice = sum(c - 1 for c in Counter(forwarded).values())
                assert twice * frame <= WINDOW * BATCH_BYTES, f"{run}: {twice} duplicates, more than the window"
                print(f"{run}: json.log {len(stored)} lines, gap-free; receiver {len(forwarded)} ({twice} twice)")
            table = json.loads((plugin.state_dir / "fifos.json").read_text())["fifos"]
            assert all(os.path.exists(path) for path in table), f"dead entries: {table}"
    finally:
        plugin.stop()
        receiver.stop()
