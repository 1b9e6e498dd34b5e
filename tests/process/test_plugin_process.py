"""A real logbridge process fed the way dockerd feeds it (FIFO held read-write, StartLogging/StopLogging over HTTP
on its unix socket): lifecycle rules, crash safety, bad frames, full disks."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time

import pytest

from driver.jsonfile import decode_line
from tests.plugin_harness import FakeLogger, PluginProcess, wait_for


def lines_of(path) -> list[bytes]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [decode_line(raw)[0] for raw in f if raw.endswith(b"\n")]


def numbers_in(path) -> list[int]:
    return [int(line) for line in lines_of(path)]


def test_lines_reach_json_log_in_order_and_stop_logging_loses_none(plugin):
    logger = FakeLogger(plugin)
    assert logger.start() == {"Err": ""}
    for i in range(1000):
        logger.log(b"%d" % i)
    logger.stop()  # everything still in the pipe must be drained after the reply
    path = plugin.log_file(logger.container_id)
    assert wait_for(lambda: len(lines_of(path)) == 1000)
    assert numbers_in(path) == [b for b in range(1000)]
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"


def test_retried_start_logging_for_the_same_fifo_is_harmless(plugin):
    logger = FakeLogger(plugin)
    body = logger.start()
    again = plugin.call("/LogDriver.StartLogging",
                        {"File": logger.path, "Info": json.loads(json.dumps({"ContainerID": logger.container_id}))})
    assert body == again == {"Err": ""}
    logger.log(b"once")
    logger.stop()
    assert wait_for(lambda: lines_of(plugin.log_file(logger.container_id)) == [b"once\n"])


def test_empty_start_stop_pair_changes_nothing(plugin):
    cid = secrets.token_hex(32)
    first = FakeLogger(plugin, cid)
    first.start()
    first.log(b"kept")
    first.stop()
    path = plugin.log_file(cid)
    assert wait_for(lambda: lines_of(path) == [b"kept\n"])
    before = path.read_bytes()
    probe = FakeLogger(plugin, cid)  # what `docker logs` on a stopped container causes
    probe.start()
    probe.stop()
    time.sleep(0.3)
    assert path.read_bytes() == before


def test_restart_appends_to_the_same_file(plugin):
    cid = secrets.token_hex(32)
    for run in range(3):
        logger = FakeLogger(plugin, cid)
        logger.start()
        logger.log(b"run %d" % run)
        logger.stop()
    assert wait_for(lambda: lines_of(plugin.log_file(cid)) == [b"run 0\n", b"run 1\n", b"run 2\n"])


@pytest.mark.parametrize("away", [0.0, 0.05, 0.3, 1.0])
def test_fifos_ended_without_stop_logging_then_replaced_keep_every_line_in_order(plugin, away):
    """dockerd's live-restore: the old FIFO ends with no StopLogging (dockerd exited) and a new StartLogging for the
    same container comes `away` seconds later, before, during or after the plugin closes the container's pipeline."""
    cid = secrets.token_hex(32)
    n = 0
    for _ in range(3):
        logger = FakeLogger(plugin, cid)
        logger.start()
        for _ in range(150):
            n += 1
            logger.log(b"%d" % n)
            if n % 10 == 0:
                time.sleep(0.003)  # a container writing, not one burst
        logger.close()  # EOF only
        time.sleep(away)
    last = FakeLogger(plugin, cid)
    last.start()
    for _ in range(50):
        n += 1
        last.log(b"%d" % n)
    last.stop()
    path = plugin.log_file(cid)
    wait_for(lambda: len(lines_of(path)) >= n, timeout=30)
    got = numbers_in(path)
    assert got == list(range(1, n + 1)), (len(got), sorted(set(range(1, n + 1)) - set(got))[:20])


def test_bad_log_opt_is_refused_with_the_option_named(plugin):
    logger = FakeLogger(plugin, config={"max-size": "ten"})
    reply = logger.start()
    logger.close()
    assert "max-size='ten'" in reply["Err"] and "10m" in reply["Err"]


def test_unknown_file_stop_logging_never_fails(plugin):
    assert plugin.call("/LogDriver.StopLogging", {"File": "/nope"}) == {"Err": ""}
    assert plugin.call("/LogDriver.StopLogging") == {"Err": ""}


def test_garbled_bytes_are_skipped_and_the_rest_written(plugin):
    bad = FakeLogger(plugin)
    good = FakeLogger(plugin)
    bad.start()
    good.start()
    bad.log(b"before")
    bad.write(b"\x00\x10\x00\x00garbage that is no frame")
    bad.log(b"after")
    good.log(b"unaffected")
    bad.stop()
    good.stop()
    assert wait_for(lambda: lines_of(plugin.log_file(bad.container_id)) == [b"before\n", b"after\n"])
    assert wait_for(lambda: lines_of(plugin.log_file(good.container_id)) == [b"unaffected\n"])


