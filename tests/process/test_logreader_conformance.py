"""moby's LogReader conformance suite, as far as it can pass through dockerd's plugin adapter.

moby's `daemon/logger/loggertest/logreader.go` (the suite json-file and local pass) is replayed here against a real
logbridge process, fed through a FIFO like dockerd feeds it and read with `/LogDriver.ReadLogs` like dockerd's
`pluginAdapterWithRead` reads it. The suite's cases and what the adapter changes about them:

* the adapter keeps only source, timestamp and line of each entry (partial metadata and attrs are dropped), so the
  suite's `PLogMetaData` comparison, which the suite itself ignores, has nothing to compare; a partial chunk's
  missing `\\n` does survive and is checked;
* the adapter skips *every* entry before `Since` and stops at the first entry after `Until`. json-file stops
  checking `Since` after the first entry that passes it, so the suite's Since cases expect the last message
  ("someone adjusted the clock", 90 minutes in the past, written last) to come back; through the adapter it never
  reaches the client, whatever the plugin sends. Those cases are checked for what `docker logs` shows: the
  expectation with the adapter's filter applied (`through_adapter`), and the plugin's own stream is checked too;
* `Tail` and `Follow` are the plugin's alone: checked as the suite states them, with one exception: the adapter
  calls the plugin's ReadLogs from a goroutine, after `ReadLogs` returned, so lines logged "after ReadLogs" may
  already be history when the plugin starts reading (json-file fixes its starting point before returning). Follow
  with Tail=0 or Tail=N is checked as a consistent cut (`assert_consistent_cut`): the tail of the log at some
  moment, then every later line once;
* the suite's `testTailEmptyLogs` passes `ReadConfig{}` whatever its table says (a slip in the suite); here each
  row's config is really sent;
* `docker logs` on a stopped container creates a logger (StartLogging on a new FIFO), reads without Follow
  (dockerd turns Follow off for a logger it created) and closes it: that is the suite's "Stopped" reading;
* the suite's `Concurrent` logs from two goroutines; the adapter serialises `Log` under a mutex, so the FIFO sees
  whole frames from either source in some interleaving: the writers here share a lock the same way.

Added cases the suite leaves to each driver: follow across rotation (with and without compression), the stream
ending when the container's logger closes, many readers and writers at once, a reader that goes away, reads after
a plugin restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from driver.frames import FrameDecoder, encode_entry
from tests.plugin_harness import FakeLogger, PluginProcess, info_for, wait_for

MS = 10**6
MINUTE = 60 * 10**9
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
STREAM_END = 15.0  # seconds a stream may take to end once it should (moby's readMessage allows 5 per message)


# ---------------------------------------------------------------------------------------------------------
# the suite's messages


@dataclass(frozen=True)
class Msg:
    source: str
    time_nano: int
    line: bytes
    partial: tuple[str, int, bool] | None = None  # (id, ordinal, last): PLogMetaData

    def frame(self) -> bytes:
        pid, ordinal, last = self.partial or ("", 0, False)
        return encode_entry((self.source, self.time_nano, self.line, self.partial is not None, last, pid, ordinal))

    def expected(self) -> tuple[str, bytes, int]:
        """What a reader gets back (transformToExpected): `\\n` added unless a partial chunk that is not the last."""
        newline = self.partial is None or self.partial[2]
        return self.source, self.line + (b"\n" if newline else b""), self.time_nano


def test_messages() -> list[Msg]:
    """makeTestMessages: times relative to now (with a sub-millisecond part, so Truncate(ms) matters)."""
    now = time.time_ns() // MS * MS + 123_456
    return [
        Msg("stdout", now - 30 * MINUTE, b"a message"),
        Msg("stdout", now - 20 * MINUTE, b"another message", ("aaaaaaaa", 1, True)),
        Msg("stderr", now - 15 * MINUTE, b"to be...", ("bbbbbbbb", 1, False)),
        Msg("stderr", now - 15 * MINUTE, b"continued", ("bbbbbbbb", 2, True)),
        Msg("stderr", now - 10 * MINUTE, b"a really long message " + b"a" * 4096),
        Msg("stderr", now - 10 * MINUTE, b"just one more message"),
        Msg("stdout", now - 90 * MINUTE, b"someone adjusted the clock"),
    ]


test_messages.__test__ = False  # a factory, not a test


def expected(msgs: list[Msg]) -> list[tuple[str, bytes, int]]:
    return [m.expected() for m in msgs]


def truncate_ms(ns: int) -> int:
    return ns // MS * MS


def go_time(ns: int | None, offset_minutes: int = 0) -> str:
    """A Go time.Time as JSON (RFC3339Nano), in a zone `offset_minutes` east of UTC as a non-UTC dockerd sends it."""
    if ns is None:
        return GO_ZERO_TIME
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    t = dt.datetime.fromtimestamp(ns // 10**9, zone)
    frac = f"{ns % 10**9:09d}".rstrip("0")
    zone_text = "Z" if offset_minutes == 0 else t.strftime("%z")[:3] + ":" + t.strftime("%z")[3:]
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ("." + frac if frac else "") + zone_text


def through_adapter(entries: list[tuple[str, bytes, int]], since: int | None, until: int | None) -> list:
    """pluginAdapterWithRead's own filter: skip every entry before Since, end at the first after Until."""
    out = []
    for e in entries:
        if since is not None and e[2] < since:
            continue
        if until is not None and e[2] > until:
            break
        out.append(e)
    return out


