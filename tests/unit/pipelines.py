"""A Pipeline without a FIFO for unit tests: the journal is filled directly and ``seal()`` stands for the FIFO's EOF."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from driver.frames import encode_entry
from driver.info import LogInfo
from driver.jsonfile import decode_line
from driver.options import parse_options
from driver.pipeline import Pipeline
from driver.settings import Settings

CID = "c0ffee" * 10 + "abcd"


def frames(first: int, n: int) -> bytes:
    """Frames of the lines ``%06d`` first .. first+n-1."""
    return b"".join(encode_entry(("stdout", 10**18 + i, b"%06d" % i, False, False, "", 0))
                    for i in range(first, first + n))


def make_pipeline(tmp: Path, executor, loop, finished: list | None = None, config: dict | None = None) -> Pipeline:
    info = LogInfo.from_json({"ContainerID": CID, "Config": config or {}})
    settings = Settings(log_root=str(tmp / "logs"), state_dir=str(tmp / "state"))
    return Pipeline(info, parse_options(config or {}), settings, executor, loop,
                    on_finished=(finished.append if finished is not None else lambda p: None))


def json_log_path(tmp: Path) -> Path:
    return tmp / "logs" / CID / f"{CID}-json.log"


def json_log_numbers(tmp: Path) -> list[int]:
    """The numbers of the lines in json.log, in file order (torn or garbled lines fail the decode)."""
    raw = json_log_path(tmp).read_bytes()
    return [int(decode_line(line)[0]) for line in raw.splitlines(keepends=True)]


async def wait_for(cond, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def finish(tmp: Path, executor, loop) -> Pipeline:
    """The restarted plugin finishing a stopped container's journal."""
    p = make_pipeline(tmp, executor, loop)
    p.seal()
    await p.closed.wait()
    return p