def _writer(logger: FakeLogger, count: int, done: threading.Event, per_sec: int = 0) -> threading.Thread:
    def run():
        for i in range(count):
            logger.log(b"%d" % i)
            if per_sec and i % 100 == 99:
                time.sleep(100 / per_sec)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sigkill_while_writing_loses_and_duplicates_nothing(plugin):
    logger = FakeLogger(plugin, config={"max-size": "100k", "max-file": "100"})
    logger.start()
    done = threading.Event()
    _writer(logger, 30000, done, per_sec=20000)
    for _ in range(4):
        time.sleep(0.3)
        plugin.kill()  # the FIFO stays open on the writer side, as dockerd keeps it
        plugin.start()
    done.wait(30)
    logger.stop()
    path = plugin.log_file(logger.container_id)

    def all_numbers():
        files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
        nums = []
        for f in [*files, path]:
            nums += [int(x) for x in lines_of(f)]
        return nums

    assert wait_for(lambda: len(all_numbers()) >= 30000, timeout=60)
    assert all_numbers() == list(range(30000))


def test_sigterm_is_quick_and_work_resumes_after_restart(plugin):
    logger = FakeLogger(plugin)
    logger.start()
    for i in range(200):
        logger.log(b"%d" % i)
    t0 = time.monotonic()
    assert plugin.terminate() == 0
    assert time.monotonic() - t0 < 5
    for i in range(200, 400):
        logger.log(b"%d" % i)  # dockerd keeps writing into the pipe while the plugin restarts
    plugin.start()
    logger.stop()
    path = plugin.log_file(logger.container_id)
    assert wait_for(lambda: len(lines_of(path)) == 400)
    assert numbers_in(path) == list(range(400))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_keeps_draining_counts_drops_and_recovers(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    from tests.process.test_metrics_process import free_port, scrape, total

    addr = f"127.0.0.1:{free_port()}"
    plugin = PluginProcess(small, env={"METRICS_ADDR": addr}, stdout=tmp_path / "plugin.out").start()
    try:
        logger = FakeLogger(plugin, fifo_dir=tmp_path)
        logger.start()
        logger.log(b"before the disk filled")
        path = plugin.log_file(logger.container_id)
        assert wait_for(lambda: lines_of(path) == [b"before the disk filled\n"])
        filler = small / "filler"
        with open(filler, "wb") as f:  # take every free block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        done = threading.Event()
        _writer(logger, 50000, done)
        assert done.wait(60), "the writer blocked: a full disk reached back into the container"
        filler.unlink()  # room comes back while the plugin may still be draining the backlog: what it reads now is kept
        for i in range(3):
            logger.log(b"after recovery %d" % i)
        logger.stop()
        assert wait_for(lambda: lines_of(path)[-1:] == [b"after recovery 2\n"], timeout=60)
        assert b"after recovery 0\n" in lines_of(path)
        assert "journal disk full" in plugin.stdout.read_text()
        # every line is accounted for: 1 before, 50,000 during, 3 after (counters show saved counts: poll)
        m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_received_total") == 50004 and total(
            m, "logbridge_lines_written_total") == len(lines_of(path)) else None)(scrape(addr)), timeout=30)
        assert m, scrape(addr)
        dropped = total(m, "logbridge_lines_dropped_total", reason="disk_full")
        assert dropped > 0
        assert total(m, "logbridge_lines_written_total") + dropped == 50004
    finally:
        plugin.kill()
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_state_dir_accounts_for_every_line_and_saves_state_once_there_is_room(tmp_path):
    """Issue 14 point 2: the state dir on a 2 MB tmpfs, `seq 1 200000`: every line is written or counted as dropped,
    no drop is called garbled, and the state files the full disk refuses are warned about once and saved later."""
    from tests.process.test_forward_process import queued, write_numbers
    from tests.process.test_metrics_process import free_port, scrape, total

    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    addr = f"127.0.0.1:{free_port()}"
    plugin = PluginProcess(tmp_path, env={"METRICS_ADDR": addr})
    plugin.state_dir = state  # the log root stays on the big disk
    plugin.start()
    try:
        logger = FakeLogger(plugin, fifo_dir=tmp_path)
        logger.start()
        write_numbers(logger, 1, 200000)  # blocks whenever the pipe is full: returns once the plugin read it all
        assert wait_for(lambda: queued(logger.fd) == 0, timeout=60)
        logger.stop()  # EOF: the pipeline finishes and saves fifos.json and totals.json on a full disk
        path = plugin.log_file(logger.container_id)

        def settled():
            m = scrape(addr)
            return m if m.get(("logbridge_containers_active", ())) == 0 else None

        m = wait_for(settled, timeout=60)
        assert m, scrape(addr)
        received = total(m, "logbridge_lines_received_total")
        written = total(m, "logbridge_lines_written_total")
        dropped = total(m, "logbridge_lines_dropped_total", reason="disk_full")
        assert dropped > 0 and written > 0  # the disk did fill
        assert received == written + dropped == 200000, (received, written, dropped)
        assert total(m, "logbridge_lines_dropped_total", reason="garbled_frame") == 0
        numbers = numbers_in(path)
        assert len(numbers) == written and numbers == sorted(set(numbers))  # in order, none twice
        out = plugin.stdout.read_text()
        assert "Traceback" not in out and "never retrieved" not in out
        # The state files it saved while the disk was full: one warning per file, the old content kept. (Closing
        # the pipeline gives its last journal segment back, so they may all fit: tests/unit/test_statefiles.py
        # covers a refused one.)
        refused = [json.loads(line) for line in out.splitlines() if "could not save state file" in line]
        assert len({r["path"] for r in refused}) == len(refused)
        assert total(m, "logbridge_state_save_failures_total", file="fifos.json") >= (
            1 if any(r["path"].endswith("fifos.json") for r in refused) else 0)
        subprocess.run(["mount", "-o", "remount,size=8m", str(state)], check=True)  # room comes back
        assert wait_for(lambda: json.loads((state / "fifos.json").read_text())["fifos"] == {}, timeout=30)
        assert wait_for(lambda: (state / "totals.json").exists(), timeout=30)
        saved = json.loads((state / "totals.json").read_text())["containers"]
        assert saved["lines_written"] == written
        assert sum(saved["unjournaled_lines"].values()) == dropped
        assert plugin.terminate() == 0
        plugin.start()  # the counts come back from totals.json
        m = scrape(addr)
        assert total(m, "logbridge_lines_received_total") == 200000
        assert total(m, "logbridge_lines_written_total") == written
    finally:
        plugin.kill()
        subprocess.run(["umount", "-l", str(state)], check=False)