# ---------------------------------------------------------------------------------------------------------
# the plugin, loggers and readers


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    p = PluginProcess(tmp_path_factory.mktemp("conformance")).start()
    yield p
    if p.proc and p.proc.poll() is None:
        p.kill()


class Logger(FakeLogger):
    """A dockerd logger instance; `Log` is serialised as the adapter's mutex serialises it."""

    def __init__(self, plugin: PluginProcess, container_id: str | None = None, config: dict | None = None) -> None:
        super().__init__(plugin, container_id, config)
        self.lock = threading.Lock()

    def log_messages(self, msgs: list[Msg]) -> list[tuple[str, bytes, int]]:
        for m in msgs:
            with self.lock:
                self.write(m.frame())
        return expected(msgs)

    def log_numbers(self, start: int, stop: int, source: str = "stdout", pad: int = 0) -> None:
        base = time.time_ns()
        for i in range(start, stop):
            frame = encode_entry((source, base + i, b"%d" % i + b" " * pad, False, False, "", 0))
            with self.lock:
                self.write(frame)


class Stream:
    """One `/LogDriver.ReadLogs` call as dockerd makes it, decoded while it arrives (in a thread).

    The constructor returns once the plugin sent the response headers: the read has begun, as ReadLogs having
    returned its watcher has in the suite."""

    def __init__(self, plugin: PluginProcess, container_id: str, *, tail: int = -1, follow: bool = False,
                 since: str = GO_ZERO_TIME, until: str = GO_ZERO_TIME, config: dict | None = None) -> None:
        # dockerd sends the container's Info, log-opts included (they say whether rotated files are compressed)
        body = {"Info": info_for(container_id, config),
                "Config": {"Since": since, "Until": until, "Tail": tail, "Follow": follow}}
        self.entries: list[tuple[str, bytes, int]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.garbage = 0
        self.response = plugin.session.post(plugin.url("/LogDriver.ReadLogs"), data=json.dumps(body).encode(),
                                            stream=True, timeout=(10, 60))
        self.response.raise_for_status()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder, buf = FrameDecoder(), b""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buf += chunk
                decoded, used = decoder.decode(buf)
                buf = buf[used:]
                self.entries += [(e[0], e[2], e[1]) for e in decoded]
            self.garbage = len(buf) + decoder.skipped_bytes
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ended.set()

    def wait(self, timeout: float = STREAM_END) -> list[tuple[str, bytes, int]]:
        """The whole stream; fails unless it ends within `timeout` seconds, cleanly."""
        assert self.ended.wait(timeout), f"the stream did not end within {timeout} s ({len(self.entries)} entries)"
        assert self.error is None, f"the stream failed: {self.error!r}"
        assert self.garbage == 0, "the stream held bytes that are no frames"
        return self.entries

    def close(self) -> None:
        """The consumer goes away: dockerd closes the response body, which closes the connection. (A shutdown
        first: a plain close() from here would leave the socket open while the reading thread waits on it.)"""
        conn = getattr(self.response.raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


def read(plugin: PluginProcess, container_id: str, **kw) -> list[tuple[str, bytes, int]]:
    return Stream(plugin, container_id, **kw).wait()


def read_stopped(plugin: PluginProcess, container_id: str, **kw) -> list[tuple[str, bytes, int]]:
    """`docker logs` on a stopped container: dockerd makes a logger (a new FIFO) around a non-follow read."""
    probe = Logger(plugin, container_id, kw.get("config"))
    probe.start()
    try:
        return read(plugin, container_id, **{**kw, "follow": False})
    finally:
        probe.stop()


def new_id() -> str:
    return secrets.token_hex(32)


# ---------------------------------------------------------------------------------------------------------
# TestTail: Live, Stopped (and the same after a plugin restart)


TAIL_CASES = ["Exact", "LessThanAvailable", "MoreThanAvailable", "All", "Since", "MoreThanSince", "LessThanSince",
              "Until", "SinceAndUntil"]


def tail_case(case: str, mm: list[Msg]) -> tuple[dict, list, int | None, int | None]:
    """(ReadLogs arguments, what the suite expects, since, until) for one of testTail's subtests."""
    exp = expected(mm)
    since1 = truncate_ms(mm[1].time_nano)
    return {
        "Exact": ({"tail": len(mm)}, exp, None, None),
        "LessThanAvailable": ({"tail": 2}, exp[-2:], None, None),
        "MoreThanAvailable": ({"tail": 100}, exp, None, None),
        "All": ({"tail": -1}, exp, None, None),
        "Since": ({"tail": -1}, exp[1:], since1, None),
        "MoreThanSince": ({"tail": len(mm)}, exp[1:], since1, None),
        "LessThanSince": ({"tail": len(mm) - 2}, exp[2:], since1, None),
        "Until": ({"tail": -1}, exp[:2], None, mm[2].time_nano - MS),
        "SinceAndUntil": ({"tail": -1}, exp[1:2], since1, mm[1].time_nano + MS),
    }[case]


@pytest.fixture(scope="module")
def tail_logs(plugin):
    """One container per mode, holding the suite's messages: live (logger open), stopped, stopped + plugin restart."""
    logs = {}
    for mode in ("live", "stopped", "restarted"):
        logger = Logger(plugin)
        logger.start()
        mm = test_messages()
        logger.log_messages(mm)
        logs[mode] = (logger, mm)
        if mode != "live":
            logger.stop()
    yield logs
    logs["live"][0].stop()


def _tail_read(plugin, mode: str, container_id: str, **kw):
    return read(plugin, container_id, **kw) if mode == "live" else read_stopped(plugin, container_id, **kw)


@pytest.mark.parametrize("case", TAIL_CASES)
@pytest.mark.parametrize("mode", ["live", "stopped"])
def test_tail(plugin, tail_logs, mode, case):
    logger, mm = tail_logs[mode]
    kw, suite_expects, since, until = tail_case(case, mm)
    # Since and Until in a non-UTC zone, as a dockerd with TZ set sends them
    got = _tail_read(plugin, mode, logger.container_id, since=go_time(since, 120), until=go_time(until, -330), **kw)
    # What `docker logs` shows is what the adapter lets through; the plugin already sends exactly that.
    assert through_adapter(got, since, until) == through_adapter(suite_expects, since, until)
    assert got == through_adapter(suite_expects, since, until)
    if since is None:
        assert got == suite_expects  # the suite's own expectation, untouched by the adapter


def test_tail_after_plugin_restart(plugin, tail_logs):
    """Reads of a stopped container after the plugin was killed and started again (the suite's Stopped, plus a
    restart that dockerd never tells the plugin about)."""
    logger, mm = tail_logs["restarted"]
    plugin.kill()
    plugin.start()
    for case in TAIL_CASES:
        kw, suite_expects, since, until = tail_case(case, mm)
        got = read_stopped(plugin, logger.container_id, since=go_time(since), until=go_time(until), **kw)
        assert got == through_adapter(suite_expects, since, until), case


def test_live_read_sees_every_line_already_written(plugin):
    """The suite's Live reads come right after `Log` returned, with no Sync for the plugin adapter: a line in the
    FIFO when ReadLogs arrives must be read."""
    for round_ in range(20):
        logger = Logger(plugin)
        logger.start()
        try:
            exp = logger.log_messages(test_messages())
            assert read(plugin, logger.container_id, tail=-1) == exp, f"round {round_}"
        finally:
            logger.stop()


EMPTY_CASES = {
    "Zero": {"tail": 0},  # ReadConfig{}: Tail 0, no times
    "All": {"tail": -1},
    "Tail": {"tail": 42},
    "Since": {"tail": -1, "since": go_time(10**9)},
    "Until": {"tail": -1, "until": go_time(int(dt.datetime(2100, 1, 1, 1, 1, 1).timestamp()) * 10**9)},
    "SinceAndUntil": {"tail": -1, "since": go_time(10**9),
                      "until": go_time(int(dt.datetime(2100, 1, 1, 1, 1, 1).timestamp()) * 10**9)},
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
@pytest.mark.parametrize("mode", ["live", "stopped"])
def test_tail_empty_logs(plugin, mode, case):
    logger = Logger(plugin)
    logger.start()
    try:
        if mode == "live":
            assert read(plugin, logger.container_id, **EMPTY_CASES[case]) == []
        else:
            logger.stop()
            assert read_stopped(plugin, logger.container_id, **EMPTY_CASES[case]) == []
    finally:
        if logger.fd >= 0:
            logger.stop()


def test_read_of_a_container_never_logged(plugin):
    assert read(plugin, new_id(), tail=-1) == []
    assert read(plugin, new_id(), tail=-1, follow=True) == []  # no logger: nothing to follow, the stream ends


# ---------------------------------------------------------------------------------------------------------
# TestFollow


def _follow_to_close(plugin, logger: Logger, stream: Stream, msgs: list[Msg]) -> list:
    """Log `msgs` while `stream` follows, see them arrive live, close the logger: the stream must end."""
    exp = logger.log_messages(msgs)
    assert wait_for(lambda: stream.entries[-1:] == exp[-1:], timeout=10), "followed lines did not arrive live"
    assert not stream.ended.is_set(), "the follow stream ended while the logger was open"
    logger.stop()
    return stream.wait()


def assert_consistent_cut(got: list, before: list, after: list, tail: int) -> None:
    """`got` is the tail of what was stored at some moment, then everything logged later, each once, in order.

    The adapter calls ReadLogs in a goroutine: unlike json-file, whose ReadLogs fixes its starting point before
    returning, a plugin's read starts some time after `ReadLogs` returned, so lines logged "after" it may be
    history already. The suite's split (`after` all new) is the case where none was."""
    for j in range(len(after) + 1):
        stored = before + after[:j]
        history = stored if tail < 0 else stored[-tail:] if tail > 0 else []
        if got == history + after[j:]:
            return
    pytest.fail(f"not the tail of a moment's log followed by the rest: {got!r}")


@pytest.mark.parametrize("tail", [-1, 0, 1, 42])
def test_follow_from_empty_log(plugin, tail):
    logger = Logger(plugin)
    logger.start()
    stream = Stream(plugin, logger.container_id, tail=tail, follow=True)
    mm = test_messages()
    got = _follow_to_close(plugin, logger, stream, mm)
    assert_consistent_cut(got, [], expected(mm), tail)
    if tail < 0 or tail >= len(mm):
        assert got == expected(mm)


def test_follow_attach_mid_stream(plugin):
    logger = Logger(plugin)
    logger.start()
    mm = test_messages()
    exp = logger.log_messages(mm[:1])
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True)
    assert _follow_to_close(plugin, logger, stream, mm[1:]) == exp + expected(mm[1:])


def test_follow_since(plugin):
    logger = Logger(plugin)
    logger.start()
    mm = test_messages()
    since = truncate_ms(mm[2].time_nano)
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True, since=go_time(since, 60))
    exp = logger.log_messages(mm)[2:]  # the suite: mm[2:], the clock-adjusted last one included (json-file)
    assert wait_for(lambda: len(stream.entries) >= 4, timeout=10)
    logger.stop()
    got = stream.wait()
    assert got == through_adapter(exp, since, None) == exp[:-1]  # what `docker logs` can show


def test_follow_until_ends_before_the_logger_closes(plugin):
    logger = Logger(plugin)
    logger.start()
    mm = test_messages()
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True, until=go_time(mm[2].time_nano - MS))
    exp = logger.log_messages(mm)[:2]
    try:
        assert stream.wait() == exp  # ends at mm[2], the first entry after Until, with the logger still open
    finally:
        logger.stop()


