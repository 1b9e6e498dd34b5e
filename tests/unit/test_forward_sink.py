"""ForwardSink against a scripted aggregator (no sockets): what it sends, and again after a failure."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import msgpack

from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.outputs.forward.client import DeliveryError, Unacked
from driver.outputs.forward.sink import BATCH_BYTES, PROBE_BYTES, ForwardSink

CID = "c" * 64


class ScriptedClient:
    """Takes every frame; send number ``fail_at`` (1-based) loses its ack: the frame arrived, the send fails."""

    address = "tcp://scripted:24224"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.sends: list[list[dict]] = []  # records of each frame that was taken, in order

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        self.calls += 1
        self.sends.append(records_of(frame))
        ack = asyncio.get_running_loop().create_future()
        if self.calls == self.fail_at:
            ack.set_exception(DeliveryError("scripted: connection dropped before the ack"))
        else:
            ack.set_result(None)
        return Unacked(ack, None)

    async def acked(self, unacked: Unacked) -> None:
        await unacked.future

    async def close(self) -> None:
        pass


def records_of(frame: bytes) -> list[dict]:
    _tag, entries, _option = msgpack.unpackb(frame, raw=True)  # entries may be packed as str
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(entries)
    return [record for _time, record in unpacker]


def make_sink(tmp_path, client, **kwargs) -> ForwardSink:
    journal = Journal(str(tmp_path / "journal"))
    store = CursorStore(str(tmp_path / "cursors"))
    return ForwardSink(journal, store, client, "tag", {"container_id": CID, "container_name": "/n"},
                       event_time=True, compress=False, container_id=CID, **kwargs)


def drain(sink: ForwardSink) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            while await sink.step(loop, executor):
                pass
    asyncio.run(run())


def test_record_ids_are_the_same_when_a_failed_batch_is_resent_in_other_batches(tmp_path):
    """issue 15.5: the aggregator drops the connection in the middle of a full batch; the resend starts with a
    small probe batch, so its entries travel in other batches than the first time: each keeps its id."""
    lines = [b"line %06d" % i for i in range(12000)]  # ~200 KiB of frames: probe, full batches, several frames
    client = ScriptedClient(fail_at=4)
    sink = make_sink(tmp_path, client, record_ids=True)
    sink.journal.write(b"".join(encode_entry(("stdout", 10**18 + i, ln, False, False, "", 0))
                                for i, ln in enumerate(lines)))
    drain(sink)  # stops at the failure
    drain(sink)  # the resend, probing first
    assert sink.cursor.pos == sink.journal.end
    ids: dict[str, set[str]] = {}
    for records in client.sends:
        for r in records:
            ids.setdefault(r["log"], set()).add(r["record_id"])
    assert len(ids) == len(lines)
    sent = sum(len(records) for records in client.sends)
    assert sent > len(lines) + PROBE_BYTES // 20  # the frames before the failure went twice (not just a probe)
    changed = {log: i for log, i in ids.items() if len(i) > 1}
    assert not changed, f"{len(changed)} of {sent - len(lines)} resent lines got another id"
    assert len({next(iter(i)) for i in ids.values()}) == len(lines)  # and no two lines share one
    assert BATCH_BYTES > PROBE_BYTES


class HangingClient(ScriptedClient):
    """An aggregator that accepts the connection and never answers."""

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        self.calls += 1
        await asyncio.Event().wait()


def test_a_finished_containers_backlog_goes_at_its_max_age_though_the_aggregator_hangs(tmp_path):
    """issue 14.4: sealed (the container ended), nothing ever acknowledged: once finished-max-age has passed the
    backlog is dropped and counted, and the sink is caught up so its pipeline can close."""
    client = HangingClient()
    sink = make_sink(tmp_path, client)
    sink.finished_max_age = 0.2
    sink.journal.write(b"".join(encode_entry(("stdout", 1, b"line %d" % i, False, False, "", 0)) for i in range(500)))
    sink.sealed = True
    drain(sink)
    assert client.calls >= 1 and sink.caught_up()
    assert sink.saved["dropped_finished_max_age"] == 500 and sink.saved["acked"] == 0
    restarted = make_sink(tmp_path, client)  # what a restart reads back
    assert restarted.saved["dropped_finished_max_age"] == 500 and restarted.cursor.pos == sink.journal.end


def test_the_age_counts_from_the_end_and_an_empty_new_start_keeps_it(tmp_path):
    sink = make_sink(tmp_path, ScriptedClient())
    assert sink.finished_at is None
    sink.sealed = True
    ended = sink.finished_at
    assert ended is not None
    sink.sealed = False  # `docker logs` on the stopped container: an empty Start/Stop pair
    sink.sealed = True
    assert sink.finished_at == ended
    sink.finished_at = ended - 100  # as if it ended long ago
    sink.sealed = False  # the container started again and logged
    sink.journal.write(encode_entry(("stdout", 1, b"more", False, False, "", 0)))
    sink.sealed = True
    assert sink.finished_at >= ended  # its new end
    sink.flush()
    assert make_sink(tmp_path, ScriptedClient()).finished_at == sink.finished_at  # saved with the cursor


def test_a_cursor_the_cap_left_behind_resumes_at_a_frame_and_counts_the_torn_one(tmp_path):
    """issue 15 (suspected): the cap gave up a segment under the forward cursor and the plugin was killed before
    the move was saved. The segment edge falls inside a frame: the sink must go on from the next whole frame (no
    garbled frame sent or skipped uncounted) and count the torn one as the cap's drop."""
    frames = [encode_entry(("stdout", 1, b"line %04d" % i, False, False, "", 0)) for i in range(400)]
    journal = Journal(str(tmp_path / "journal"), segment_bytes=4096)
    for f in frames:
        journal.write(f)
    assert journal.segment_count() > 2
    cut = journal._starts[1]
    journal.release(cut)  # what the cap does to the oldest segment; the saved cursor stays at 0
    journal.close()
    bounds = [sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)]
    assert cut not in bounds  # the segment edge is inside a frame
    client = ScriptedClient()
    sink = make_sink(tmp_path, client)
    first_whole = next(i for i, b in enumerate(bounds) if b > cut)
    assert sink.cursor.pos == bounds[first_whole]
    drain(sink)
    sent = [r["log"] for records in client.sends for r in records]
    assert sent == [f"line {i:04d}" for i in range(first_whole, len(frames))]
    assert sink.decoder.garbled == 0
    assert sink.saved["dropped"] == 1  # the torn frame; the whole ones before went with the segment
    assert sink.cursor.dropped_bytes == bounds[first_whole]
