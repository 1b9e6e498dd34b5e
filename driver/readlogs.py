"""ReadLogs: ``docker logs`` served from the container's json.log files (rotated and compressed ones included).

dockerd passes the stream to the client byte for byte, so each frame carries the line exactly as json-file stores
it (with its ``\\n`` when the line was complete). dockerd never says when a followed container stopped: the stream
ends here, after that container's FIFO ended and its json.log caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from driver.frames import encode_frame
from driver.info import LogInfo
from driver.jsonfile import parse_time
from driver.logfile import Follower, ReadStats, _Window, read_entries
from driver.options import OptionError, parse_options
from driver.sinks.jsonlog import log_path

log = logging.getLogger(__name__)

CHUNK_ENTRIES = 2000  # entries per hand-off from the reading thread: bounds memory, keeps the loop free
FOLLOW_POLL = 0.2  # seconds between looks at the file while following
CATCH_UP_LIMIT = 10.0  # seconds to wait for json.log to absorb the journal before reading anyway


@dataclass(frozen=True)
class ReadConfig:
    tail: int
    follow: bool
    since_ns: int | None
    until_ns: int | None

    @classmethod
    def from_json(cls, cfg: object) -> ReadConfig:
        """dockerd's ReadConfig (Tail an int, -1 all; Since/Until Go times); ValueError for anything else."""
        if not isinstance(cfg, dict):
            raise ValueError(f"Config is not a JSON object: {type(cfg).__name__}")
        tail = cfg.get("Tail", -1)
        if tail is None:
            tail = -1
        if isinstance(tail, bool) or not isinstance(tail, (int, str)):  # int(1.5) would guess, int(inf) overflow
            raise ValueError(f"Config.Tail {tail!r:.40} is not a whole number")
        return cls(
            tail=int(tail),
            follow=bool(cfg.get("Follow")),
            since_ns=_go_time(cfg.get("Since"), "Since"),
            until_ns=_go_time(cfg.get("Until"), "Until"),
        )


def _go_time(value: object, name: str) -> int | None:
    """A Go time.Time from JSON; its zero value (year 1) means unset."""
    if not value:
        return None
    if not isinstance(value, str):
        raise ValueError(f"Config.{name} is not a time: {type(value).__name__}")
    if value.startswith("0001-01-01T00:00:00"):
        return None
    return parse_time(value)


def _frames(entries: list[tuple[bytes, str, int]]) -> bytes:
    return b"".join(encode_frame(stream, time_nano, line) for line, stream, time_nano in entries)


def _chunks(entries: Iterator[tuple[bytes, str, int]]) -> Iterator[list[tuple[bytes, str, int]]]:
    chunk = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) >= CHUNK_ENTRIES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def serve_read_logs(request: web.Request, registry, body: dict) -> web.StreamResponse:
    info = LogInfo.from_json(body.get("Info") or {})
    cfg = ReadConfig.from_json(body.get("Config") or {})
    try:
        compress = parse_options(info.config)["compress"]
    except OptionError:
        compress = True  # read .gz files too: nothing is lost by looking for them
    path = log_path(registry.settings.log_root, info.container_id)
    pipeline = registry.pipelines.get(info.container_id)
    loop = asyncio.get_running_loop()
    if pipeline is not None and not await pipeline.json_log_caught_up(CATCH_UP_LIMIT) and not cfg.follow:
        # json.log is behind (its disk is full, or slow): what it lacks comes from the journal.
        return await _serve_with_journal(request, loop, pipeline, path, cfg, compress)

    stats = ReadStats()
    follower = None
    if cfg.follow:
        # The starting point is fixed before the response begins: a line logged once the caller sees the read
        # under way is new, not history (json-file fixes it before ReadLogs returns, for the same reason).
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        follower = await loop.run_in_executor(
            None, lambda: Follower(path, since_ns=cfg.since_ns, until_ns=cfg.until_ns, compress=compress, stats=stats))
    response = web.StreamResponse(headers={"Content-Type": "application/x-protobuf"})
    try:
        await response.prepare(request)
    except BaseException:
        if follower is not None:
            follower.close()
        raise
    if follower is None:
        history = _chunks(read_entries(path, tail=cfg.tail, since_ns=cfg.since_ns, until_ns=cfg.until_ns,
                                       compress=compress, stats=stats))
        await _send_all(functools.partial(loop.run_in_executor, None), response, history)
    else:
        await _follow(loop, request, response, registry, info.container_id, follower, cfg)
    await response.write_eof()
    log.debug("ReadLogs served", extra={"container": info.container_id[:12], "tail": cfg.tail, "follow": cfg.follow,
                                        "since_ns": cfg.since_ns, "until_ns": cfg.until_ns,
                                        "bytes_read": stats.bytes_read, "bad_lines": stats.bad_lines})
    return response


