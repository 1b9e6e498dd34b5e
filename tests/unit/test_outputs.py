"""Outputs as plug-ins: an output defined outside driver/ (tests/support/file_output.py) is turned on by its own
log-opt and runs beside forward, each with its own cursor, backlog and failures: a dead forward destination never
delays it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from driver import outputs
from driver.frames import encode_entry
from driver.info import LogInfo
from driver.options import TEXT, Option, OptionError, markdown_table, option_table, parse_options
from driver.outputs.forward import output as forward_output
from driver.pipeline import Pipeline
from driver.settings import Settings
from tests.plugin_harness import info_for
from tests.support import file_output

LINES = 5000  # several batches of every consumer


@pytest.fixture
def testfile_output():
    outputs.register(file_output.OUTPUT)
    yield file_output.OUTPUT
    outputs.unregister(file_output.NAME)


def test_forward_is_a_builtin_output_and_its_rows_are_in_the_one_table():
    assert forward_output.OUTPUT in outputs.available()
    names = [o.name for o in option_table()]
    assert "max-size" in names and "fluentd-address" in names and "forward-compress" in names
    assert len(names) == len(set(names))
    assert "`fluentd-address`" in markdown_table()
    assert [o.name for o in outputs.turned_on(parse_options({"fluentd-address": "tcp://h:1"}))] == ["forward"]
    assert outputs.turned_on(parse_options({})) == ()


def test_forward_checks_its_own_option_combinations():
    with pytest.raises(OptionError, match="fluentd-async and fluentd-async-connect conflict"):
        parse_options({"fluentd-async": "true", "fluentd-async-connect": "true"})


def test_an_output_option_is_unknown_until_its_output_is_registered(testfile_output):
    outputs.unregister(file_output.NAME)
    with pytest.raises(OptionError, match="unknown log-opt 'testfile-path'"):
        parse_options({"testfile-path": "/tmp/x"})
    outputs.register(file_output.OUTPUT)
    opts = parse_options({"testfile-path": "/tmp/x", "fluentd-address": "tcp://h:1"})
    assert [o.name for o in outputs.turned_on(opts)] == ["forward", "testfile"]
    assert "`testfile-path`" in markdown_table()


def test_an_output_cannot_take_a_name_or_an_option_already_declared(testfile_output):
    with pytest.raises(ValueError, match="registered already"):
        outputs.register(file_output.OUTPUT)
    clash = outputs.Output("other", forward_output.OUTPUT.options[:1], lambda o: False, lambda c, s: None)
    with pytest.raises(ValueError, match="'fluentd-address' is declared already"):
        outputs.register(clash)
    with pytest.raises(ValueError, match="cannot load an output from 'tests.support.nothing_here'"):
        outputs.load(["tests.support.nothing_here"])


def test_a_shared_resource_is_made_once_per_process_and_closed_at_shutdown():
    class Pool:
        made = closed = 0

        def __init__(self) -> None:
            Pool.made += 1

        async def aclose(self) -> None:
            Pool.closed += 1

    pooled = outputs.Output("pooled", (Option("pooled-url", TEXT, None, "test only", "pooled"),),
                            turned_on=lambda opts: bool(opts["pooled-url"]), build=lambda c, shared: shared,
                            make_shared=Pool)
    outputs.register(pooled)
    try:
        shared = outputs.Shared()
        built = [outputs.build(outputs.Container(LogInfo.from_json(info_for(cid * 64, config)), parse_options(config),
                                                 None, None, ""), shared)
                 for cid, config in (("a", {"pooled-url": "x"}), ("b", {"pooled-url": "x"}), ("c", {}))]
        assert built[2] == [] and built[0][0] is built[1][0] and Pool.made == 1
        asyncio.run(shared.aclose())
        assert Pool.closed == 1
    finally:
        outputs.unregister("pooled")


def _refusing_address() -> tuple[str, None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}", None  # closed again: connections are refused


def _hanging_address() -> tuple[str, socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)  # the kernel completes the handshake; nobody ever reads or acknowledges
    return f"tcp://127.0.0.1:{s.getsockname()[1]}", s


async def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize("dead", [_refusing_address, _hanging_address], ids=["refused", "hanging"])
def test_test_output_gets_every_line_while_forward_is_dead(tmp_path, testfile_output, dead):
    address, keep = dead()
    delivered = tmp_path / "delivered.jsonl"
    settings = Settings(log_root=str(tmp_path / "logs"), state_dir=str(tmp_path / "state"))
    info = LogInfo.from_json(info_for("c" * 64, {"fluentd-address": address, "fluentd-retry-wait": "50ms",
                                                 "testfile-path": str(delivered)}))
    opts = parse_options(info.config)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # as dockerd holds it

    async def run() -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=2)
        pipeline = Pipeline(info, opts, settings, executor, loop, on_finished=lambda p: None)
        forward, testfile = pipeline.outputs
        assert (forward.name, testfile.name) == ("forward", "testfile")
        pipeline.attach(fifo)
        for i in range(LINES):
            os.write(writer, encode_entry(("stdout", 1_700_000_000_000_000_000 + i, b"line %d" % i, False, False,
                                           "", 0)))
        try:
            assert await _wait(lambda: len(file_output.read_lines(delivered)) >= LINES)
            assert await _wait(lambda: testfile.caught_up() and pipeline.jsonlog.caught_up())
            # Forward has its own cursor and backlog: nothing of it was acknowledged, all of it is still owed.
            assert forward.stats.acked == 0 and not forward.up
            assert forward.saved_pos == pipeline.journal.start < testfile.saved_pos == pipeline.journal.end
        finally:
            await pipeline.close(grace=0.2)
            executor.shutdown(wait=True)

    try:
        asyncio.run(run())
    finally:
        os.close(writer)
        if keep is not None:
            keep.close()
    assert file_output.read_lines(delivered) == [f"line {i}" for i in range(LINES)]
    cursors = tmp_path / "state" / "containers" / ("c" * 64) / "cursors"
    assert {p.name for p in cursors.iterdir()} >= {"jsonlog.json", "forward.json", "testfile.json"}


def test_loki_output_gets_every_line_beside_a_dead_forward(tmp_path):
    """Loki is a built-in output: turned on by loki-url alone, its own cursor, undelayed by a dead forward."""
    from tests.support.loki import LokiReceiver

    address, _ = _refusing_address()
    settings = Settings(log_root=str(tmp_path / "logs"), state_dir=str(tmp_path / "state"))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    now = time.time_ns()

    async def run() -> dict:
        receiver = LokiReceiver()
        url = await receiver.start()
        info = LogInfo.from_json(info_for("d" * 64, {"fluentd-address": address, "fluentd-retry-wait": "50ms",
                                                     "loki-url": url, "loki-batch-wait": "100ms"}))
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=2)
        pipeline = Pipeline(info, parse_options(info.config), settings, executor, loop, on_finished=lambda p: None)
        forward, loki = pipeline.outputs
        assert (forward.name, loki.name) == ("forward", "loki")
        pipeline.attach(fifo)
        for i in range(LINES):
            os.write(writer, encode_entry(("stdout", now + i, b"line %d" % i, False, False, "", 0)))
        try:
            assert await _wait(lambda: receiver.count() >= LINES)
            assert await _wait(lambda: loki.saved_pos == pipeline.journal.end)
            assert forward.stats.acked == 0 and not forward.up
            assert loki.up and loki.saved["acked"] == LINES
            return receiver.streams()
        finally:
            await pipeline.close(grace=0.2)
            executor.shutdown(wait=True)
            await receiver.stop()

    try:
        streams = asyncio.run(run())
    finally:
        os.close(writer)
    (labels, stream), = streams.items()
    assert [line for _, line, _ in stream.entries] == [b"line %d" % i for i in range(LINES)]
    names = dict(labels) if not isinstance(labels, str) else labels
    assert "container_name" in str(names) and "source" in str(names)


def test_a_delivered_row_still_being_written_is_not_read_yet(tmp_path):
    # the test output's thread writes while the tests poll: a torn last row failed a test under load (JSONDecodeError)
    delivered = tmp_path / "delivered.jsonl"
    delivered.write_text('{"source": "stdout", "line": "line 69"}\n{"source": "stdout", "line": "line 70", "parti')
    assert file_output.read_lines(delivered) == ["line 69"]
