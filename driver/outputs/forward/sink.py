"""The forward sink: journal → Fluent forward records → an aggregator (Fluent Bit, Fluentd), at least once.

It reads the journal through its own cursor, so an aggregator that is down, slow or hung only grows this sink's
backlog on disk; the FIFO and the json.log writer never wait for it. A batch of journal bytes becomes one or more
PackedForward frames; up to ``forward-window`` batches are written before the oldest one's acks came (acks are
matched by chunk id, in any order), and the cursor that is saved (and survives a restart) moves past a batch only
when every frame of it and of every batch before it was acknowledged. So a resend after a failure or a kill
repeats at most the window (``forward-window`` × BATCH_BYTES of journal): that is the bound on duplicates.

Each record carries Docker's fluentd-driver layout (container_id, container_name, source, log, extra attributes,
partial_* on 16 KiB chunks) and, with ``forward-record-id``, a ``record_id`` that is the same on every resend:
the container and the journal offset of the entry's frame (of a joined line's first chunk).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from driver.journal import CursorStore, Journal
from driver.outputs.acked import AckedOutput, Batch
from driver.outputs.forward.client import ForwardClient, ForwardError, Unacked
from driver.outputs.forward.codec import BatchBuilder, Frame, RecordEncoder, new_chunk_id
from driver.partials import merge_partials_at

log = logging.getLogger(__name__)

NAME = "forward"
# Journal bytes per batch: ~7k short lines, ~1.2 MB of frames while in flight. What a batch costs is mostly per
# batch (a step, a worker-thread hand-off, a write, an ack, a cursor save): 64 KiB batches made the output's CPU
# per short line 1.5x of 256 KiB ones, and 6,700 batches of a 400 MB burst of 40 KB lines instead of 1,600.
BATCH_BYTES = 256 << 10
# Until the aggregator has acknowledged something (at start, after a failure) batches are this small and none is
# prepared ahead: an outage then costs one small batch per container instead of two full ones (measured: PSS
# +76% for 10 containers during a 60 s outage with full batches, +13% with 64 KiB probes).
PROBE_BYTES = 16 << 10  # a frame longer than this (a 16 KiB chunk with its fields) is read whole
WINDOW = 4  # batches sent before the oldest one's ack came (forward-window's default)
LOG_EVERY = 30.0  # seconds between repeated "aggregator unreachable" log lines (never one per line)


@dataclass
class _Batch(Batch):
    frames: list[Frame]
    sent: list[Unacked] = field(default_factory=list)  # the frames written, each awaiting its ack


class ForwardSink(AckedOutput):
    name = NAME
    BATCH_BYTES = BATCH_BYTES
    PROBE_BYTES = PROBE_BYTES

    def __init__(self, journal: Journal, store: CursorStore, client: ForwardClient, tag: str,
                 static_fields: dict[str, str], *, event_time: bool, compress: bool, container_id: str,
                 merge_max: int | None = None, record_ids: bool = False, window: int = WINDOW) -> None:
        super().__init__(journal, store, container_id=container_id)
        self.window = window
        self.client = client
        self.tag = tag
        self.encoder = RecordEncoder(static_fields, time_format="event_time" if event_time else "integer",
                                     record_id_key="record_id" if record_ids else None)
        self.wants_offsets = self.record_ids = record_ids
        self.compress = compress
        self.merge_max = merge_max  # join 16 KiB chunks up to this many bytes; None: send chunks as they are
        self.joins_chunks = bool(merge_max)
        self.chunk_ids = new_chunk_id  # a test gives its own, to compare frames
        # Batches packed in C straight from the frames when the encoder can (else, or False, the decoded way).
        self.direct = self.encoder.encodes_frames
        self._id_prefix = f"{container_id[:12]}-"  # + the entry's journal offset in hex: its record id
        self._last_complaint = 0.0

    async def _send(self, batch: _Batch):
        """Write the batch's frames (after the earlier batches'); what it returns waits for their acks."""
        batch.sent = []
        if self._window_broken():
            # An earlier batch's connection failed: this one waits for their resend, in order, not on a new one.
            return self._acks(batch, ForwardError("not sent: a batch before it failed"))
        try:
            for frame in batch.frames:
                batch.sent.append(await self.client.submit(frame.data, frame.chunk_id))
        except ForwardError as exc:
            return self._acks(batch, exc)
        return self._acks(batch)

    async def _deliver(self, batch: _Batch) -> bool:
        return await (await self._send(batch))

    async def _acks(self, batch: _Batch, refused: ForwardError | None = None) -> bool:
        """Wait for the acks of the frames written (acks of later batches may have come first)."""
        try:
            for frame, unacked in zip(batch.frames, batch.sent, strict=False):
                await self.client.acked(unacked)
                self.stats.forwarded += frame.count
            if refused is not None:
                raise refused
        except ForwardError as exc:
            self._failed(batch, exc)
            return False
        if not self.stats.up:
            self.stats.up = True
            if self.stats.failures:
                log.info("aggregator reachable again", extra={"sink": NAME, "address": str(self.client.address)})
        self.stats.acked += batch.lines
        return True

    def _window_broken(self) -> bool:
        """Whether a frame in flight failed (its connection did): the oldest batch fails with it."""
        return any(u.future.done() and not u.ok for batch, _ in self._in_flight for u in batch.sent)

    def _abandon(self, batch: _Batch) -> None:
        """Sent after a batch that failed: it goes again with it (its frames acked already count as forwarded)."""
        acked = zip(batch.frames, batch.sent, strict=False)  # a frame whose write failed has none
        self.stats.forwarded += sum(frame.count for frame, unacked in acked if unacked.ok)
        if batch.sent:  # written, so sent again (one the broken window kept back goes for the first time)
            self.stats.retried += batch.lines

    def _failed(self, batch: _Batch, exc: ForwardError) -> None:
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        self.stats.retried += batch.lines
        self.stats.up = False
        now = time.monotonic()
        if now - self._last_complaint >= LOG_EVERY:
            self._last_complaint = now
            log.warning("forwarding failed; lines wait in the journal",
                        extra={"sink": NAME, "container": self.container_id[:12], "error": str(exc)})

    def _direct_batch(self, start: int, limit: int) -> _Batch | None:
        """The batch packed in C straight from the journal's frames: the records the decoded way makes of them
        (tests/unit/test_forward_frames_c.py) without a tuple per line (worker thread). It ends before the first
        frame C leaves to the decoder (garbage, an empty or unusual frame, a chunk to join, a torn tail), which
        starts the next batch, taken the decoded way; None (read_frames then _batch) when that frame is the
        first, or without C."""
        if not self.direct:
            return None
        data = self.journal.read(start, limit)
        builder = self._builder()
        view = memoryview(data)
        frames: list[Frame] = []
        pos = lines = 0
        while pos < len(data):
            used, count, declined, packed = self.encoder.encode_frames(
                view[pos:], builder.budget, partials=not self.merge_max, start=start + pos, id_prefix=self._id_prefix)
            if not count:
                break
            frames.append(builder.frame_of(packed, count))  # a frame full (declined), or all the frames there are
            pos += used
            lines += count
            if not declined:
                break  # the end, or a frame still being written
        if not frames:
            return None
        self.decoder.found_frames()  # as if it had read them: garbage after them is a new incident
        return _Batch(start, start + pos, lines, frames)

    def _batch(self, start: int, end: int, entries: list[tuple], offsets: list[int] | None) -> _Batch:
        """Encode entries into PackedForward frames (worker thread)."""
        lines = len(entries)  # counted in lines (as received), whatever merging does to records
        if self.merge_max:
            entries, offsets = merge_partials_at(entries, offsets, self.merge_max)
        builder = self._builder()
        # An entry's journal offset names it whatever batch it travels in (a resend starts with a smaller one).
        ids = [f"{self._id_prefix}{at:x}" for at in offsets] if offsets is not None else None
        frames = builder.extend(self.encoder.encode_batch(entries, ids))
        last = builder.flush()
        if last is not None:
            frames.append(last)
        return _Batch(start, end, lines, frames)

    def _builder(self) -> BatchBuilder:
        return BatchBuilder(self.tag, compress=self.compress, chunk_ids=self.chunk_ids)

    async def aclose(self) -> None:
        await self.client.close()