def test_follow_since_and_until_ends_before_the_logger_closes(plugin):
    logger = Logger(plugin)
    logger.start()
    mm = test_messages()
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True,
                    since=go_time(mm[1].time_nano - MS, -120), until=go_time(mm[2].time_nano - MS, 120))
    exp = logger.log_messages(mm)[1:2]
    try:
        assert stream.wait() == exp
    finally:
        logger.stop()


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "unsynced"])
@pytest.mark.parametrize("tail", [0, 1])
def test_follow_tail(plugin, tail, sync):
    """Tail=0 and Tail>0 with history: two lines logged (and, as syncLogger does, seen stored, or not), then a
    follower with that tail, then the rest."""
    logger = Logger(plugin)
    logger.start()
    mm = test_messages()
    before = logger.log_messages(mm[:2])
    if sync:
        assert wait_for(lambda: len(read(plugin, logger.container_id)) == 2)
    stream = Stream(plugin, logger.container_id, tail=tail, follow=True)
    got = _follow_to_close(plugin, logger, stream, mm[2:])
    assert_consistent_cut(got, before, expected(mm[2:]), tail)


def test_follow_multiple_starts(plugin):
    """A container restarted: the second logger's follower reads the first one's lines, then its own, and ends
    when the second logger closes."""
    cid = new_id()
    mm = test_messages()
    first = Logger(plugin, cid)
    first.start()
    exp = first.log_messages(mm[:3])
    first.stop()
    second = Logger(plugin, cid)
    second.start()
    stream = Stream(plugin, cid, tail=-1, follow=True)
    assert _follow_to_close(plugin, second, stream, mm[3:]) == exp + expected(mm[3:])


