"""A short smoke of `make bench BENCH_SCALE=...` (bench/scale.py): 20 containers released at once on the real
dockerd, forward on; every line stored in json.log and acked by the receiver."""

from __future__ import annotations

from bench.run import Bench, ReceiverProc
from bench.scale import ScaleRun

CONTAINERS, RATE, SECONDS = 20, 10, 3


def test_twenty_containers_at_once_store_and_ack_every_line(dockerd, bb_image, legacy_plugin, tmp_path):
    plugin = legacy_plugin()
    receiver = ReceiverProc()
    try:
        bench = Bench(dockerd, bb_image, plugin, receiver, timeout=60)
        rec = ScaleRun(bench, tmp_path, RATE, SECONDS).run("logbridge+forward", CONTAINERS, timeout=60)
    finally:
        receiver.stop()
    expected = CONTAINERS * RATE * SECONDS
    assert (rec["entries"], rec["stored_entries"], rec["received_records"], rec["lost"]) == (
        expected, expected, expected, 0)
    assert rec["exit_s"] is not None  # every container ran to its end
    assert rec["plugin_fds"] >= CONTAINERS * 4  # FIFO, journal segment, json.log, cursors: each one's held
