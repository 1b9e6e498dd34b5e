"""issue 13.1: forward's window of batches in flight. Acks that come out of order, and a connection lost with the
whole window unacknowledged: the saved cursor never passes an unacknowledged batch, every line is acknowledged once,
the counts are exact, and what goes again keeps its record ids."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from driver.frames import encode_entry
from driver.options import OptionError, parse_options
from driver.outputs.forward import codec
from driver.outputs.forward.client import ForwardClient, Unacked
from tests.unit.test_forward_sink import CID, ScriptedClient, make_sink, records_of

WINDOW = 4
LINES = 80_000  # ~9 batches of 256 KiB of journal


def write_lines(sink, n: int = LINES) -> list[bytes]:
    frames = [encode_entry(("stdout", 10**18 + i, b"line %06d" % i, False, False, "", 0)) for i in range(n)]
    sink.journal.write(b"".join(frames))
    return frames


def offset_of(record: dict) -> int:
    """The journal offset in a record's record_id (forward-record-id)."""
    return int(record["record_id"].rsplit("-", 1)[1], 16)


def saved_pos(sink) -> int:
    """The position a restart would continue from: the cursor file, as a kill leaves it."""
    with open(f"{sink.store.dir}/{sink.name}.json", "rb") as f:
        return json.loads(f.read())["pos"]


async def drain(sink, deadline: float = 60) -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as executor:
        async with asyncio.timeout(deadline):  # a bound on a failure, not a wait for success
            while await sink.step(loop, executor):
                pass


class ReversingClient:
    """Takes every frame and acknowledges nothing until ``hold`` frames wait; then acks them newest first, checking
    each time that the saved cursor is at or before the first entry of every frame still unacked."""

    address = "tcp://reversing:24224"

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.waiting: list[tuple[int, asyncio.Future]] = []  # (journal offset of the frame's first entry, its ack)
        self.sends: list[list[dict]] = []
        self.most_waiting = 0
        self.out_of_order = 0  # acks given while an older frame was unacknowledged
        self.sink = None

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        records = records_of(frame)
        self.sends.append(records)
        ack = asyncio.get_running_loop().create_future()
        self.waiting.append((offset_of(records[0]), ack))
        self.most_waiting = max(self.most_waiting, len(self.waiting))
        if len(self.waiting) >= self.hold:
            self._ack_newest_first()
        return Unacked(ack, None)

    def _ack_newest_first(self) -> None:
        while self.waiting:
            _, ack = self.waiting.pop()
            assert saved_pos(self.sink) <= min(at for at, _ in self.waiting + [(1 << 62, None)])
            self.out_of_order += bool(self.waiting)
            ack.set_result(None)

    async def acked(self, unacked: Unacked) -> None:
        if not unacked.future.done() and len(self.waiting) < self.hold:
            self._ack_newest_first()  # the journal has no more for now: nothing else will come
        await unacked.future

    async def send(self, frame: bytes, chunk_id: str | None) -> None:  # the client API before the window
        await self.acked(await self.submit(frame, chunk_id))

    async def close(self) -> None:
        pass


def test_acks_newest_first_every_line_acked_once_cursor_never_past_an_unacked_batch(tmp_path):
    client = ReversingClient(hold=WINDOW)
    sink = make_sink(tmp_path, client, record_ids=True)
    sink.window = WINDOW  # forward-window (an attribute, so the test runs the same against the code before it)
    client.sink = sink
    frames = write_lines(sink)
    sink.sealed = True  # the container ended: its last batch need not wait for more
    asyncio.run(drain(sink))
    got = [r["log"] for records in client.sends for r in records]
    assert got == [f"line {i:06d}" for i in range(LINES)]  # each once, in order
    assert client.most_waiting == WINDOW and client.out_of_order >= WINDOW - 1
    assert saved_pos(sink) == sink.journal.end == sum(len(f) for f in frames)
    s = sink.saved
    assert (s["acked"], s["forwarded"], s["retried"], s["failures"]) == (LINES, LINES, 0, 0)


