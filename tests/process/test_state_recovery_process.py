"""The plugin process started on a damaged state dir (issue 11 point 3): a state file left unreadable by a kill,
a power cut or another logbridge version never stops the plugin from starting, is logged once and counted, and
the other containers carry on; no line a container wrote after the restart is lost, nor any line the damaged
state still held.

Each test runs the plugin with two live containers (A, B) and one finished one (C: its counts go into
totals.json), SIGKILLs it while their FIFOs stay open (as dockerd keeps them), damages the state dir and starts
the plugin again, which re-opens the FIFOs; A and B then write more lines.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from driver.frames import FrameDecoder
from driver.jsonfile import decode_line
from tests.plugin_harness import FakeLogger, PluginProcess, wait_for
from tests.process.test_forward_process import write_numbers
from tests.process.test_metrics_process import free_port, scrape, total
from tests.unit.test_state_recovery import damage

FIRST, MORE = 200, 100  # lines before the kill, lines after the restart


def numbers(path: Path) -> list[int]:
    """The numbers in a json.log (and its rotated files, none here); every line must be a whole entry."""
    if not path.exists():
        return []
    return [int(decode_line(raw)[0]) for raw in path.read_bytes().splitlines(keepends=True)]


class Run:
    """A plugin with A and B live and C finished, killed; ``restart()`` brings it back on the same files."""

    def __init__(self, base: Path, fifo_dir: Path) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        base.mkdir()
        self.profiles = base / "profiles.json"
        self.profiles.write_text(json.dumps({"node": {"max-file": "3"}}))
        self.plugin = PluginProcess(base, env=self.env()).start()
        # A names a profile: a profiles file gone bad must not leave its FIFO undrained
        self.loggers = {name: FakeLogger(self.plugin, fifo_dir=fifo_dir,
                                         config={"logbridge-profile": "node"} if name == "A" else None)
                        for name in "ABC"}
        for logger in self.loggers.values():
            logger.start()
            write_numbers(logger, 0, FIRST - 1)
        for logger in self.loggers.values():
            assert wait_for(lambda lg=logger: len(numbers(self.json_log(lg))) == FIRST, timeout=30)
        self.loggers["C"].stop()
        assert wait_for(lambda: total(scrape(self.addr), "logbridge_containers_active") == 2, timeout=30)
        self.plugin.kill()

    def env(self) -> dict[str, str]:
        return {"METRICS_ADDR": self.addr, "LOGBRIDGE_PROFILES": str(self.profiles)}

    def json_log(self, logger: FakeLogger) -> Path:
        return self.plugin.log_file(logger.container_id)

    def cdir(self, name: str) -> Path:
        return self.plugin.state_dir / "containers" / self.loggers[name].container_id

    def restart(self, plugin: PluginProcess | None = None) -> None:
        if plugin is not None:
            self.plugin = plugin
        self.plugin.start()
        for name in "AB":
            write_numbers(self.loggers[name], FIRST, FIRST + MORE - 1)

    def close(self) -> None:
        if self.plugin.proc and self.plugin.proc.poll() is None:
            self.plugin.kill()
        for logger in self.loggers.values():
            logger.close()


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / "p", tmp_path / "fifos")
    yield r
    r.close()


def last_segment(cdir: Path) -> Path:
    return sorted((cdir / "journal").glob("*.seg"))[-1]


# file kind (the metric's label) → (the file in a run, its damage, what the metric's problem label says)
CASES = {
    "fifos.json": (lambda r: r.plugin.state_dir / "fifos.json", "zeros", "corrupt"),
    "totals.json": (lambda r: r.plugin.state_dir / "totals.json", "garbage", "corrupt"),
    "info.json": (lambda r: r.cdir("A") / "info.json", "truncated", "corrupt"),
    "cursor": (lambda r: r.cdir("A") / "cursors" / "jsonlog.json", "zero-filled tail", "corrupt"),
    "foreign totals.json": (lambda r: r.plugin.state_dir / "totals.json", "foreign", "foreign"),
    "journal segment": (lambda r: last_segment(r.cdir("A")), "truncated", None),
    "profiles": (lambda r: r.profiles, "garbage", "corrupt"),
}


@pytest.mark.parametrize("kind", CASES)
def test_a_damaged_state_file_is_recovered_from_logged_once_and_counted(run, kind):
    locate, how, problem = CASES[kind]
    path = locate(run)
    assert path.exists(), f"the run did not leave {path}"
    damage(path, how)
    run.restart()
    want = list(range(FIRST + MORE))
    for name in "AB":
        assert wait_for(lambda n=name: set(numbers(run.json_log(run.loggers[n]))) == set(want), timeout=30), name
    assert numbers(run.json_log(run.loggers["B"])) == want  # the undamaged container: every line exactly once
    got_a = numbers(run.json_log(run.loggers["A"]))
    assert got_a == want, f"A: {len(got_a)} lines, twice: {sorted(n for n, c in Counter(got_a).items() if c > 1)[:10]}"
    assert numbers(run.json_log(run.loggers["C"])) == list(range(FIRST))
    m = scrape(run.addr)
    recovered = {dict(lbl)["file"] + "/" + dict(lbl)["problem"]: v
                 for (n, lbl), v in m.items() if n == "logbridge_state_files_recovered_total"}
    # The last segment cut short: json.log's cursor points past the journal's end, or before it while json.log
    # holds more than the journal (which it then keeps), depending on when the cursor was saved.
    allowed = {"cursor/past_journal_end", "journal segment/behind_json_log"} if kind == "journal segment" else {
        f"{kind.removeprefix('foreign ')}/{problem}"}
    assert len(recovered) == 1 and set(recovered) <= allowed and sum(recovered.values()) == 1, recovered
    out = run.plugin.stdout.read_text()
    assert "Traceback" not in out
    errors = [r for r in map(json.loads, out.splitlines()) if r["level"] == "error"]
    if kind == "profiles":  # the operator's file: reported at start, never set aside; A carries on with defaults
        assert [e["msg"].split(":")[0] for e in errors] == ["profiles file unreadable",
                                                             "options of a re-attached FIFO refused"], errors
        assert errors[0]["path"] == str(path) and path.exists()
        return
    assert len(errors) == 1, errors  # logged once, with what was done
    if problem:
        assert errors[0]["path"] == str(path)
    if problem:
        assert Path(str(path) + ".bad").exists()


def journal_numbers(cdir: Path) -> set[int]:
    """The numbers a (damaged) journal still holds."""
    data = b"".join(p.read_bytes() for p in sorted((cdir / "journal").glob("*.seg")))
    entries, _ = FrameDecoder().decode(data, final=True)
    return {int(e[2]) for e in entries}


def test_a_power_cut_image_loses_nothing_the_image_holds(run, tmp_path):
    """A copy of the killed run's state dir and log root, as a power cut leaves them (no fsync: recent writes
    never reached the disk): cursor slots and fifos.json all zeros (their blocks were never written), the
    journals' and json.log's tails cut inside a frame or line, totals.json truncated, a zero-filled tail in a
    journal. The plugin started on the copy re-attaches the FIFOs and keeps every line the copy still holds."""
    image = tmp_path / "image"
    image.mkdir()
    shutil.copytree(run.plugin.state_dir, image / "state", ignore=shutil.ignore_patterns("*.sock"))
    shutil.copytree(run.plugin.log_root, image / "logs")
    state = image / "state"
    for cursor in state.glob("containers/*/cursors/*.json"):
        damage(cursor, "zeros")
    damage(state / "fifos.json", "zeros")
    damage(state / "totals.json", "truncated")
    held = {}
    for name in "AB":
        cdir = state / "containers" / run.loggers[name].container_id
        segment = last_segment(cdir)
        size = segment.stat().st_size
        if name == "A":
            os.truncate(segment, size * 2 // 3)  # cut inside a frame
        else:
            with open(segment, "r+b") as f:
                f.seek(size * 2 // 3)
                f.write(bytes(size - size * 2 // 3))  # the size reached the disk, the last blocks did not
        log = image / "logs" / run.loggers[name].container_id / f"{run.loggers[name].container_id}-json.log"
        os.truncate(log, log.stat().st_size * 3 // 4 + 7)  # inside a line
        data = log.read_bytes()
        held[name] = journal_numbers(cdir) | {int(decode_line(raw)[0])
                                             for raw in data[: data.rfind(b"\n") + 1].splitlines(keepends=True)}
        assert 0 < len(held[name]) < FIRST  # the image did lose lines
    run.restart(PluginProcess(image, env=run.env()))
    for name in "AB":
        logger = run.loggers[name]
        want = held[name] | set(range(FIRST, FIRST + MORE))
        assert wait_for(lambda lg=logger, w=want: w <= set(numbers(run.json_log(lg))), timeout=30), (
            name, sorted(want - set(numbers(run.json_log(logger))))[:10])
        got = numbers(run.json_log(logger))
        new = [n for n in got if n >= FIRST]
        assert new == list(range(FIRST, FIRST + MORE)), name  # after the restart: each line once, in order
        twice = sum(c - 1 for c in Counter(got).values())
        print(f"\n{name}: image held {len(held[name])} of {FIRST} lines; json.log now {len(got)} lines, {twice} twice")
    out = run.plugin.stdout.read_text()
    assert "Traceback" not in out
    m = scrape(run.addr)
    assert total(m, "logbridge_state_files_recovered_total") >= 5  # 4 cursors at least, fifos.json, totals.json