def test_follow_concurrent_writers(plugin):
    """TestConcurrent: stdout and stderr logged from two threads (serialised per frame as the adapter does),
    followed from the start; every message once, each source in its own order."""
    logger = Logger(plugin)
    logger.start()
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True)
    mm = test_messages() * 50
    by_source = {s: [m for m in mm if m.source == s] for s in ("stdout", "stderr")}
    threads = [threading.Thread(target=logger.log_messages, args=(msgs,)) for msgs in by_source.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.stop()
    got = stream.wait()
    for source, msgs in by_source.items():
        assert [e for e in got if e[0] == source] == expected(msgs)
    assert len(got) == len(mm)


# ---------------------------------------------------------------------------------------------------------
# beyond the suite: rotation, the producer stopping, many readers, readers going away


def numbers(entries) -> list[int]:
    return [int(line) for _, line, _ in entries]


@pytest.mark.parametrize("config", [{"max-size": "2k", "max-file": "1000"},
                                    {"max-size": "2k", "max-file": "1000", "compress": "true"}],
                         ids=["plain", "compress"])
def test_follow_across_rotation(plugin, config):
    """Followed across hundreds of rotations (3 lines per file) while the writer runs flat out, with history from
    rotated (and compressed) files: the follower reads each line once and in order."""
    logger = Logger(plugin, config=config)
    logger.start()
    logger.log_numbers(0, 200, pad=600)
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True, config=config)
    for start in range(200, 1200, 20):
        logger.log_numbers(start, start + 20, pad=600)
    logger.stop()
    assert numbers(stream.wait(60)) == list(range(1200))
    assert numbers(read_stopped(plugin, logger.container_id, config=config)) == list(range(1200))


