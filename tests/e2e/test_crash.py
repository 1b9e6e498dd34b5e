"""SIGKILL of the plugin while a container writes numbered lines, on the real dockerd, legacy and managed:
after the container exits every number is in json.log (rotated files included) exactly once, and the
container was not blocked by the kills (it keeps writing while the plugin is down, and it finishes).

Legacy: the test kills the host process and starts it again on the same socket and state dir. Managed: the
test kills the plugin process and dockerd restarts it. Either way dockerd never repeats StartLogging, so the
restarted plugin must re-open the FIFO from its persisted table; dockerd holds the FIFO read-write, so
frames written meanwhile wait in the pipe (enlarged to 1 MiB by the plugin).

The container writes until the test creates /tmp/stop in it, so every kill lands while it writes. The first
crash is a hang then a kill: the plugin is SIGSTOPped until the container has written STALL_LINES more lines
(more than a default 64 KiB pipe holds), then SIGKILLed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import Dockerd, SupportError, wait_for

pytestmark = pytest.mark.e2e

BATCH = 200
KILLS = 10
STALL_LINES = 4000  # ~116 KB of frames
# BATCH numbers every ~20 ms (up to 10,000 lines/s) until /tmp/stop exists; /tmp/progress: how many so far
WRITER = (
    "i=0; while [ ! -e /tmp/stop ]; do "
    f"seq $((i*{BATCH})) $((i*{BATCH}+{BATCH - 1})); i=$((i+1)); echo $((i*{BATCH})) >/tmp/progress; usleep 20000; "
    "done"
)
LOG_OPTS = {"max-size": "1m", "max-file": "60", "compress": "true"}  # kills land next to rotations and gzip


def rotated_files(path: Path) -> list[Path]:
    """`path` and its rotated files (.N or .N.gz), oldest first."""

    def number(p: Path) -> int:
        return int(p.name[len(path.name) + 1 :].removesuffix(".gz"))

    rotated = [p for p in path.parent.glob(path.name + ".*") if not p.name.endswith(".tmp")]
    return sorted(rotated, key=number, reverse=True) + ([path] if path.exists() else [])


def logged_lines(path: Path) -> list[str]:
    """The `log` values of every complete entry in json.log and its rotated files, oldest first. While the
    plugin writes, a rotation can rename a file between listing and reading: then list again."""
    while True:
        try:
            out = []
            for p in rotated_files(path):
                data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
                out += [json.loads(line)["log"] for line in data.split(b"\n")[:-1]]
            return out
        except FileNotFoundError:
            continue


def progress_mark(path: Path) -> tuple[int, int]:
    """Cheap evidence that json.log grew: (rotated files, size of the current file)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    return len(rotated_files(path)), size


def count_numbers(path: Path) -> tuple[Counter, list[str]]:
    """How often each number appears, and the lines that are not a number."""
    counts: Counter = Counter()
    junk = []
    for line in logged_lines(path):
        if line.endswith("\n") and line[:-1].isdigit():
            counts[int(line)] += 1
        else:
            junk.append(line)
    return counts, junk


class Crashable:
    """Hang, kill and restart, the same way for both plugin kinds."""

    def __init__(self, kind: str, plugin) -> None:
        self.kind = kind
        self.plugin = plugin

    def stop(self) -> None:
        """SIGSTOP: the plugin hangs (reads nothing from the FIFO) until killed."""
        os.kill(wait_for(f"plugin {self.plugin.name} process", self.plugin.pid, 10), signal.SIGSTOP)

    def crash(self) -> tuple[float, float]:
        """SIGKILL, then wait until the plugin serves again and dockerd knows it does. Returns the seconds
        from the kill until the plugin answered, and until dockerd took it back."""
        t0 = time.monotonic()
        if self.kind == "legacy":
            self.plugin.kill()
            self.plugin.restart()
            return (time.monotonic() - t0,) * 2
        # dockerd 20.10 restarts a managed plugin, then dials its socket after 0.5 s and every 3 s (4 tries),
        # serially with its next exit event: a second kill before that dial succeeded is taken as a failed
        # start and the plugin stays down for good. dockerd rewrites the plugin's config.json once it dialed.
        config = self.plugin.dockerd.data_root / "plugins" / self.plugin.id / "config.json"
        saved = _stamp(config)
        old = self.plugin.kill()
        self.plugin.wait_running(old, timeout=60)
        answered = time.monotonic() - t0
        wait_for("dockerd to take the plugin back", lambda: _stamp(config) != saved, 30)
        return answered, time.monotonic() - t0


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture(params=["legacy", "managed"])
def crashable(request: pytest.FixtureRequest) -> Crashable:
    make = request.getfixturevalue(f"{request.param}_plugin")  # the conftest factories
    return Crashable(request.param, make())


