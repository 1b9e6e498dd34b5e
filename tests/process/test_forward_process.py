"""The forward sink in a real logbridge process fed like dockerd feeds it (tests/plugin_harness.py), with
`python -m driver.receiver` (or a raw capturing server) as the aggregator: the FIFO's queued bytes while the
aggregator is hung, resends after a receiver or plugin kill (bounded by the window), SIGTERM while the aggregator
is down, gzip on the wire. Fast: no dockerd."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
import threading
import time

import pytest

from driver.frames import encode_entry
from driver.outputs.forward import codec
from driver.outputs.forward.sink import BATCH_BYTES, PROBE_BYTES, WINDOW
from tests.plugin_harness import FakeLogger, wait_for
from tests.support.receiver import ReceiverProcess, free_port, numbers

F_GETPIPE_SZ = 1032
FAST = {"fluentd-retry-wait": "100ms"}


@pytest.fixture
def receivers(tmp_path):
    made: list[ReceiverProcess] = []

    def make(*args: str, port: int = 0, start: bool = True) -> ReceiverProcess:
        r = ReceiverProcess(tmp_path / f"receiver{len(made)}", *args, port=port)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        r.stop()


def queued(fd: int) -> int:
    """Bytes waiting in the pipe behind `fd` (FIONREAD reads the count, it takes nothing out)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def write_numbers(logger: FakeLogger, first: int, last: int, chunk: int = 500, pause: float = 0.0) -> None:
    """Lines first..last, several frames per write() as dockerd's copier does under load; `pause` seconds
    between writes."""
    for start in range(first, last + 1, chunk):
        if pause:
            time.sleep(pause)
        logger.write(
            b"".join(
                encode_entry(("stdout", time.time_ns(), b"%d" % i, False, False, "", 0))
                for i in range(start, min(start + chunk, last + 1))
            )
        )