def test_follow_across_rotation_with_two_files(plugin):
    """max-file=2: a rotation unlinks the oldest file, so a follower must not fall more than one file behind; a
    writer paced at one rotation per look of the follower loses nothing."""
    config = {"max-size": "1k", "max-file": "2"}
    logger = Logger(plugin, config=config)
    logger.start()
    logger.log_numbers(0, 10, pad=600)
    stream = Stream(plugin, logger.container_id, tail=1, follow=True, config=config)
    assert wait_for(lambda: numbers(stream.entries) == [9], timeout=10)
    for start in range(10, 70, 2):  # 2 lines fill a file
        logger.log_numbers(start, start + 2, pad=600)
        assert wait_for(lambda s=start: numbers(stream.entries)[-1:] == [s + 1], timeout=10), numbers(stream.entries)
    logger.stop()
    assert numbers(stream.wait()) == list(range(9, 70))


def test_follow_ends_when_the_producer_stops(plugin):
    """An idle follower (nothing new for a while) ends once the container's logger closes, promptly."""
    logger = Logger(plugin)
    logger.start()
    logger.log_numbers(0, 3)
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True)
    assert wait_for(lambda: len(stream.entries) == 3)
    time.sleep(1.0)
    assert not stream.ended.is_set()
    t0 = time.monotonic()
    logger.stop()
    assert numbers(stream.wait()) == [0, 1, 2]
    assert time.monotonic() - t0 < 5