def read_logs(plugin: PluginProcess, container_id: str, **config) -> list[tuple[str, bytes]]:
    """Call ReadLogs as dockerd does and decode the frame stream it returns."""
    from driver.frames import FrameDecoder
    from tests.plugin_harness import info_for

    body = {"Info": info_for(container_id), "Config": {"Since": "0001-01-01T00:00:00Z",
                                                       "Until": "0001-01-01T00:00:00Z", "Tail": -1, "Follow": False,
                                                       **config}}
    r = plugin.session.post(plugin.url("/LogDriver.ReadLogs"), data=json.dumps(body).encode(), timeout=30)
    r.raise_for_status()
    entries, used = FrameDecoder().decode(r.content, final=True)
    assert used == len(r.content)
    return [(e[0], e[2]) for e in entries]


def test_read_logs_right_after_stop_sees_every_line_with_newlines(plugin):
    logger = FakeLogger(plugin)
    logger.start()
    for i in range(300):
        logger.log(b"%d" % i, source="stderr" if i % 3 == 0 else "stdout")
    logger.stop()
    got = read_logs(plugin, logger.container_id)
    assert [line for _, line in got] == [b"%d\n" % i for i in range(300)]
    assert [s for s, _ in got][:4] == ["stderr", "stdout", "stdout", "stderr"]
    assert [line for _, line in read_logs(plugin, logger.container_id, Tail=2)] == [b"298\n", b"299\n"]
    assert read_logs(plugin, logger.container_id, Tail=0) == []


def test_read_logs_since_and_until_in_any_zone(plugin):
    logger = FakeLogger(plugin)
    logger.start()
    base = 1_800_000_000 * 10**9
    for i in range(10):
        logger.log(b"%d" % i, time_nano=base + i * 10**9)
    logger.stop()
    # 2027-01-15T08:00:03Z written in +01:00, as a dockerd in a non-UTC zone sends it
    got = read_logs(plugin, logger.container_id, Since="2027-01-15T09:00:03+01:00", Until="2027-01-15T08:00:05Z")
    assert [line for _, line in got] == [b"3\n", b"4\n", b"5\n"]


def test_follow_streams_new_lines_and_ends_after_stop(plugin):
    logger = FakeLogger(plugin)
    logger.start()
    logger.log(b"history")
    result: list = []

    def follow():
        result.extend(read_logs(plugin, logger.container_id, Follow=True))

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)
    for i in range(5):
        logger.log(b"live %d" % i)
    time.sleep(0.5)
    logger.stop()
    t.join(10)
    assert not t.is_alive(), "the follow stream did not end after StopLogging"
    assert [line for _, line in result] == [b"history\n"] + [b"live %d\n" % i for i in range(5)]


def test_a_low_soft_fd_limit_is_raised_so_many_containers_can_log(tmp_path):
    # A legacy plugin under systemd starts with a soft limit of 1024 (~120 containers): every StartLogging past
    # it failed with EMFILE. Here 64: the 14th container failed before.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip("needs a hard fd limit of at least 1024")
    plugin = PluginProcess(tmp_path)
    plugin.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))  # in the child only
    plugin.start()
    try:
        loggers = [FakeLogger(plugin) for _ in range(30)]
        assert [logger.start() for logger in loggers] == [{"Err": ""}] * 30
        for logger in loggers:
            logger.log(b"hello")
        assert wait_for(lambda: all(lines_of(plugin.log_file(lg.container_id)) == [b"hello\n"] for lg in loggers))
        for logger in loggers:
            logger.stop()
    finally:
        plugin.kill()
