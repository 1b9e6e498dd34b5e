"""ForwardSink against a scripted aggregator (no sockets): what it sends, and again after a failure."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import msgpack

from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.outputs.forward.client import DeliveryError
from driver.outputs.forward.sink import BATCH_BYTES, PROBE_BYTES, ForwardSink

CID = "c" * 64


class ScriptedClient:
    """Takes every frame; send number ``fail_at`` (1-based) loses its ack: the frame arrived, the send fails."""

    address = "tcp://scripted:24224"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.sends: list[list[dict]] = []  # records of each frame that was taken, in order

    async def send(self, frame: bytes, chunk_id: str | None) -> None:
        self.calls += 1
        _tag, entries, _option = msgpack.unpackb(frame, raw=True)  # entries may be packed as str
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(entries)
        self.sends.append([record for _time, record in unpacker])
        if self.calls == self.fail_at:
            raise DeliveryError("scripted: connection dropped before the ack")

    async def close(self) -> None:
        pass


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