def test_follow_ends_when_the_fifo_ends_without_stop_logging(plugin):
    """live-restore: dockerd's old FIFO reaches EOF with no StopLogging; the container's logger is gone."""
    logger = Logger(plugin)
    logger.start()
    logger.log_numbers(0, 5)
    stream = Stream(plugin, logger.container_id, tail=-1, follow=True)
    assert wait_for(lambda: len(stream.entries) == 5)
    logger.close()  # dockerd's end closes: EOF
    assert numbers(stream.wait()) == list(range(5))


def test_concurrent_readers_and_writers(plugin):
    """Three containers written at once (two writer threads each), rotating; per container four followers
    started at different moments and non-follow reads all along: every follower sees each line once, in order;
    every non-follow read is a gap-free, duplicate-free prefix of the log."""
    n = 3000
    config = {"max-size": "20k", "max-file": "1000"}
    loggers = [Logger(plugin, config=config) for _ in range(3)]
    for lg in loggers:
        lg.start()
    followers: dict[str, list[Stream]] = {lg.container_id: [] for lg in loggers}
    snapshots: list[tuple[str, list]] = []
    failures: list[BaseException] = []

    def write(lg: Logger, source: str) -> None:
        try:
            base = time.time_ns()
            for i in range(n):
                frame = encode_entry((source, base + i, b"%s %d" % (source.encode(), i), False, False, "", 0))
                with lg.lock:
                    lg.write(frame)
                if i % 500 == 0:
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(lg, s)) for lg in loggers for s in ("stdout", "stderr")]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 3
    k = 0
    while any(w.is_alive() for w in writers) or time.monotonic() < deadline:
        lg = loggers[k % 3]
        if len(followers[lg.container_id]) < 4:
            followers[lg.container_id].append(Stream(plugin, lg.container_id, tail=-1, follow=True, config=config))
        snapshots.append((lg.container_id, read(plugin, lg.container_id, tail=-1, config=config)))
        k += 1
        if not any(w.is_alive() for w in writers):
            break
    for w in writers:
        w.join()
    assert not failures
    for lg in loggers:
        lg.stop()
    for streams in followers.values():
        for stream in streams:
            got = stream.wait(30)
            for source in ("stdout", "stderr"):
                assert [line for s, line, _ in got if s == source] == [b"%s %d\n" % (source.encode(), i)
                                                                        for i in range(n)]
    for _cid, snap in snapshots:
        for source in ("stdout", "stderr"):
            lines = [line for s, line, _ in snap if s == source]
            assert lines == [b"%s %d\n" % (source.encode(), i) for i in range(len(lines))]


