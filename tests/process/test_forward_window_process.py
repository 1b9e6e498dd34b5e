"""issue 13.1 in a real logbridge process: forward's window of batches in flight when the aggregator acks batch
N+1 before batch N and the plugin is SIGKILLed meanwhile. The saved cursor (the file a restart reads) stays at
batch N's start, so after the restart batch N's lines go again and no line is lost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter

from driver.frames import encode_entry
from driver.outputs.forward import codec
from driver.outputs.forward.sink import BATCH_BYTES, WINDOW
from tests.plugin_harness import FakeLogger, wait_for
from tests.process.test_forward_process import FAST, bound

HELD = 2  # the first connection never acks its 2nd request (the first batch after the probe)
PAD = b"x" * 92
# 100-byte lines: a batch (BATCH_BYTES of journal, ~2,200 of them) is one forward frame of ~0.5 MB, under the
# 1 MB a frame may hold, so the server's requests are the sink's batches (short lines with record ids would
# make two frames of a batch).


def line(i: int) -> bytes:
    return b"%08d" % i + PAD


def number(record: dict) -> int:
    return int(record["log"][:8])


def write_lines(logger: FakeLogger, n: int, chunk: int = 500) -> None:
    for start in range(1, n + 1, chunk):
        logger.write(b"".join(encode_entry(("stdout", time.time_ns(), line(i), False, False, "", 0))
                              for i in range(start, min(start + chunk, n + 1))))


class HoldingServer:
    """A forward server on a thread. On its first connection it acks every request but the HELD-th, so the ones
    after it are acked before it; later connections (after a plugin restart) ack everything."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.first: list[list[dict]] = []  # the first connection's requests, each its records
        self.later: list[dict] = []  # every record of the later connections
        self.acked_after_held = 0  # acks the first connection sent for requests after the held one
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connections = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            connections += 1
            with conn:
                try:
                    self._converse(conn, first=connections == 1)
                except OSError:
                    pass  # the plugin was killed

    def _converse(self, conn: socket.socket, first: bool) -> None:
        protocol = codec.ServerProtocol(strict=True)
        while data := conn.recv(65536):
            for event in protocol.receive_data(data):
                records = [record for _, record in event.entries]
                with self.lock:
                    if first:
                        self.first.append(records)
                    else:
                        self.later += records
                if first and len(self.first) == HELD:
                    continue  # batch N: never acknowledged
                conn.sendall(protocol.ack(event.chunk))
                if first and len(self.first) > HELD:
                    with self.lock:
                        self.acked_after_held += 1

    def close(self) -> None:
        self.sock.close()


def offset(record: dict) -> int:
    """The journal offset of the record's frame, from its forward-record-id."""
    return int(record["record_id"].rsplit("-", 1)[1], 16)


def saved_pos(plugin, container_id: str) -> int:
    path = plugin.state_dir / "containers" / container_id / "cursors" / "forward.json"
    return json.loads(path.read_bytes())["pos"]


def test_ack_of_batch_n_plus_1_before_n_then_sigkill_resends_batch_n(plugin):
    server = HoldingServer()
    try:
        logger = FakeLogger(plugin, config={"fluentd-address": f"tcp://127.0.0.1:{server.port}",
                                            "forward-record-id": "true", **FAST})
        logger.start()
        n = 30_000  # ~14 batches of journal: more than the window after the held one
        write_lines(logger, n)
        # The window: batch N unacked, the WINDOW - 1 batches after it sent and acked.
        assert wait_for(lambda: server.acked_after_held >= WINDOW - 1, timeout=30), len(server.first)
        with server.lock:
            held = server.first[HELD - 1]
        held_start = offset(held[0])
        # Batch 1's ack is saved, and the cursor stops at batch N though the batches after it are acked.
        assert wait_for(lambda: saved_pos(plugin, logger.container_id) == held_start, timeout=10)
        plugin.kill()
        with server.lock:
            sent_first = len(server.first)
        assert saved_pos(plugin, logger.container_id) == held_start  # what the restart reads
        assert sent_first == HELD + WINDOW - 1  # no batch beyond the window went while N waited
        with server.lock:
            furthest = max(offset(request[-1]) for request in server.first)
        assert furthest < held_start + WINDOW * BATCH_BYTES  # nor any frame of one
        plugin.start()
        logger.stop()

        def every_line() -> Counter | None:
            with server.lock:
                seen = Counter(number(r) for r in [r for request in server.first for r in request] + server.later)
            return seen if all(seen[i] for i in range(1, n + 1)) else None

        seen = wait_for(every_line, timeout=60)
        assert seen, "lines missing after the restart"
        with server.lock:
            again = Counter(number(r) for r in server.later)
        assert all(again[number(r)] for r in held)  # batch N went again
        assert min(offset(r) for r in server.later) == held_start  # from batch N's start, nothing before
        duplicated = sum(c - 1 for c in seen.values())
        print(f"\n[window, ack N+1 before N, SIGKILL] held batch {len(held)} lines at offset {held_start}; "
              f"{sent_first} requests before the kill; {duplicated} lines twice (bound {bound(line(1))})")
        assert duplicated <= bound(line(1))
    finally:
        server.close()