def bound(line: bytes = b"1") -> int:
    """Records in the window (WINDOW batches of BATCH_BYTES of journal) of the shortest frames lines like ``line``
    write: the sink's duplicate bound. A kill early in a run of lines 1..n repeats batches of short lines (line 1000
    takes a byte less than line 10000, so a batch holds more of them)."""
    return WINDOW * (BATCH_BYTES // len(encode_entry(("stdout", time.time_ns(), line, False, False, "", 0))) + 1)


def counts(rcv: ReceiverProcess, n: int) -> dict:
    seen = numbers(rcv.logs())
    return {
        "sent": n,
        "received": sum(seen.values()),
        "unique": sum(1 for i in range(1, n + 1) if seen[i]),
        "duplicated": sum(c - 1 for c in seen.values() if c > 1),
    }


def test_hung_receiver_the_fifo_never_fills(plugin, receivers):
    rcv = receivers()
    logger = FakeLogger(plugin, config={"fluentd-address": rcv.address, **FAST})
    logger.start()
    capacity = fcntl.fcntl(logger.fd, F_GETPIPE_SZ)
    n = 200_000  # ~6 MB of frames: ~100 times the pipe's capacity
    rcv.pause()
    samples: list[int] = []
    done = threading.Event()
    # at most ~100,000 lines/s (dockerd's copier is slower): the pipe is then about the aggregator, not about
    # whether a busy CI machine can schedule the plugin as fast as a tight write loop fills 1 MiB
    writer = threading.Thread(target=lambda: (write_numbers(logger, 1, n, pause=0.005), done.set()), daemon=True)
    try:
        started = time.monotonic()
        writer.start()
        while not done.is_set() and time.monotonic() - started < 10:
            samples.append(queued(logger.fd))
            time.sleep(0.002)
        wrote_in = time.monotonic() - started
        assert done.is_set(), f"writing {n} lines did not finish in 10 s while the receiver was stopped"
        assert len(rcv.records()) == 0
    finally:
        rcv.resume()
    logger.stop()
    print(
        f"\n[hung receiver] {n} lines written in {wrote_in:.2f}s; FIFO queued max {max(samples)} of "
        f"{capacity} bytes over {len(samples)} samples"
    )
    assert max(samples) < capacity
    rcv.wait_numbers(n, timeout=60)
    c = counts(rcv, n)
    print(f"[hung receiver] {c}")
    assert c["unique"] == n and c["duplicated"] <= bound()


def test_receiver_killed_mid_batch_resends_at_most_the_window(plugin, receivers):
    rcv = receivers("--ack-delay", "0.3")
    logger = FakeLogger(plugin, config={"fluentd-address": rcv.address, **FAST})
    logger.start()
    n = 60_000
    write_numbers(logger, 1, n)
    logger.stop()
    assert wait_for(lambda: len(rcv.records()) > 0, timeout=20)
    rcv.kill()
    before = len(rcv.records())
    rcv.args = []
    rcv.start()
    rcv.wait_numbers(n, timeout=60)
    c = counts(rcv, n)
    print(f"\n[receiver SIGKILL] records before the kill {before}; {c}; bound {bound()}")
    assert before < n
    assert c["unique"] == n and c["duplicated"] <= bound()


def test_plugin_killed_while_forwarding_resends_at_most_the_window(plugin, receivers):
    rcv = receivers("--ack-delay", "0.2")
    logger = FakeLogger(plugin, config={"fluentd-address": rcv.address, **FAST})
    logger.start()
    n = 60_000
    write_numbers(logger, 1, n)
    assert wait_for(lambda: len(rcv.records()) > 0, timeout=20)
    plugin.kill()  # a crash: the journal and the saved cursor are all that is left
    before = len(rcv.records())
    plugin.start()
    logger.stop()
    rcv.wait_numbers(n, timeout=60)
    c = counts(rcv, n)
    print(f"\n[plugin SIGKILL] records before the kill {before}; {c}; bound {bound()}")
    assert before < n
    assert c["unique"] == n and c["duplicated"] <= bound()


def test_sigterm_with_aggregator_down_then_stopped_container_is_forwarded(plugin, receivers):
    port = free_port()
    stopped = FakeLogger(plugin, config={"fluentd-address": f"tcp://127.0.0.1:{port}", **FAST})
    stopped.start()
    running = FakeLogger(plugin, config={"fluentd-address": f"tcp://127.0.0.1:{port}", **FAST})
    running.start()
    n = 5000
    write_numbers(stopped, 1, n)
    stopped.stop()  # the container ended: EOF, json.log completes, forwarding still owes everything
    write_numbers(running, 1, n)
    assert wait_for(lambda: plugin.log_file(stopped.container_id).exists(), timeout=10)
    t0 = time.monotonic()
    assert plugin.terminate(timeout=15) == 0
    took = time.monotonic() - t0
    write_numbers(running, n + 1, 2 * n)  # dockerd keeps writing while the plugin is away
    rcv = receivers(port=port)
    plugin.start()
    running.stop()

    def per_container() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {stopped.container_id: [], running.container_id: []}
        for r in rcv.records():
            out[r["record"]["container_id"]].append(r["record"]["log"])
        return out

    assert wait_for(lambda: len(rcv.records()) >= 3 * n, timeout=60), per_container().keys()
    got = per_container()
    print(
        f"\n[SIGTERM, aggregator down] plugin exited in {took:.1f}s; stopped container "
        f"{len(got[stopped.container_id])}/{n}, running {len(got[running.container_id])}/{2 * n}"
    )
    assert numbers(got[stopped.container_id]) == {i: 1 for i in range(1, n + 1)}
    running_seen = numbers(got[running.container_id])
    assert all(running_seen[i] for i in range(1, 2 * n + 1))


class CapturingServer:
    """A bare forward server on a thread: records the request types it decoded and acks every chunk."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.kinds: list[str] = []
        self.records: list[dict] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            protocol = codec.ServerProtocol(strict=True)
            with conn, contextlib.suppress(ConnectionResetError):  # a peer that goes away ends its connection
                while data := conn.recv(65536):
                    for event in protocol.receive_data(data):
                        self.kinds.append(type(event).__name__)
                        self.records += [record for _, record in event.entries]
                        if event.chunk is not None:
                            conn.sendall(protocol.ack(event.chunk))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("compress", ["true", "false"])
def test_forward_compress_sends_gzip_packed_forward(plugin, compress):
    server = CapturingServer()
    try:
        logger = FakeLogger(
            plugin, config={"fluentd-address": f"tcp://127.0.0.1:{server.port}", "forward-compress": compress}
        )
        logger.start()
        write_numbers(logger, 1, 3000)
        logger.stop()
        assert wait_for(lambda: len(server.records) >= 3000, timeout=20)
        assert [r["log"] for r in server.records] == [str(i) for i in range(1, 3001)]
        want = "CompressedPackedForward" if compress == "true" else "PackedForward"
        assert set(server.kinds) == {want}
    finally:
        server.close()


def test_frames_longer_than_a_probe_batch_are_forwarded(plugin, receivers):
    """Until the aggregator first acknowledges, batches are small probes; a frame longer than a probe (dockerd
    never writes one, another client may) is still read whole and sent, before and after the first ack."""
    rcv = receivers()
    logger = FakeLogger(plugin, config={"fluentd-address": rcv.address, **FAST})
    logger.start()
    long_line = b"x" * (PROBE_BYTES + 1000)
    logger.write(encode_entry(("stdout", time.time_ns(), long_line, False, False, "", 0)))
    logger.log(b"after the long one")
    assert wait_for(lambda: len(rcv.records()) == 2, timeout=20)
    logger.write(encode_entry(("stdout", time.time_ns(), long_line, False, False, "", 0)))
    assert wait_for(lambda: len(rcv.records()) == 3, timeout=20)
    logger.stop()
    logs = [r["record"]["log"] for r in rcv.records()]
    assert logs == [long_line.decode(), "after the long one", long_line.decode()]


def test_a_frame_longer_than_every_batch_is_written_and_forwarded(plugin, receivers):
    """A frame over both consumers' batch sizes (json.log 256 KiB, forward 64 KiB) is read whole by each of them,
    and the lines after it follow without waiting for the container to stop."""
    rcv = receivers()
    logger = FakeLogger(plugin, config={"fluentd-address": rcv.address, **FAST})
    logger.start()
    logger.log(b"first")
    assert wait_for(lambda: len(rcv.records()) == 1, timeout=20)
    huge = b"h" * 300_000
    logger.write(encode_entry(("stdout", time.time_ns(), huge, False, False, "", 0)))
    logger.log(b"after the huge one")
    assert wait_for(lambda: len(rcv.records()) == 3, timeout=20)
    assert [r["record"]["log"] for r in rcv.records()] == ["first", huge.decode(), "after the huge one"]
    assert wait_for(lambda: plugin.log_file(logger.container_id).read_bytes().count(b"\n") == 3)
    logger.stop()
