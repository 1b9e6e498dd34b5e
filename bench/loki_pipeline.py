"""`python -m bench.loki_pipeline`: the Loki output's CPU per line without dockerd.

N short frames (as dockerd writes them) go into a real Journal in a temp dir, and one or more containers'
LokiSinks drain them through one shared Batcher and LokiClient to the count-only receiver `bench.loki_receiver`,
started as a child process so its CPU is not counted. Two ways to fill the journal:

  --rate 0     all frames are there before the sinks start (full 256 KiB batches: the encoder's best case)
  --rate N     a live container: frames arrive in --chunk byte writes (dockerd's FIFO is 64 KiB) paced at N lines/s,
               and each write pokes the sinks as Pipeline.poke does, so a sink takes whatever arrived since its
               last batch, as it does on the real path

Reported: this process's CPU-s per million lines (`time.process_time()`, loop and worker threads, the writes into
the journal left out), how many parts (sink batches) and pushes the lines made and their mean size; --profile
prints cProfile's top.

  python -m bench.loki_pipeline [--lines 1000000] [--containers 1] [--rate 300000] [--chunk 65536]
                                [--batch-bytes 262144] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.microbench import entries_for
from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.options import parse_options
from driver.outputs.loki.batcher import make_batcher
from driver.outputs.loki.options import settings_from
from driver.outputs.loki.sink import LokiSink


def start_receiver() -> tuple[subprocess.Popen, int]:
    rx = subprocess.Popen([sys.executable, "-m", "bench.loki_receiver", "--interval", "0.2"],
                          stdout=subprocess.PIPE, text=True)
    port = json.loads(rx.stdout.readline())["listening"]
    return rx, port


class Counted:
    """Counts the parts handed to a batcher and the pushes it makes (wraps the two calls, changes nothing)."""

    def __init__(self, batcher) -> None:
        self.parts = self.part_entries = self.pushes = self.push_bytes = 0
        send, push = batcher.send, batcher.client.push

        async def counted_send(part):
            self.parts += 1
            self.part_entries += part.entries
            return await send(part)

        async def counted_push(body):
            self.pushes += 1
            self.push_bytes += len(body)
            return await push(body)

        batcher.send, batcher.client.push = counted_send, counted_push


class Container:
    """One container: its journal, its sink, and the wake-up a FIFO's splice gives its consumer."""

    def __init__(self, root: Path, name: str, batcher) -> None:
        cid = name.ljust(64, "0")
        self.journal = Journal(str(root / name / "journal"))
        labels = {"container_name": name, "host": "h", "filename": f"/var/lib/docker/containers/{cid}-json.log"}
        self.sink = LokiSink(self.journal, CursorStore(str(root / name / "cursors")), batcher, labels,
                             container_id=cid)
        self.wake = asyncio.Event()
        self.feed_cpu = 0.0  # loop-thread CPU spent writing into the journal (dockerd's side, left out)

    def write(self, data: bytes) -> None:
        t0 = time.thread_time()
        self.journal.write(data)
        self.feed_cpu += time.thread_time() - t0
        self.wake.set()

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


def recent(entries: list[tuple]) -> list[tuple]:
    """The entries moved to end now: Loki's limits would drop last year's lines as too old."""
    shift = time.time_ns() - entries[-1][1]
    return [(e[0], e[1] + shift, *e[2:]) for e in entries]


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


async def run(port: int, root: Path, lines: int, containers: int, rate: int, chunk: int,
              profile: cProfile.Profile | None) -> dict:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)
    batcher = make_batcher(settings_from(parse_options({"loki-url": f"http://127.0.0.1:{port}/loki/api/v1/push"})))
    counted = Counted(batcher)
    each = lines // containers
    frames = b"".join(encode_entry(e) for e in recent(entries_for("short", each)))
    boxes = [Container(root, f"c{i}", batcher) for i in range(containers)]
    if not rate:
        for box in boxes:
            for at in range(0, len(frames), 1 << 20):
                box.write(frames[at:at + (1 << 20)])
        for box in boxes:
            box.feed_cpu = 0.0
    cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(box.consume(loop, executor) for box in boxes),
                         *(feed(box, frames if rate else b"", rate, each, chunk) for box in boxes))
    if profile is not None:
        profile.disable()
    feed_cpu = sum(box.feed_cpu for box in boxes)
    cpu = time.process_time() - cpu0 - feed_cpu
    loop_cpu = time.thread_time() - loop0 - feed_cpu
    wall = time.monotonic() - wall0
    await batcher.close()
    executor.shutdown()
    acked = sum(box.sink.stats.acked for box in boxes)
    return {"lines": acked, "cpu_s_per_m": round(cpu / acked * 1e6, 3),
            "loop_cpu_s_per_m": round(loop_cpu / acked * 1e6, 3), "wall_s": round(wall, 2),
            "parts": counted.parts, "lines_per_part": round(counted.part_entries / max(counted.parts, 1)),
            "pushes": counted.pushes, "kb_per_push": round(counted.push_bytes / max(counted.pushes, 1) / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loki_pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--containers", type=int, default=1)
    p.add_argument("--rate", type=int, default=300_000, help="lines/s per container (0: the journal is full first)")
    p.add_argument("--chunk", type=int, default=64 << 10, help="bytes per journal write (dockerd's FIFO: 64 KiB)")
    p.add_argument("--batch-bytes", type=int, default=LokiSink.BATCH_BYTES, help="journal bytes per sink batch")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    LokiSink.BATCH_BYTES = args.batch_bytes
    rx, port = start_receiver()
    root = Path(tempfile.mkdtemp(prefix="loki-pipeline-"))
    profile = cProfile.Profile(time.thread_time) if args.profile else None  # the loop thread's CPU, not its waits
    try:
        result = asyncio.run(run(port, root, args.lines, args.containers, args.rate, args.chunk, profile))
    finally:
        rx.terminate()
        rx.wait()
        shutil.rmtree(root)
    print(json.dumps(result))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
