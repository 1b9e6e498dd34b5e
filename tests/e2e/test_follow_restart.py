"""`docker logs -f` across `docker restart` on the real dockerd (issue 14 point 5): the follower ends when the
logger it followed closes, at the first restart, as json-file's does, and shows no line of a later run.

One json-file container and one logbridge container run side by side and are restarted together, back to back;
each run numbers itself (a counter in the container's /tmp, which survives `docker restart`), so a follower that
went on across a restart shows lines of two runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import Dockerd, wait_for
from tests.support.cli import find_binary

pytestmark = pytest.mark.e2e

RESTARTS = 20
ROUNDS = 3
# One run: bump the run counter, then write "run N line I" every 20 ms until killed.
WRITER = (
    'n=$(( $(cat /tmp/run 2>/dev/null || echo 0) + 1 )); echo $n >/tmp/run; i=0; '
    'while :; do echo "run $n line $i"; i=$((i+1)); usleep 20000; done'
)
LINE = re.compile(r"run (\d+) line (\d+)")


def run_detached(daemon: Dockerd, driver: str) -> str:
    args = ["run", "-d", "--network", "none", "--log-driver", driver, "bb:latest", "sh", "-c", WRITER]
    return daemon.docker(*args).stdout.decode().strip()


def parse(out: Path) -> list[tuple[int, int]]:
    """(run, line number) of every complete line the follower printed."""
    lines = out.read_text().split("\n")[:-1]
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), f"unexpected lines: {[s for s, m in zip(lines, parsed, strict=True) if not m][:5]}"
    return [(int(m[1]), int(m[2])) for m in parsed]


def test_follow_ends_at_the_first_restart_as_json_files_does(dockerd, bb_image, legacy_plugin, tmp_path):
    plugin = legacy_plugin()
    drivers = {"json-file": run_detached(dockerd, "json-file"), "logbridge": run_detached(dockerd, plugin.driver)}
    for round_ in range(ROUNDS):
        procs, outs = {}, {}
        for name, cid in drivers.items():
            outs[name] = tmp_path / f"{name}-{round_}.out"
            with open(outs[name], "wb") as out:
                procs[name] = subprocess.Popen([find_binary("docker"), "logs", "-f", "--tail", "0", cid],
                                               env=dockerd.env, stdout=out, stderr=subprocess.PIPE)
        try:
            for name in drivers:
                wait_for(f"{name}: a line followed before the restarts", lambda o=outs[name]: parse(o), 30)
            for _ in range(RESTARTS):
                dockerd.docker("restart", "-t", "0", *drivers.values(), timeout=60)
            # Every follower has ended by now or ends very soon; one that went on across a restart ends only at
            # `docker stop`.
            for name, proc in procs.items():
                wait_for(f"{name}: docker logs -f to end after the restarts", lambda p=proc: p.poll() is not None, 20)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        print(f"\nround {round_}: " + ", ".join(f"{n} followed {len(parse(o))} lines" for n, o in outs.items()))
        for name, proc in procs.items():
            assert proc.returncode == 0, f"{name}: {proc.stderr.read()!r}"
            got = parse(outs[name])
            runs = sorted({run for run, _ in got})
            assert len(runs) == 1, f"{name}: the follower went on across a restart: runs {runs}"
            numbers = [i for _, i in got]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"{name}: lines missing"
    for cid in drivers.values():
        dockerd.docker("rm", "-f", cid)