async def _serve_with_journal(request, loop, pipeline, path: str, cfg: ReadConfig,
                              compress: bool) -> web.StreamResponse:
    writer, end = pipeline.jsonlog, pipeline.json_log_target
    written = await loop.run_in_executor(None, writer.hold)
    log.info("docker logs while json.log is behind: the rest comes from the journal",
             extra={"container": pipeline.container_id[:12], "journal_bytes": max(0, end - written)})
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/x-protobuf"})
        await response.prepare(request)
        entries = _json_log_then_journal(writer.unwritten_entries(written, end), path, cfg, compress)
        await _send_all(functools.partial(loop.run_in_executor, None), response, _chunks(entries))
        await response.write_eof()
        return response
    finally:
        await loop.run_in_executor(None, writer.unhold)
        pipeline.poke()


def _json_log_then_journal(pending: Iterator, path: str, cfg: ReadConfig, compress: bool) -> Iterator:
    """json.log's entries, then the journal's entries it lacks, with the same tail/since/until as one history."""
    pending = _Window(cfg.since_ns, cfg.until_ns).apply(pending)  # json.log's reader applies the same rule
    if cfg.tail == 0:
        return
    if cfg.tail < 0:
        yield from read_entries(path, tail=-1, since_ns=cfg.since_ns, until_ns=cfg.until_ns, compress=compress)
        yield from pending
        return
    last = deque(pending, maxlen=cfg.tail)
    if len(last) < cfg.tail:
        yield from read_entries(path, tail=cfg.tail - len(last), since_ns=cfg.since_ns, until_ns=cfg.until_ns,
                                compress=compress)
    yield from last


async def _send_all(run, response: web.StreamResponse, chunks: Iterator[list]) -> None:
    """Pull chunks in a worker thread (file reads, gunzip) through `run(fn, *args)`; write them from the loop."""
    sentinel = object()
    while True:
        chunk = await run(next, chunks, sentinel)
        if chunk is sentinel:
            return
        await response.write(_frames(chunk))


class _FollowerSteps:
    """Runs a Follower's reads in worker threads, one at a time, and closes it once none is in flight.

    A cancelled await (the client went away) does not stop the thread: closing the follower under it would
    have the read go on with closed descriptors, or reopen the file and leak it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, follower: Follower) -> None:
        self._loop = loop
        self._follower = follower
        self._step: asyncio.Future | None = None

    async def run(self, fn, *args):
        self._step = self._loop.run_in_executor(None, fn, *args)
        return await asyncio.shield(self._step)

    def close(self) -> None:
        step = self._step
        if step is None or step.done():
            self._follower.close()
            return

        def close_after(done: asyncio.Future) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: the request it belonged to is gone
            self._follower.close()

        step.add_done_callback(close_after)


async def _follow(loop, request, response, registry, container_id: str, follower: Follower, cfg: ReadConfig) -> None:
    steps = _FollowerSteps(loop, follower)
    first = registry.pipelines.get(container_id)
    followed = first.fifo if first is not None else None  # the logger this read follows: one run
    cut_ns = None  # once the followed run is over: lines stamped from then on belong to a later run
    # json.log skips the tick while this read follows it
    with first.json_log_wanted() if first is not None else contextlib.nullcontext():
        try:
            await _send_all(steps.run, response, _chunks(follower.history(cfg.tail)))
            while not follower.done:
                new = await steps.run(follower.poll)
                pipeline = registry.pipelines.get(container_id)
                if cut_ns is None:
                    # Ended, as json-file's followers end, when the logger followed closed. A `docker restart` gives
                    # the container a new FIFO at once, and json.log may hold the next run's first lines by the
                    # time this loop looks (the poll above included): they are stamped after that FIFO opened.
                    current = pipeline.fifo if pipeline is not None else None
                    if current is None or current is not followed:
                        cut_ns = current.opened_ns if current is not None else time.time_ns()
                if cut_ns is not None:
                    new = [entry for entry in new if entry[2] < cut_ns]
                if new:
                    await response.write(_frames(new))
                if cut_ns is not None and (pipeline is None or await pipeline.json_log_caught_up(FOLLOW_POLL)):
                    # json.log now holds the followed run's last lines: one more poll shows them
                    last = [entry for entry in await steps.run(follower.poll) if entry[2] < cut_ns]
                    if last:
                        await response.write(_frames(last))
                    return  # the container's logger closed: json-file ends its followers the same way
                if request.transport is None or request.transport.is_closing():
                    return  # the client went away
                await asyncio.sleep(FOLLOW_POLL)
        except (ConnectionResetError, asyncio.CancelledError):
            log.debug("ReadLogs client went away", extra={"container": container_id[:12]})
        finally:
            steps.close()
