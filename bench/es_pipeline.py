"""`python -m bench.es_pipeline`: the Elasticsearch output's CPU per line without dockerd.

N short frames (as dockerd writes them) go into a real Journal in a temp dir, then one or more containers'
EsSinks drain them through one shared Batcher and EsClient to the count-only receiver `bench.elasticsearch`,
started as a child process so its CPU is not counted. Reported: this process's CPU-s per million lines
(`time.process_time()`, loop and worker threads together) and µs per line; --profile prints cProfile's top.

  python -m bench.es_pipeline [--lines 1000000] [--containers 1] [--batch-bytes 262144] [--profile]
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


def make_sink(root: Path, name: str, lines: int, batcher) -> EsSink:
    cid = name.ljust(64, "0")
    journal = Journal(str(root / name / "journal"))
    frames = b"".join(encode_entry(e) for e in entries_for("short", lines))
    for at in range(0, len(frames), 1 << 20):
        journal.write(frames[at:at + (1 << 20)])
    fields = codec.container_fields(container_id=cid, container_name=f"/{name}", image="app:1", labels={},
                                    host_name="h", agent_name="h", agent_version="0.1.0")
    index = formats.parse("logs-docker-default").render(codec.format_fields(fields), lower=True)
    template = codec.DocumentTemplate(index, None, fields, f"{journal.incarnation}-{cid}-")
    sink = EsSink(journal, CursorStore(str(root / name / "cursors")), batcher, template, container_id=cid)
    sink.sealed = True  # drain everything, no batch-wait at the end
    return sink


async def drain(sinks: list[EsSink]) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)

    async def one(sink: EsSink) -> None:
        while await sink.step(loop, executor):
            pass

    await asyncio.gather(*(one(s) for s in sinks))
    executor.shutdown()


async def run(port: int, root: Path, lines: int, containers: int, profile: cProfile.Profile | None) -> dict:
    batcher = make_batcher(settings_from(parse_options({"hosts": f"http://127.0.0.1:{port}"})))
    sinks = [make_sink(root, f"c{i}", lines // containers, batcher) for i in range(containers)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await drain(sinks)
    if profile is not None:
        profile.disable()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await batcher.close()
    indexed = sum(s.stats.indexed for s in sinks)
    return {"lines": indexed, "cpu_s_per_m": round(cpu / indexed * 1e6, 3),
            "us_per_line": round(cpu / indexed * 1e6, 3), "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.es_pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--containers", type=int, default=1)
    p.add_argument("--batch-bytes", type=int, default=EsSink.BATCH_BYTES,
                   help="journal bytes per sink batch (a live container's batches are what arrived meanwhile)")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    EsSink.BATCH_BYTES = args.batch_bytes
    rx, port = start_receiver()
    root = Path(tempfile.mkdtemp(prefix="es-pipeline-"))
    profile = cProfile.Profile() if args.profile else None
    try:
        result = asyncio.run(run(port, root, args.lines, args.containers, profile))
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
