"""`python -m bench.forward_pipeline`: the forward output's CPU per line without dockerd.

N short frames (as dockerd writes them) go into a real Journal in a temp dir, and one or more containers'
ForwardSinks, built by the output's own `build_sink` from the default log-opts (acks on, one connection per
container), drain them to the count-only forward receiver `bench.receiver`, started as a child process so its CPU is
not counted. Two ways to fill the journal:

  --rate 0     all frames are there before the sinks start (full 64 KiB batches)
  --rate N     a live container: frames arrive in --chunk byte writes (dockerd's FIFO is 64 KiB) paced at N lines/s,
               and each write pokes the sinks as Pipeline.poke does, so a sink takes whatever arrived since its
               last batch, as it does on the real path

Reported: this process's CPU-s per million lines (`time.process_time()`, loop and worker threads, the writes into
the journal left out), the loop thread's share, the sink batches and forward frames the lines made, and the records
the receiver counted (every line acked must be there); --decoded makes the sinks take the decoded way only
(read_frames then _batch: no direct batches), --profile prints cProfile's top (the loop thread's).

  python -m bench.forward_pipeline [--lines 1000000] [--workload short] [--containers 1] [--rate 300000] [--chunk 65536]
                                   [--record-ids] [--decoded] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.microbench import entries_for
from driver.frames import encode_entry
from driver.info import LogInfo
from driver.journal import CursorStore, Journal
from driver.options import parse_options
from driver.outputs import Container as OutputContainer
from driver.outputs.forward import output


def start_receiver() -> tuple[subprocess.Popen, int]:
    # Unbuffered: select() must see every line the receiver printed (a reader's buffer could hide the last one).
    rx = subprocess.Popen([sys.executable, "-m", "bench.receiver", "--interval", "0.2"], stdout=subprocess.PIPE,
                          bufsize=0)
    port = json.loads(rx.stdout.readline())["listening"]
    return rx, port


def stop_receiver(rx: subprocess.Popen, records: int, wait: float = 10.0) -> dict:
    """Its counters once they show ``records`` (a JSON line per change, every 0.2 s), or after ``wait`` seconds."""
    counts: dict = {}
    deadline = time.monotonic() + wait
    while counts.get("records", 0) < records and time.monotonic() < deadline:
        if select.select([rx.stdout], [], [], max(deadline - time.monotonic(), 0))[0]:
            line = rx.stdout.readline()
            if not line:
                break
            counts = json.loads(line)
    rx.terminate()
    rx.wait()
    return counts


class Container:
    """One container: its journal, its forward sink, and the wake-up a FIFO's splice gives its consumer."""

    def __init__(self, root: Path, name: str, port: int, record_ids: bool, decoded: bool) -> None:
        cid = name.encode().hex().ljust(64, "0")
        self.journal = Journal(str(root / name / "journal"))
        config = {"fluentd-address": f"tcp://127.0.0.1:{port}"}
        if record_ids:
            config["forward-record-id"] = "true"
        info = LogInfo.from_json({"ContainerID": cid, "ContainerName": f"/{name}", "Config": config})
        self.sink = output.build_sink(OutputContainer(info, parse_options(config), self.journal,
                                                      CursorStore(str(root / name / "cursors")), ""), None)
        if decoded:
            self.sink.direct = False  # (a tree without direct batches has no such switch and ignores it)
        self.batches = self.frames = 0
        send = self.sink._send

        async def counted_send(batch):
            self.batches += 1
            self.frames += len(batch.frames)
            return await send(batch)

        self.sink._send = counted_send
        self.wake = asyncio.Event()
        self.feed_cpu = 0.0  # loop-thread CPU spent writing into the journal (dockerd's side, left out)

    def write(self, data: bytes) -> None:
        t0 = time.thread_time()
        self.journal.write(data)
        self.feed_cpu += time.thread_time() - t0
        self.wake.set()
        self.sink.journal_grew()  # as Pipeline.poke: a step waiting for an ack with room in its window wakes

    def seal(self) -> None:
        self.sink.sealed = True
        self.wake.set()

    async def consume(self, loop, executor) -> None:
        """Pipeline._run's shape: wait for a poke, step until nothing is left, until sealed and caught up."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while await self.sink.step(loop, executor):
                pass
            if self.sink.sealed and self.sink.caught_up():
                return


async def feed(container: Container, frames: bytes, rate: int, lines: int, chunk: int) -> None:
    """Write ``frames`` in ``chunk`` byte pieces at ``rate`` lines/s (0: all at once), then seal."""
    loop = asyncio.get_running_loop()
    if rate:
        per_byte = lines / rate / len(frames)  # seconds of the run per byte
        t0 = loop.time()
        for at in range(0, len(frames), chunk):
            container.write(frames[at:at + chunk])
            delay = t0 + (at + chunk) * per_byte - loop.time()
            await asyncio.sleep(max(delay, 0))
    container.seal()


async def run(port: int, root: Path, args, profile: cProfile.Profile | None) -> dict:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)
    each = args.lines // args.containers
    frames = b"".join(encode_entry(e) for e in entries_for(args.workload, each))
    boxes = [Container(root, f"c{i}", port, args.record_ids, args.decoded) for i in range(args.containers)]
    if not args.rate:
        for box in boxes:
            for at in range(0, len(frames), 1 << 20):
                box.write(frames[at:at + (1 << 20)])
        for box in boxes:
            box.feed_cpu = 0.0
    cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(box.consume(loop, executor) for box in boxes),
                         *(feed(box, frames if args.rate else b"", args.rate, each, args.chunk) for box in boxes))
    if profile is not None:
        profile.disable()
    feed_cpu = sum(box.feed_cpu for box in boxes)
    cpu = time.process_time() - cpu0 - feed_cpu
    loop_cpu = time.thread_time() - loop0 - feed_cpu
    wall = time.monotonic() - wall0
    for box in boxes:
        await box.sink.aclose()
    executor.shutdown()
    acked = sum(box.sink.stats.acked for box in boxes)
    batches = sum(box.batches for box in boxes)
    sent = sum(box.frames for box in boxes)
    return {"lines": acked, "cpu_s_per_m": round(cpu / acked * 1e6, 3),
            "loop_cpu_s_per_m": round(loop_cpu / acked * 1e6, 3), "wall_s": round(wall, 2),
            "batches": batches, "lines_per_batch": round(acked / max(batches, 1)), "frames": sent,
            "direct": getattr(boxes[0].sink, "direct", None)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forward_pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--workload", default="short", help="bench.microbench's: short, 100b, 40kb, mixed")
    p.add_argument("--containers", type=int, default=1)
    p.add_argument("--rate", type=int, default=300_000, help="lines/s per container (0: the journal is full first)")
    p.add_argument("--chunk", type=int, default=64 << 10, help="bytes per journal write (dockerd's FIFO: 64 KiB)")
    p.add_argument("--record-ids", action="store_true", help="forward-record-id=true")
    p.add_argument("--decoded", action="store_true", help="no direct batches: the decoded way only")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    rx, port = start_receiver()
    root = Path(tempfile.mkdtemp(prefix="forward-pipeline-"))
    profile = cProfile.Profile(time.thread_time) if args.profile else None  # the loop thread's CPU, not its waits
    try:
        result = asyncio.run(run(port, root, args, profile))
        result["received"] = stop_receiver(rx, result["lines"]).get("records")
    finally:
        if rx.poll() is None:
            rx.terminate()
            rx.wait()
        shutil.rmtree(root)
    print(json.dumps(result))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
    return 0 if result["received"] is not None and result["received"] >= result["lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