class Aggregator:
    """A forward server on the loop. Its first connection takes ``hold`` requests, acks none and closes; later
    connections ack every request."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.connections: list[list[list[dict]]] = []  # per connection, the records of each request
        self.acks_sent = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: list[list[dict]] = []
        self.connections.append(requests)
        first = len(self.connections) == 1
        protocol = codec.ServerProtocol(strict=True)
        while data := await reader.read(65536):
            for event in protocol.receive_data(data):
                requests.append([dict(r) for _, r in event.entries])
                if first and len(requests) == self.hold:
                    writer.close()  # the whole window unacknowledged: a receiver restart, a load balancer's reset
                    return
                if not first:
                    writer.write(protocol.ack(event.chunk))
                    self.acks_sent += 1
        writer.close()


def test_a_connection_lost_with_the_window_unacked_resends_all_of_it_with_the_same_record_ids(tmp_path):
    async def scenario():
        aggregator = Aggregator(hold=WINDOW)
        address = await aggregator.start()
        client = ForwardClient(address, retry_wait=0.01, ack_timeout=30)
        sink = make_sink(tmp_path, client, record_ids=True)
        sink.window = WINDOW
        sink._limit = 64 << 10  # batches of one frame each: the aggregator's requests are then batches
        sink.stats.up = True  # as after an earlier ack: full batches, the window open
        write_lines(sink)
        sink.sealed = True
        try:
            await drain(sink)
        finally:
            await client.close()
            aggregator.server.close()
        return aggregator, sink

    aggregator, sink = asyncio.run(scenario())
    first, *later = aggregator.connections
    assert len(first) == WINDOW  # sent before any ack came
    unacked = {r["log"]: r["record_id"] for request in first for r in request}
    resent = {r["log"]: r["record_id"] for conn in later for request in conn for r in request}
    assert sorted(resent) == [f"line {i:06d}" for i in range(LINES)]  # none lost
    assert set(unacked) < set(resent) and all(resent[log] == rid for log, rid in unacked.items())
    s = sink.saved
    assert (s["acked"], s["forwarded"], s["retried"], s["failures"]) == (LINES, LINES, len(unacked), 1)
    assert saved_pos(sink) == sink.journal.end
    assert CID[:12] in next(iter(unacked.values()))


def test_forward_window_is_a_log_opt_from_1_to_16():
    address = {"fluentd-address": "tcp://agg:24224"}
    assert parse_options(address)["forward-window"] == 4
    assert parse_options({**address, "forward-window": "1"})["forward-window"] == 1
    assert parse_options({**address, "forward-window": "16"})["forward-window"] == 16
    for bad in ("0", "17", "-1", "four"):
        with pytest.raises(OptionError, match="forward-window"):
            parse_options({**address, "forward-window": bad})


def test_after_a_frame_in_flight_failed_nothing_newer_goes_before_its_resend(tmp_path):
    """The connection under the window broke (the 2nd frame's ack will never come) while the window still had
    room: the later batches must not go first on a new connection, out of order and then again."""
    client = ScriptedClient(fail_at=2)
    sink = make_sink(tmp_path, client, record_ids=True)
    sink.window = WINDOW
    sink._limit = 64 << 10  # batches of one frame each: the 2nd frame is the 2nd batch
    sink.stats.up = True
    write_lines(sink)
    sink.sealed = True
    asyncio.run(drain(sink))
    starts = [offset_of(records[0]) for records in client.sends]
    assert starts[2] == starts[1], starts[:4]  # the resend of the failed batch comes next
    assert starts == sorted(starts)  # so the aggregator gets the lines in order, the failed batch twice
    got = [r["log"] for records in client.sends for r in records]
    assert sorted(set(got)) == [f"line {i:06d}" for i in range(LINES)]
    s = sink.saved
    assert (s["acked"], s["failures"], s["retried"]) == (LINES, 1, len(client.sends[1]))


class SlowAckClient:
    """Acknowledges every frame, each ack taking ``delay`` seconds to arrive (a slow aggregator)."""

    address = "tcp://slow:24224"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.frames = 0

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        self.frames += 1
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return Unacked(ack, None)

    async def acked(self, unacked: Unacked) -> None:
        await asyncio.sleep(self.delay)
        await unacked.future

    async def close(self) -> None:
        pass


def test_time_with_the_window_full_is_measured_only_while_more_waits(tmp_path):
    """window_full_s (logged when a container's logs are delivered): each ack the sink waits for with the window full
    and more to send counts in full; waiting with nothing more to send is not the destination setting the pace."""
    delay = 0.05
    client = SlowAckClient(delay)
    sink = make_sink(tmp_path / "a", client)
    sink.window = 1
    write_lines(sink)
    sink.sealed = True
    asyncio.run(drain(sink))
    batches = client.frames
    assert batches >= 5 and sink.saved["acked"] == LINES
    assert sink.stats.window_full_s >= delay * (batches - 1)  # the last ack: nothing more was waiting

    one = SlowAckClient(delay)
    sink = make_sink(tmp_path / "b", one)
    sink.window = 1
    write_lines(sink, 100)  # one batch: nothing waits behind its ack
    sink.sealed = True
    asyncio.run(drain(sink))
    assert one.frames == 1 and sink.stats.window_full_s == 0


class HeldAckClient:
    """Takes every frame and acknowledges one only when the test says so."""

    address = "tcp://held:24224"

    def __init__(self) -> None:
        self.sends: list[list[dict]] = []
        self.acks: list[asyncio.Future] = []

    async def submit(self, frame: bytes, chunk_id: str | None) -> Unacked:
        self.sends.append(records_of(frame))
        self.acks.append(asyncio.get_running_loop().create_future())
        return Unacked(self.acks[-1], None)

    async def acked(self, unacked: Unacked) -> None:
        await unacked.future

    async def close(self) -> None:
        pass


def test_with_a_batch_in_flight_only_a_whole_batch_goes_before_its_ack(tmp_path):
    """Nagle's rule for batches: a short batch sent behind one in flight costs a whole batch's work (a step, a
    worker-thread hand-off, a write, an ack, a cursor save) for a few lines. Lines that arrive while a batch is in
    flight wait for its ack, unless a whole batch of them is there; then every line goes, once, in order."""
    client = HeldAckClient()
    sink = make_sink(tmp_path, client)
    sink.window = WINDOW
    sink.stats.up = True  # the aggregator answered before: no probing

    async def until(cond, what: str) -> None:
        async with asyncio.timeout(10):  # a bound on a failure, not a wait for success
            while not cond():
                await asyncio.sleep(0.005)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            async def steps() -> None:
                while await sink.step(loop, executor) or not sink.sealed:
                    await asyncio.sleep(0.001)
            stepping = asyncio.ensure_future(steps())
            try:
                write_lines(sink, 100)
                sink.journal_grew()
                await until(lambda: len(client.sends) == 1, "the first batch")
                sink.journal.write(b"".join(encode_entry(("stdout", 10**18, b"late %06d" % i, False, False, "", 0))
                                            for i in range(100)))
                sink.journal_grew()
                for _ in range(20):  # steps had every chance to send the 100 late lines
                    await asyncio.sleep(0.005)
                assert len(client.sends) == 1
                sink.journal.write(b"".join(encode_entry(("stdout", 10**18, b"more %06d" % i, False, False, "", 0))
                                            for i in range(10_000)))  # more than a batch of journal
                sink.journal_grew()
                await until(lambda: len(client.sends) >= 2, "a whole batch behind the first")
                second = [r["log"] for records in client.sends[1:] for r in records]  # its frames
                assert second[:101] == [f"late {i:06d}" for i in range(100)] + ["more 000000"]
                assert len(second) > 6000  # a whole batch (256 KiB of journal: ~7,400 of these lines)
                sink.sealed = True
                while not sink.caught_up():
                    for ack in client.acks:
                        if not ack.done():
                            ack.set_result(None)
                    await asyncio.sleep(0.005)
            finally:
                stepping.cancel()
    asyncio.run(scenario())
    got = [r["log"] for records in client.sends for r in records]
    assert got == ([f"line {i:06d}" for i in range(100)] + [f"late {i:06d}" for i in range(100)]
                   + [f"more {i:06d}" for i in range(10_000)])
    assert sink.saved["acked"] == 10_200
