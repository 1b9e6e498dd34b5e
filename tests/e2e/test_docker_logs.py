"""`docker logs` served by logbridge prints exactly what it prints for the same container under json-file.

One json-file reference container per daemon, one logbridge container per plugin kind, every `docker logs`
variant run against each; since/until come from each container's own entry times (a sleep separates the groups
of lines, so "group b" is the same set of lines for both). Also with dockerd in a non-UTC zone, and `--since` on
a large rotated, compressed log skipping whole files (the plugin's bytes-read figure proves it).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from driver.jsonfile import parse_time
from tests.e2e.conftest import another_dockerd
from tests.support import Dockerd, read_entries, wait_for
from tests.support.cli import find_binary

pytestmark = pytest.mark.e2e

# Three groups of lines 1.2 s apart; stdout and stderr; an empty line, a 20000-byte line (dockerd splits it into
# partial frames) and a last line without newline. The last lines are stdout only, 0.3 s after the others: which of
# two lines written to stdout and stderr at once comes first in the log is a race in dockerd's copier, and
# `--tail N` counts both streams.
SCRIPT = (
    "for g in a b c; do"
    ' for i in 1 2 3 4 5; do echo "$g out $i"; echo "$g err $i" >&2; done;'
    " if [ $g = a ]; then echo; fi;"
    " if [ $g = b ]; then head -c 20000 /dev/zero | tr '\\0' x; echo; fi;"
    " if [ $g != c ]; then sleep 1.2; fi;"
    " done; sleep 0.3; echo c last 1; echo c last 2; echo c last 3; printf 'c no newline'"
)
CMD = ("sh", "-c", SCRIPT)
FOLLOW_CMD = ("sh", "-c", "sleep 1; seq 1 3; echo e1 >&2; sleep 1; seq 4 6; echo e2 >&2")
TS = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9})(Z|[+-]\d\d:\d\d) ")
ST_JOHNS = "America/St_Johns"  # -03:30 in November, -02:30 in summer: a zone no one runs CI in by accident

Output = tuple[bytes, bytes]  # (stdout, stderr) of one `docker logs`


def unix(ns: int) -> str:
    """A `--since`/`--until` value with nanoseconds."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def logs(daemon: Dockerd, cid: str, *opts: str, timeout: float = 60) -> Output:
    proc = daemon.docker("logs", *opts, cid, timeout=timeout)
    return proc.stdout, proc.stderr


def run_detached(daemon: Dockerd, driver: str, *cmd: str, log_opts: dict | None = None) -> str:
    args = ["run", "-d", "--network", "none", "--log-driver", driver]
    for k, v in (log_opts or {}).items():
        args += ["--log-opt", f"{k}={v}"]
    return daemon.docker(*args, "bb:latest", *cmd).stdout.decode().strip()


def wait_exit(daemon: Dockerd, *cids: str, timeout: float = 60) -> None:
    for cid in cids:
        rc = daemon.docker("wait", cid, timeout=timeout).stdout.decode().strip()
        assert rc == "0", f"container {cid[:12]} exited with {rc}"


def complete(entries: list[dict]) -> list[dict] | None:
    """`entries` if they hold all of CMD's output. How many chunks the long line became depends on how dockerd's
    copier happened to read the pipe, so lines are counted, not entries."""
    text = {s: "".join(e["log"] for e in entries if e["stream"] == s) for s in ("stdout", "stderr")}
    return entries if text["stdout"].endswith("c no newline") and text["stderr"].count("\n") == 15 else None


def group_times(entries: list[dict], group: str) -> tuple[int, int]:
    times = [
        parse_time(e["time"])
        for e in entries
        if e["log"].startswith(group + " ") or (group == "b" and e["log"].startswith("xxxx"))
    ]
    return min(times), max(times)


def views(daemon: Dockerd, cid: str, entries: list[dict]) -> dict[str, Output]:
    """Every non-follow `docker logs` variant of one container, since/until taken from its own entries."""
    b_first, b_last = group_times(entries, "b")
    c_first, _ = group_times(entries, "c")
    variants = {
        "plain": (),
        "tail 4": ("--tail", "4"),
        "tail 1": ("--tail", "1"),
        "tail 0": ("--tail", "0"),
        "tail all": ("--tail", "all"),
        "since b": ("--since", unix(b_first)),
        "until b": ("--until", unix(b_last)),
        "since b until b": ("--since", unix(b_first), "--until", unix(b_last)),
        "since b until b, tail 3": ("--since", unix(b_first), "--until", unix(b_last), "--tail", "3"),
        "since c": ("--since", unix(c_first)),
        "since after end": ("--since", unix(c_first + 10**10)),
        "details": ("--details",),
        "details tail 2": ("--details", "--tail", "2"),
    }
    out = {name: logs(daemon, cid, *opts) for name, opts in variants.items()}
    out["timestamps"] = logs(daemon, cid, "--timestamps")
    return out