class Container:
    """The writer container, seen from the host through its root filesystem."""

    def __init__(self, dockerd: Dockerd, cid: str) -> None:
        self.dockerd = dockerd
        self.cid = cid
        pid = json.loads(dockerd.docker("inspect", "-f", "{{json .State.Pid}}", cid).stdout)
        self.root = Path(f"/proc/{pid}/root")

    def progress(self) -> int:
        """How many numbers it has written so far."""
        try:
            return int((self.root / "tmp/progress").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop_writing(self) -> None:
        (self.root / "tmp/stop").touch()

    def written(self) -> int:
        """After it exited: how many numbers it wrote (docker cp gives a tar of /tmp/progress)."""
        tar = self.dockerd.docker("cp", f"{self.cid}:/tmp/progress", "-").stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            return int(t.extractfile("progress").read())


def test_sigkill_loses_and_duplicates_no_line(crashable, dockerd: Dockerd, bb_image):
    plugin = crashable.plugin
    started = dockerd.run(bb_image, "sh", "-c", WRITER, log_driver=plugin.driver, log_opts=LOG_OPTS, extra_args=["-d"])
    assert started.rc == 0, started.stderr.decode(errors="replace")
    cid = started.container_id
    container = Container(dockerd, cid)
    path = plugin.json_log(cid)

    def grew_past(n: int):
        return lambda: len(logged_lines(path)) > n

    wait_for("the first lines in json.log", grew_past(0), 30)
    crashable.stop()
    hung_at = container.progress()
    # not blocked: with the plugin hung, the container goes on writing (into the FIFO's 1 MiB)
    wait_for(
        f"{STALL_LINES} lines written while the plugin hangs", lambda: container.progress() >= hung_at + STALL_LINES, 60
    )
    gaps = []
    rng = random.Random(os.environ.get("LOGBRIDGE_CRASH_SEED"))
    for _ in range(KILLS):
        before = progress_mark(path)
        time.sleep(rng.uniform(0, 0.5))  # at a random moment: inside a batch, a rotation, a compression
        gaps.append(crashable.crash())
        wait_for("json.log to grow after the restart", lambda b=before: progress_mark(path) != b, 60)
    container.stop_writing()

    exit_code = dockerd.docker("wait", cid, timeout=120).stdout.decode().strip()  # it finishes
    assert exit_code == "0"
    count = container.written()
    try:  # the plugin may still be catching up from the journal
        wait_for("the last number in json.log", lambda: f"{count - 1}\n" in logged_lines(path)[-5:], 60)
    except SupportError:
        pass
    counts, junk = count_numbers(path)
    missing = [n for n in range(count) if counts[n] == 0]
    duplicated = {n: c for n, c in counts.items() if c > 1}
    files = [p.name.removeprefix(cid) for p in rotated_files(path)]

    def tidy() -> bool:  # crash leftovers gone, every rotated file compressed (compression may lag a little)
        names = sorted(p.name.removeprefix(cid) for p in path.parent.iterdir())
        return names == sorted(["-json.log"] + [f"-json.log.{n}.gz" for n in range(1, len(names))])

    try:
        wait_for("only -json.log and .N.gz files", tidy, 30)
    except SupportError:
        pass
    print(
        f"\n[{crashable.kind}] written {count}, found {sum(counts.values())} ({len(counts)} distinct),"
        f" missing {len(missing)}, duplicated {len(duplicated)}, other lines {len(junk)};"
        f" {STALL_LINES}+ lines written while hung;"
        f" restart gaps (answering/dockerd's view) {', '.join(f'{a:.2f}/{d:.2f}' for a, d in gaps)} s;"
        f" {len(files)} files ({files[0]} .. {files[-1]})"
    )
    assert count > STALL_LINES
    assert not missing, f"{len(missing)} numbers missing, first {missing[:20]}"
    assert not duplicated, f"{len(duplicated)} numbers duplicated, first {sorted(duplicated.items())[:20]}"
    assert not junk, f"lines that are not a number: {junk[:5]}"
    assert set(counts) == set(range(count))
    assert tidy(), f"files: {sorted(p.name.removeprefix(cid) for p in path.parent.iterdir())}"
