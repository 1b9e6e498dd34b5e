"""`python -m bench.es_pipeline`: the Elasticsearch output's CPU per line without dockerd.

N short frames (as dockerd writes them) go into a real Journal in a temp dir, then one or more containers'
EsSinks drain them through one shared Batcher and EsClient to the count-only receiver `bench.elasticsearch`,
started as a child process so its CPU is not counted. Reported: this process's CPU-s per million lines
(`time.process_time()`, loop and worker threads together), µs per line, the bulk requests and the sink batches;
--profile prints cProfile's top (the loop thread's only).

--rate writes the journal while the sinks drain it, as a live container's splices do (a chunk every millisecond,
the sinks woken as the pipeline wakes them), so the batches are what arrived meanwhile; without it the journal is
full before the sinks start (every batch full).

  python -m bench.es_pipeline [--lines 1000000] [--containers 1] [--batch-bytes 262144] [--rate LINES/S] [--profile]
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
from driver.outputs.elasticsearch import codec, formats
from driver.outputs.elasticsearch.batcher import make_batcher
from driver.outputs.elasticsearch.options import settings_from
from driver.outputs.elasticsearch.sink import EsSink


def start_receiver() -> tuple[subprocess.Popen, int]:
    rx = subprocess.Popen([sys.executable, "-m", "bench.elasticsearch", "--interval", "0.2"],
                          stdout=subprocess.PIPE, text=True)
    port = json.loads(rx.stdout.readline())["listening"]
    return rx, port


def make_sink(root: Path, name: str, frames: bytes | None, batcher) -> EsSink:
    """A container's sink; its journal holds ``frames`` (None: empty, written live)."""
    cid = name.ljust(64, "0")
    journal = Journal(str(root / name / "journal"))
    for at in range(0, len(frames or b""), 1 << 20):
        journal.write(frames[at:at + (1 << 20)])
    fields = codec.container_fields(container_id=cid, container_name=f"/{name}", image="app:1", labels={},
                                    host_name="h", agent_name="h", agent_version="0.1.0")
    index = formats.parse("logs-docker-default").render(codec.format_fields(fields), lower=True)
    template = codec.DocumentTemplate(index, None, fields, f"{journal.incarnation}-{cid}-")
    sink = EsSink(journal, CursorStore(str(root / name / "cursors")), batcher, template, container_id=cid)
    sink.sealed = frames is not None  # drain everything, no batch-wait at the end
    return sink


class Counting:
    """The sinks' batches (steps that delivered something) and the client's bulk requests."""

    def __init__(self) -> None:
        self.batches = 0
        self.requests = 0
        self.bulk_s = 0.0  # seconds requests were in flight
        self.written_s = 0.0  # --rate: seconds the writing took


async def drain(sinks: list[EsSink], frames: bytes | None, rate: float | None, counting: Counting) -> None:
    """Step every sink until it is caught up; with ``rate``, write ``frames`` into every journal meanwhile (lines per
    second per container, a chunk per millisecond, whole frames) and wake the sinks as the pipeline does."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)
    wakes = [asyncio.Event() for _ in sinks]
    writing = rate is not None

    async def one(sink: EsSink, wake: asyncio.Event) -> None:
        while True:
            while await sink.step(loop, executor):
                counting.batches += 1
            if not writing and sink.caught_up():
                return
            await wake.wait()
            wake.clear()

    async def write() -> None:
        nonlocal writing
        ends = frame_ends(frames)
        per_ms, t0, done = rate / 1000, loop.time(), 0
        while done < len(ends):
            await asyncio.sleep(0.001)
            due = min(len(ends), int((loop.time() - t0) * 1000 * per_ms))
            if due > done:
                chunk = frames[ends[done - 1] if done else 0:ends[due - 1]]
                for sink, wake in zip(sinks, wakes, strict=True):
                    sink.journal.write(chunk)
                    wake.set()
                done = due
        writing = False
        counting.written_s = loop.time() - t0
        for sink, wake in zip(sinks, wakes, strict=True):
            sink.sealed = True
            wake.set()

    await asyncio.gather(*(one(s, w) for s, w in zip(sinks, wakes, strict=True)), *([write()] if writing else []))
    executor.shutdown()


def frame_ends(frames: bytes) -> list[int]:
    """The end offset of each frame (a 4-byte big-endian length, then the message)."""
    ends, at = [], 0
    while at < len(frames):
        at += 4 + int.from_bytes(frames[at:at + 4], "big")
        ends.append(at)
    return ends


async def run(port: int, root: Path, lines: int, containers: int, rate: float | None,
              profile: cProfile.Profile | None) -> dict:
    batcher = make_batcher(settings_from(parse_options({"hosts": f"http://127.0.0.1:{port}"})))
    frames = b"".join(encode_entry(e) for e in entries_for("short", lines // containers))
    sinks = [make_sink(root, f"c{i}", None if rate else frames, batcher) for i in range(containers)]
    counting, bulk = Counting(), batcher.client.bulk

    async def counted_bulk(body: bytes, documents: int):
        counting.requests += 1
        t = time.monotonic()
        try:
            return await bulk(body, documents)
        finally:
            counting.bulk_s += time.monotonic() - t

    batcher.client.bulk = counted_bulk
    cpu0, wall0 = time.process_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await drain(sinks, frames, rate, counting)
    if profile is not None:
        profile.disable()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await batcher.close()
    indexed = sum(s.stats.indexed for s in sinks)
    return {"lines": indexed, "cpu_s_per_m": round(cpu / indexed * 1e6, 3), "wall_s": round(wall, 2),
            **({"written_s": round(counting.written_s, 2)} if rate else {}), "requests": counting.requests,
            "in_flight_s": round(counting.bulk_s, 2), "batches": counting.batches,
            "lines_per_batch": round(indexed / max(counting.batches, 1))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.es_pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--containers", type=int, default=1)
    p.add_argument("--batch-bytes", type=int, default=EsSink.BATCH_BYTES,
                   help="journal bytes per sink batch (a live container's batches are what arrived meanwhile)")
    p.add_argument("--rate", type=float, help="lines per second per container, written while the sinks drain")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    EsSink.BATCH_BYTES = args.batch_bytes
    rx, port = start_receiver()
    root = Path(tempfile.mkdtemp(prefix="es-pipeline-"))
    profile = cProfile.Profile() if args.profile else None
    try:
        result = asyncio.run(run(port, root, args.lines, args.containers, args.rate, profile))
    finally:
        rx.terminate()
        rx.wait()
        shutil.rmtree(root)
    print(json.dumps(result))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