def strip_timestamps(text: bytes, zone: bytes) -> tuple[bytes, list[int]]:
    """The output without its timestamp prefixes, and the times they showed (ns). dockerd prefixes every entry,
    also the second chunk of a long line, which then sits in the middle of an output line."""
    found = TS.findall(text)
    assert found and text.startswith(b"".join(found[0]) + b" "), f"no timestamp at the start: {text[:60]!r}"
    assert {z for _, z in found} == {zone}, f"timestamp zones {sorted({z for _, z in found})}, expected {zone!r}"
    return TS.sub(b"", text), [parse_time(t + z) for t, z in found]


def follow_both(daemon: Dockerd, drivers: list[str]) -> list[Output]:
    """Start FOLLOW_CMD detached under each driver and `docker logs -f` it at once; the streams must end by
    themselves when the containers stop."""
    cids = [run_detached(daemon, d, *FOLLOW_CMD) for d in drivers]
    procs = [
        subprocess.Popen(
            [find_binary("docker"), "logs", "-f", cid], env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for cid in cids
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("docker logs -f did not end after its container stopped")
        assert proc.returncode == 0, err
        results.append((out, err))
    return results


def check_same_as_json_file(daemon: Dockerd, driver: str, json_log: Callable[[str], Path], zone: bytes) -> None:
    """The plugin container and a json-file one run CMD side by side; every view must be equal."""
    cids = [run_detached(daemon, "json-file", *CMD), run_detached(daemon, driver, *CMD)]
    follow_results = follow_both(daemon, ["json-file", driver])
    wait_exit(daemon, *cids)
    ref_entries = read_entries(daemon.json_file_log(cids[0]))
    assert complete(ref_entries), "the reference is not what this test expects"
    entries = wait_for(
        "the plugin's json.log to hold every line", lambda: complete(read_entries(json_log(cids[1]))), 15
    )
    expected, got = views(daemon, cids[0], ref_entries), views(daemon, cids[1], entries)

    # the reference says what each view should show: the checks below are not vacuous
    assert expected["plain"][0].count(b"\n") == 20 and expected["plain"][0].endswith(b"c no newline")
    assert expected["since b until b"][0].startswith(b"b out 1\n") and b"a out" not in expected["since b"][0]
    assert expected["since b until b"][1] == b"".join(b"b err %d\n" % i for i in range(1, 6))
    assert expected["tail 0"] == (b"", b"")
    assert expected["details tail 2"][0].startswith(b" ")
    for name in expected:
        if name == "timestamps":
            continue
        assert got[name] == expected[name], f"docker logs ({name}) differs from json-file"

    # json-file's times come back from its file in UTC; a plugin's are made by dockerd's adapter with
    # time.Unix, in dockerd's local zone: the same instants, spelt in another zone when dockerd is not in UTC
    ts_expected = [strip_timestamps(s, b"Z")[0] for s in expected["timestamps"]]
    (out, out_times), (err, err_times) = (strip_timestamps(s, zone) for s in got["timestamps"])
    assert [out, err] == ts_expected
    assert out == got["plain"][0] and err == got["plain"][1]
    stored = [parse_time(e["time"]) for e in entries]
    stdout_times = [parse_time(e["time"]) for e in entries if e["stream"] == "stdout"]
    # dockerd shows one timestamp per entry: the long line's two chunks show two, on one line of output
    assert sorted(out_times + err_times) == sorted(stored) and out_times == stdout_times

    ref_follow, follow = follow_results
    assert ref_follow == (b"1\n2\n3\n4\n5\n6\n", b"e1\ne2\n")
    assert follow == ref_follow


@pytest.fixture(params=["legacy", "managed"])
def plugin(request, legacy_plugin, managed_plugin):
    return legacy_plugin() if request.param == "legacy" else managed_plugin()


def test_docker_logs_equals_json_file(dockerd, bb_image, plugin):
    check_same_as_json_file(dockerd, plugin.driver, plugin.json_log, b"Z")


@pytest.fixture
def zoned_dockerd(dockerd) -> Iterator[Dockerd]:
    """A second private dockerd whose local time zone is St. John's (-03:30); only for one test."""
    assert Path("/usr/share/zoneinfo", ST_JOHNS).exists(), "tzdata is missing"
    with another_dockerd(env={"TZ": ST_JOHNS}) as daemon:
        yield daemon


def test_docker_logs_equals_json_file_with_dockerd_in_another_zone(zoned_dockerd, legacy_plugin):
    """dockerd sends Since/Until with its own zone offset (-03:30 here) and shows a plugin's timestamps in it
    (json-file's in UTC: the only difference, and dockerd's doing)."""
    plugin = legacy_plugin()
    check_same_as_json_file(zoned_dockerd, plugin.driver, plugin.json_log, b"-03:30")


# ---- --since on a large rotated log -----------------------------------------------------------------------------
BIG_OPTS = {"max-size": "60k", "max-file": "12", "compress": "true"}
# group a: ~470 KB of hex dump lines (random bytes: gzip gains little) over 8 files; 1.5 s later group b: 40 lines
BIG_CMD = ("sh", "-c", "head -c 60000 /dev/urandom | od -An -tx1 -v | sed 's/^/a /'; sleep 1.5; seq 40 | sed 's/^/b /'")
ROTATED = re.compile(r".*-json\.log\.\d+")


def read_figures(output: Path, offset: int) -> list[dict]:
    """The plugin's "ReadLogs served" debug lines written after `offset`."""
    with open(output, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [json.loads(line) for line in text.splitlines() if '"ReadLogs served"' in line]


def last_time(path: Path) -> int:
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return parse_time(json.loads(data.splitlines()[-1])["time"])


def test_since_skips_whole_rotated_files(dockerd, bb_image, legacy_plugin):
    plugin = legacy_plugin(env={"LOG_LEVEL": "debug"})
    cid = run_detached(dockerd, plugin.driver, *BIG_CMD, log_opts=BIG_OPTS)
    wait_exit(dockerd, cid)
    path = plugin.json_log(cid)

    def settled() -> bool:  # all of group b written, every rotated file compressed
        entries = read_entries(path)
        names = [p.name for p in path.parent.iterdir()]
        return (
            bool(entries)
            and entries[-1]["log"] == "b 40\n"
            and not any(ROTATED.fullmatch(n) or n.endswith(".tmp") for n in names)
        )

    wait_for("json.log to hold group b and compression to finish", settled, 30)
    files = sorted(path.parent.glob(path.name + "*"))
    gz = [p for p in files if p.name.endswith(".gz")]
    assert len(gz) >= 5, f"expected several rotated, compressed files: {[p.name for p in files]}"
    b_first = parse_time(read_entries(path)[-40]["time"]) if len(read_entries(path)) >= 40 else None
    if b_first is None:  # group b straddles a rotation: take its first line from the files
        b_first = min(parse_time(e["time"]) for e in read_entries(path) if e["log"].startswith("b "))
    needed = [p for p in files if last_time(p) >= b_first]
    skipped = [p for p in files if p not in needed]
    on_disk = sum(p.stat().st_size for p in files)
    needed_bytes = sum(p.stat().st_size for p in needed)

    offset = plugin.output.stat().st_size
    out_all, _ = logs(dockerd, cid)
    out_since, _ = logs(dockerd, cid, "--since", unix(b_first))
    assert out_since == b"".join(b"b %d\n" % i for i in range(1, 41))
    assert out_all.endswith(out_since) and out_all.count(b"\n") > 3000

    def figures() -> list[dict] | None:
        found = read_figures(plugin.output, offset)
        return found if len(found) >= 2 else None

    full, since = (f["bytes_read"] for f in wait_for("ReadLogs figures in the plugin's log", figures, 10)[-2:])
    print(
        f"\nrotated log: {len(files)} files, {on_disk} bytes on disk; --since needs {len(needed)} file(s),"
        f" {needed_bytes} bytes; ReadLogs read {full} bytes for all, {since} bytes with --since"
    )
    assert full >= on_disk
    assert len(skipped) >= 5 and sum(p.stat().st_size for p in skipped) > 80_000
    # with --since the skipped files cost their gzip header (12 bytes + lastTime) each; the files read, a look at
    # their last line (one block at most) and their bodies
    assert since <= needed_bytes + len(needed) * 4200 + len(skipped) * 64, "whole files were not skipped"
