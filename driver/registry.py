"""The only global state: container id → Pipeline, and the FIFO table that lets a restarted plugin carry on.

dockerd never repeats StartLogging after a plugin restart, so every attached FIFO is persisted with the Info it came
with; on start the table is read back and the FIFOs re-opened. StartLogging is not "container started" (``docker
logs`` on a stopped container sends an empty Start/Stop pair), and it may arrive twice for the same FIFO (dockerd
retries): both must be harmless.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from driver import outputs, statefiles
from driver.info import LogInfo, render_tag
from driver.options import OptionError, Options, parse_options
from driver.pipeline import Pipeline
from driver.profiles import Profiles
from driver.retention import Retention, RetentionPolicy
from driver.settings import Settings
from driver.sinks.jsonlog import NAME as JSONLOG
from driver.statedir import container_dir, container_ids, cursor_names, journal_end, read_cursor
from driver.statefiles import StateFiles
from driver.stats import ContainerStats

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 6.0  # seconds consumers get to catch up at SIGTERM (dockerd's SIGKILL comes at 10 s)


class Registry:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self._loop = loop
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="consumer")
        self.pipelines: dict[str, Pipeline] = {}
        self.fifos: dict[str, str] = {}  # FIFO path → container id
        # Lifetime counts of containers folded in when their pipeline closed (or the plugin stopped), and per
        # container the part of its counts they hold: a pipeline adds only what it saved beyond that. All three
        # are saved in one file, so a kill leaves them consistent with each other.
        self.finished_totals = ContainerStats("finished")
        self.finished_outputs: defaultdict[str, Counter] = defaultdict(Counter)  # their outputs' counts, by output
        self.folded: dict[str, tuple[ContainerStats, dict[str, Counter]]] = {}
        self.shared = outputs.Shared()  # the outputs' resources shared by containers
        self._restoring = False
        self._totals_path = os.path.join(settings.state_dir, "totals.json")
        self.state_files = StateFiles(loop)  # a full state dir: warned once, counted, retried
        self._load_totals()
        self.profiles = Profiles(settings.profiles)
        self._check_profiles()
        self.state_lock = threading.Lock()  # retention removes a container's files only while holding it
        self.retention = Retention(settings.log_root, settings.state_dir,
                                   RetentionPolicy(settings.retention_seconds, settings.max_bytes),
                                   self.state_lock, lambda cid: cid in self.pipelines)
        self._table = os.path.join(settings.state_dir, "fifos.json")
        os.makedirs(os.path.join(settings.state_dir, "containers"), mode=0o700, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)

    # ---- plugin API calls --------------------------------------------------------------------------------
    async def start_logging(self, fifo: str, info_json: dict) -> None:
        """Open the FIFO before returning (dockerd may unlink it right after a quick Start/Stop pair)."""
        if fifo in self.fifos:
            return  # a retried StartLogging: already draining this FIFO
        info, opts = self.check_start(info_json)
        if opts["mode"] == "non-blocking":
            log.warning("mode=non-blocking: dockerd drops lines silently before they reach logbridge; logbridge "
                        "never blocks a container, so the default blocking mode loses nothing",
                        extra={"container": info.container_id[:12]})
        with self.state_lock:
            self._save_info(info_json, info.container_id, fifo)
            pipeline = self.pipelines.get(info.container_id)
            if pipeline is None:
                pipeline = self._new_pipeline(info, opts)
        if pipeline.closing:
            await pipeline.closed.wait()  # it finished its last FIFO just now: start afresh from its files
            with self.state_lock:
                pipeline = self.pipelines.get(info.container_id) or self._new_pipeline(info, opts)
        pipeline.attach(fifo)
        self.fifos[fifo] = info.container_id
        self._save_table()

    def check_start(self, info_json: object) -> tuple[LogInfo, Options]:
        """What StartLogging checks before it opens or writes anything: the Info, the log-opts with their profile,
        the tag template. Raises OptionError, whose message docker run shows."""
        try:
            info = LogInfo.from_json(info_json)
        except ValueError as exc:
            raise OptionError(f"logbridge: {exc}") from None
        opts = parse_options(self.profiles.apply(info.config))
        if opts["tag"] is not None:
            render_tag(opts["tag"], info)  # reject a bad template at docker run, not later
        return info, opts

    def stop_logging(self, fifo: str) -> None:
        """Never fails (a failed StopLogging leaks dockerd's FIFO and plugin reference)."""
        cid = self.fifos.get(fifo)
        pipeline = self.pipelines.get(cid) if cid else None
        if pipeline is not None:
            pipeline.stop(fifo)

    # ---- lifecycle --------------------------------------------------------------------------------------------
    def _new_pipeline(self, info: LogInfo, opts) -> Pipeline:
        if not os.path.isdir(os.path.join(container_dir(self.settings.state_dir, info.container_id), "cursors")):
            self.folded.pop(info.container_id, None)  # its old state is gone: its counts start again from 0
        pipeline = Pipeline(info, opts, self.settings, self._executor, self._loop, self._finished, self.shared,
                            after_restart=self._restoring)
        self.pipelines[info.container_id] = pipeline
        return pipeline

    # ---- counts: lifetime, from what was saved, so that none ever goes below a value already exposed ----------
    def totals(self) -> ContainerStats:
        """Counts over every container: folded ones plus what live ones saved beyond their folded part."""
        total = ContainerStats("all")
        total.add(self.finished_totals)
        for cid, p in self.pipelines.items():
            stats, _ = p.saved_counts()
            total.add(stats)
            if cid in self.folded:
                total.add(self.folded[cid][0], sign=-1)
        return total

    def output_totals(self) -> defaultdict[str, Counter]:
        """Each output's counts (driver.outputs.OutputConsumer.saved keys) over every container, by output."""
        total: defaultdict[str, Counter] = defaultdict(Counter)
        for name, counts in self.finished_outputs.items():
            total[name].update(counts)
        for cid, p in self.pipelines.items():
            for name, counts in p.saved_counts()[1].items():
                total[name].update(counts)
            for name, counts in self.folded.get(cid, (None, {}))[1].items():
                total[name].subtract(counts)
        return total

    def _fold(self, pipeline: Pipeline) -> None:
        self._fold_counts(pipeline.container_id, *pipeline.saved_counts())

    def _fold_counts(self, cid: str, stats: ContainerStats, sinks: dict[str, dict[str, int]]) -> None:
        """Move what the container saved beyond its folded part into the finished totals (idempotent)."""
        base_stats, base_sinks = self.folded.get(cid, (ContainerStats(cid), {}))
        self.finished_totals.add(stats)
        self.finished_totals.add(base_stats, sign=-1)
        for name in set(sinks) | set(base_sinks):
            self.finished_outputs[name].update(sinks.get(name, {}))
            self.finished_outputs[name].subtract(base_sinks.get(name, {}))
        self.folded[cid] = (stats, {name: Counter(counts) for name, counts in sinks.items()})

    def _finished(self, pipeline: Pipeline) -> None:
        """A pipeline whose FIFO ended and whose consumers caught up: drop it and its FIFO entries."""
        if self.pipelines.get(pipeline.container_id) is pipeline:
            with self.state_lock:  # folding writes into the container's state: retention must not rmtree it meanwhile
                self._fold(pipeline)
                del self.pipelines[pipeline.container_id]
            self._loop.run_in_executor(self._executor, give_back_memory)
            self._save_totals()
        for path in [p for p, cid in self.fifos.items() if cid == pipeline.container_id]:
            if pipeline.fifo is None or pipeline.fifo.path != path:
                del self.fifos[path]
        self._save_table()

    async def restore(self) -> None:
        """Re-open the FIFOs of the previous run and finish journals left behind by stopped containers."""
        self._restoring = True  # the pipelines made now may find what a crash or a power cut left
        try:
            await self._restore()
        finally:
            self._restoring = False

    async def _restore(self) -> None:
        for fifo, cid in self._load_table().items():
            if not os.path.exists(fifo):
                continue  # dockerd unlinks a FIFO when its logger closes
            try:
                info_json = self._load_info(cid, fifo)
                try:
                    await self.start_logging(fifo, info_json)
                except OptionError as exc:
                    # Its options no longer parse (a profiles file gone bad, a version with stricter rules): a FIFO
                    # left undrained blocks its container once the pipe is full, so json.log gets its lines.
                    log.error("options of a re-attached FIFO refused: its lines go to json.log with default "
                              "options, outputs off, until the container starts again",
                              extra={"container": cid[:12], "error": str(exc)})
                    await self.start_logging(fifo, {**info_json, "Config": {}})
                log.info("re-attached FIFO after restart", extra={"container": cid[:12], "fifo": fifo})
            except Exception as exc:  # noqa: BLE001 - one broken entry must not stop the others
                log.error("could not re-attach FIFO", extra={"fifo": fifo, "error": str(exc)})
        self._resume_unfinished()
        self._save_totals()
        self._save_table()

    def _load_table(self) -> dict[str, str]:
        """The FIFO table of the previous run. An unreadable one is rebuilt from the FIFO each container's
        info.json names (the last one it was given), so that no live FIFO is left undrained."""
        try:
            data = statefiles.load(self._table) or {}
            table = data.get("fifos", {}) if statefiles.FORMAT_KEY in data else data  # format 0: the bare map
            if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in table.items()):
                raise statefiles.StateUnreadable(self._table, "corrupt", "not a map of FIFO paths to container ids")
            return table
        except statefiles.StateUnreadable as exc:
            statefiles.set_aside(exc, "fifos.json", "the FIFOs are found again from each container's info.json")
        table = {}
        for cid in container_ids(self.settings.state_dir):
            try:
                fifo = (statefiles.load(self._info_path(cid)) or {}).get("fifo")
            except statefiles.StateUnreadable:
                continue  # set aside when the container's Info is read
            if isinstance(fifo, str):
                table[fifo] = cid
        return table

    def _resume_unfinished(self) -> None:
        root = os.path.join(self.settings.state_dir, "containers")
        for cid in os.listdir(root):
            if cid in self.pipelines:
                continue
            try:
                info = LogInfo.from_json(self._load_info(cid))
                opts = parse_options(self.profiles.apply(info.config))
                consumers = [JSONLOG] + [o.name for o in outputs.turned_on(opts)]
                if not self._has_backlog(cid, consumers):
                    # A container that ended while the plugin was down: what it saved since its last fold
                    # (it was live when the plugin was killed) goes into the totals now.
                    self._fold_counts(cid, *saved_counts_on_disk(container_dir(self.settings.state_dir, cid)))
                    continue
                pipeline = self._new_pipeline(info, opts)
                pipeline.seal()
                log.info("finishing journal left by a stopped container", extra={"container": cid[:12]})
            except statefiles.StateUnreadable:
                continue  # set aside and logged: nothing says which outputs its journal was kept for
            except Exception as exc:  # noqa: BLE001
                log.error("could not resume container state", extra={"container": cid[:12], "error": str(exc)})

    def _has_backlog(self, cid: str, consumers: list[str]) -> bool:
        """True if any consumer's saved cursor is behind the journal's end (a sink still waiting for its
        aggregator, not only json.log)."""
        cdir = container_dir(self.settings.state_dir, cid)
        end = journal_end(cdir)
        return end is not None and any(read_cursor(cdir, name).pos < end for name in consumers)

    async def sweep_forever(self, interval: float) -> None:
        """Apply the retention rules every ``interval`` seconds (in a worker thread: it stats many files)."""
        while True:
            try:
                await self._loop.run_in_executor(self._executor, self.retention.sweep)
            except Exception:  # noqa: BLE001 - a failed sweep must not end the next ones
                log.exception("retention sweep failed")
            await asyncio.sleep(interval)

    async def shutdown(self) -> None:
        """SIGTERM: catch up, persist cursors, keep the FIFO table (live FIFOs never reach EOF).

        dockerd kills a plugin 10 s after SIGTERM: json.log catches up well within the grace period, and a sink
        still waiting for its aggregator resumes from its saved cursor on the next start."""
        pipelines = list(self.pipelines.values())
        for p in pipelines:
            if p.fifo is not None:
                p.fifo.drain()
                p.fifo.close()
        await asyncio.gather(*(p.close(grace=SHUTDOWN_GRACE) for p in pipelines), return_exceptions=True)
        for p in pipelines:
            self._fold(p)  # their counts so far; after the restart they count from their saved cursors again
        self._save_totals()
        await self.shared.aclose()
        self.state_files.retry()  # a last try for files a full disk refused earlier
        self.state_files.close()
        self._executor.shutdown(wait=True)

    # ---- persistence ------------------------------------------------------------------------------------------
    def _info_path(self, cid: str) -> str:
        return os.path.join(self.settings.state_dir, "containers", cid, "info.json")

    def _save_info(self, info_json: dict, cid: str, fifo: str) -> None:
        """dockerd's Info for ``cid`` and the FIFO it came with (the FIFO table's backup)."""
        path = self._info_path(cid)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        text = json.dumps(statefiles.versioned({"fifo": fifo, "info": info_json}))
        self.state_files.save(path, lambda: text)

    def _load_info(self, cid: str, fifo: str | None = None) -> dict:
        """The Info saved for ``cid``. An unreadable info.json (set aside) while its FIFO is live gives an Info
        without options: the FIFO is drained into json.log with the default options, outputs off, until the
        container's next start brings its Info again (a FIFO left undrained blocks its container once the pipe
        is full)."""
        path = self._info_path(cid)
        try:
            data = statefiles.load(path)
            if data is None:
                raise FileNotFoundError(path)
            info = data.get("info") if statefiles.FORMAT_KEY in data else data  # format 0: the Info itself
            if not isinstance(info, dict):
                raise statefiles.StateUnreadable(path, "corrupt", "no Info object")
            return info
        except statefiles.StateUnreadable as exc:
            if fifo is None:
                statefiles.set_aside(exc, "info.json", "the container's journal is left as it is", container=cid)
                raise
            statefiles.set_aside(exc, "info.json", "its FIFO is drained into json.log with default options, "
                                 "outputs off, until the container starts again", container=cid)
            return {"ContainerID": cid, "Config": {}}

    def _check_profiles(self) -> None:
        """A profiles file that cannot be read is reported at start (it is the operator's: never set aside)."""
        try:
            self.profiles.check()
        except OptionError as exc:
            statefiles.recovered[("profiles", "corrupt")] += 1
            log.error("profiles file unreadable: containers that name a profile fail to start until it is fixed",
                      extra={"path": self.profiles.path, "error": str(exc)})

    def _load_totals(self) -> None:
        try:
            data = statefiles.load(self._totals_path)
            if data is None:
                return
            finished = ContainerStats("finished")
            finished.restore(data.get("containers", {}))
            # A totals.json written before outputs were plug-ins has the forward sink's counts under "forward".
            by_output = {name: Counter(counts)
                         for name, counts in data.get("outputs", {"forward": data.get("forward", {})}).items()}
            folded = {}
            for cid, part in data.get("folded", {}).items():
                stats = ContainerStats(cid)
                stats.restore(part.get("containers", {}))
                folded[cid] = (stats, {name: Counter(c) for name, c in part.get("outputs", {}).items()})
            for counts in [*by_output.values(), *(c for _, sinks in folded.values() for c in sinks.values())]:
                if not all(isinstance(v, int) for v in counts.values()):
                    raise TypeError("a count that is not a number")
        except (TypeError, ValueError, AttributeError) as exc:
            if not isinstance(exc, statefiles.StateUnreadable):
                exc = statefiles.StateUnreadable(self._totals_path, "corrupt", f"unexpected content ({exc})")
            statefiles.set_aside(exc, "totals.json", "the finished containers' totals start again from zero")
            return
        self.finished_totals.add(finished)
        for name, counts in by_output.items():
            self.finished_outputs[name].update(counts)
        self.folded.update(folded)
        if "folded" not in data:
            self._folded_before_upgrade()

    def _folded_before_upgrade(self) -> None:
        """totals.json from before lifetime counts: each container's folded part was its folded.json, and what its
        outputs had folded was what their cursors held then (only acked and the drops were saved)."""
        for cid in container_ids(self.settings.state_dir):
            cdir = container_dir(self.settings.state_dir, cid)
            try:
                with open(os.path.join(cdir, "folded.json"), encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            stats = ContainerStats(cid)
            stats.restore(data)
            self.folded[cid] = (stats, {name: Counter(c) for name, c in saved_counts_on_disk(cdir)[1].items()})

    def _save_totals(self) -> None:
        """Finished containers' counts and the folded part of each container's, so the plugin's totals survive
        its restarts (a retry writes the newest). A container whose state is gone needs no folded part any more
        (its counts stay in)."""
        self.folded = {cid: part for cid, part in self.folded.items()
                       if os.path.isdir(os.path.join(container_dir(self.settings.state_dir, cid), "cursors"))}
        self.state_files.save(self._totals_path, self._render_totals)

    def _render_totals(self) -> str:
        folded = {cid: {"containers": stats.to_json(), "outputs": {n: dict(c) for n, c in sinks.items()}}
                  for cid, (stats, sinks) in self.folded.items()}
        finished = {n: dict(c) for n, c in self.finished_outputs.items()}
        return json.dumps(statefiles.versioned({"containers": self.finished_totals.to_json(), "outputs": finished,
                                                 "folded": folded}))

    def _save_table(self) -> None:
        self.state_files.save(self._table, lambda: json.dumps(statefiles.versioned({"fifos": self.fifos})))


def saved_counts_on_disk(cdir: str) -> tuple[ContainerStats, dict[str, dict[str, int]]]:
    """Pipeline.saved_counts for a container without a pipeline, from its cursor files."""
    stats = ContainerStats(os.path.basename(cdir))
    stats.restore(read_cursor(cdir, JSONLOG).extra.get("stats", {}))
    known = {o.name: o for o in outputs.available()}
    return stats, {name: (known[name].saved_counts if name in known else outputs.default_saved_counts)(
        read_cursor(cdir, name)) for name in cursor_names(cdir) if name != JSONLOG}


def give_back_memory() -> None:
    """Return freed heap to the system once a container's pipeline is gone: glibc keeps what worker threads
    freed in their arenas, so a plugin that once drained a burst would otherwise stay at its peak size."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