def _open_log_fds(plugin: PluginProcess, container_id: str) -> int:
    fd_dir = f"/proc/{plugin.proc.pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            if container_id in os.readlink(os.path.join(fd_dir, fd)) and "-json.log" in os.readlink(
                    os.path.join(fd_dir, fd)):
                count += 1
        except FileNotFoundError:
            continue
    return count


def test_reader_goes_away(plugin):
    """ConsumerGone: a follower whose client disconnects is dropped (its file descriptors too), whether the log is
    idle or busy; other followers and the logger carry on."""
    logger = Logger(plugin)
    logger.start()
    logger.log_numbers(0, 10)
    staying = Stream(plugin, logger.container_id, tail=-1, follow=True)
    idle_leaver = Stream(plugin, logger.container_id, tail=-1, follow=True)
    busy_leaver = Stream(plugin, logger.container_id, tail=-1, follow=True)
    assert wait_for(lambda: len(idle_leaver.entries) == 10 and len(busy_leaver.entries) == 10)
    assert wait_for(lambda: _open_log_fds(plugin, logger.container_id) >= 3 + 1)  # 3 followers + the writer
    idle_leaver.close()  # nothing is written meanwhile: found by the periodic check
    assert wait_for(lambda: _open_log_fds(plugin, logger.container_id) == 2 + 1, timeout=10), \
        "the plugin kept following for a client that went away (idle log)"
    busy_leaver.close()
    logger.log_numbers(10, 2000)  # found at the next write at the latest
    assert wait_for(lambda: _open_log_fds(plugin, logger.container_id) == 1 + 1, timeout=10), \
        "the plugin kept following for a client that went away (busy log)"
    logger.stop()
    assert numbers(staying.wait()) == list(range(2000))
    assert wait_for(lambda: _open_log_fds(plugin, logger.container_id) == 0)
    assert numbers(read_stopped(plugin, logger.container_id)) == list(range(2000))


def test_since_with_the_clock_set_back_at_the_end_of_a_rotated_file(plugin):
    """The suite's "someone adjusted the clock" message, at the end of a rotated file instead of the current one."""
    config = {"max-size": "1k", "max-file": "5"}
    logger = Logger(plugin, config=config)
    logger.start()
    now = time.time_ns()
    pad = b" " * 300
    msgs = [Msg("stdout", now, b"new 0" + pad), Msg("stdout", now + 1, b"new 1" + pad),
            Msg("stdout", now - 90 * MINUTE, b"someone adjusted the clock" + pad),  # last line of json.log.1
            Msg("stdout", now + 2, b"new 2" + pad)]
    exp = logger.log_messages(msgs)
    logger.stop()
    assert wait_for(lambda: len(read_stopped(plugin, logger.container_id, config=config)) == 4)
    assert os.path.exists(str(plugin.log_file(logger.container_id)) + ".1")
    since = now - 10 * MINUTE
    got = read_stopped(plugin, logger.container_id, since=go_time(since), config=config)
    assert got == through_adapter(exp, since, None)
