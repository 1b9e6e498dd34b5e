"""driver.receiver: raw bytes on real sockets, and the CLI as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from driver.outputs.forward import codec
from driver.outputs.forward.client import ForwardClient
from driver.receiver import Receiver, ReceiverConfig, record_line
from tests.unit.receivers import receiver

REPO = Path(__file__).resolve().parents[2]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def raw_connection(server: Receiver):
    reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the receiver sends until it closes the connection."""
    return await reader.read()


def message(chunk: str | None = "c1", **record: str) -> bytes:
    return codec.encode_message(
        "t", 1_700_000_000, record or {"log": "hi"}, {"chunk": chunk} if chunk else {}
    )


# ----------------------------------------------------------------------------------------- fluent-bit: strict

MALFORMED = {
    "nil heartbeat": b"\xc0",
    "bin tag": msgpack.packb([b"t", 1, {"a": "b"}, {"chunk": "c"}], use_bin_type=True),
    "non-map option": msgpack.packb(["t", 1, {"a": "b"}, "chunk"]),
    "bin chunk": msgpack.packb(["t", 1, {"a": "b"}, {"chunk": b"c"}], use_bin_type=True),
    "float time": msgpack.packb(["t", 1.5, {"a": "b"}]),
    "not an array": msgpack.packb({"tag": "t"}),
    "invalid msgpack": b"\xc1",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_fluent_bit_flavour_closes_on_malformed_input(name):
    async def scenario():
        async with receiver() as (server, records), raw_connection(server) as (reader, writer):
            # a good request first (acked), then the bad one, then a good one that must not be processed
            writer.write(message("good") + MALFORMED[name] + message("after"))
            replies = await read_until_eof(reader)
            assert replies == codec.build_ack("good")
            assert len(records) == 1 and server.stats.protocol_errors == 1

    run(scenario())


def test_fluent_bit_flavour_closes_on_an_oversized_request():
    async def scenario():
        async with (
            receiver(max_request=10_000) as (server, records),
            raw_connection(server) as (reader, writer),
        ):
            writer.write(message(log="x" * 20_000))
            assert await read_until_eof(reader) == b""
            assert records == [] and server.stats.protocol_errors == 1

    run(scenario())


def test_the_default_limit_is_fluent_bits():
    assert ReceiverConfig().request_limit == 6_144_000
    assert ReceiverConfig(flavour="fluentd").request_limit is None
    assert ReceiverConfig(max_request=0).request_limit is None


def test_acks_are_msgpack_str():
    async def scenario():
        async with receiver() as (server, records), raw_connection(server) as (reader, writer):
            writer.write(message("QUJDRA==\n"))  # Fluentd-style id with its newline, echoed as is
            ack = await reader.readexactly(len(codec.build_ack("QUJDRA==\n")))
            assert ack == b"\x81\xa3ack\xa9QUJDRA==\n"

    run(scenario())


def test_no_ack_without_chunk():
    async def scenario():
        async with receiver() as (server, records), raw_connection(server) as (reader, writer):
            writer.write(message(None) + message("only"))
            assert await reader.readexactly(len(codec.build_ack("only"))) == codec.build_ack("only")
            assert len(records) == 2

    run(scenario())


def test_helo_nonce_is_str_in_fluent_bit_flavour_and_bin_in_fluentd_flavour():
    async def helo(flavour: str) -> object:
        async with (
            receiver(flavour=flavour, shared_key="k") as (server, _),
            raw_connection(server) as (reader, _w),
        ):
            unpacker = msgpack.Unpacker(raw=True)
            while True:
                unpacker.feed(await reader.read(4096))
                for obj in unpacker:
                    return obj

    async def scenario():
        fb = await helo("fluent-bit")
        assert fb[0] == b"HELO" and set(fb[1]) == {b"nonce", b"auth"} and len(fb[1][b"nonce"]) == 16
        fd = await helo("fluentd")
        assert fd[1][b"keepalive"] is True

    run(scenario())
    # the types themselves: the str/bin distinction is lost by raw=True, so check the bytes
    fb_bytes = codec.build_helo(b"n" * 16, b"a" * 16, style="fluent-bit")
    assert b"\xa5nonce\xb0" in fb_bytes


def test_docker_builtin_driver_shape_is_accepted():
    """What fluent-logger-golang sends for dockerd: one Message per line, int time, option map, str chunk."""

    async def scenario():
        async with receiver() as (server, records), raw_connection(server) as (reader, writer):
            record = {"container_id": "c" * 64, "container_name": "/web", "source": "stdout", "log": "hello"}
            writer.write(codec.encode_message("docker.web", 1_795_701_071, record, {}))
            writer.write(
                codec.encode_message("docker.web", codec.EventTime(1_795_701_071, 5), record, {"chunk": "x"})
            )
            assert await reader.readexactly(len(codec.build_ack("x"))) == codec.build_ack("x")
            assert [r["time_ns"] for r in records] == [1_795_701_071 * codec.NS, 1_795_701_071 * codec.NS + 5]
            assert records[0]["record"] == record and records[0]["tag"] == "docker.web"

    run(scenario())


# ------------------------------------------------------------------------------------------- fluentd: lenient


def test_fluentd_flavour_ignores_nil_and_keeps_the_connection():
    async def scenario():
        async with (
            receiver(flavour="fluentd") as (server, records),
            raw_connection(server) as (reader, writer),
        ):
            writer.write(b"\xc0" + msgpack.packb(["t", 1.5, {"a": "b"}, {"chunk": "bad"}]) + message("ok"))
            expected = codec.build_ack("bad") + codec.build_ack("ok")  # invalid events are dropped but acked
            assert await reader.readexactly(len(expected)) == expected
            assert len(records) == 1 and server.stats.skipped == 1

    run(scenario())


def test_fluentd_flavour_accepts_json():
    async def scenario():
        async with (
            receiver(flavour="fluentd") as (server, records),
            raw_connection(server) as (reader, writer),
        ):
            writer.write(b'["tag.json", 1700000000, {"log": "hi"}, {"chunk": "j1"}]')
            assert await reader.readexactly(len(b'{"ack": "j1"}')) == b'{"ack": "j1"}'
            assert records[0]["record"] == {"log": "hi"} and records[0]["tag"] == "tag.json"

    run(scenario())


def test_fluentd_flavour_drops_oversized_requests_without_ack():
    async def scenario():
        async with receiver(flavour="fluentd", max_request=1000) as (server, records):
            async with raw_connection(server) as (reader, writer):
                writer.write(message("big", log="x" * 5000) + message("small"))
                assert await reader.readexactly(len(codec.build_ack("small"))) == codec.build_ack("small")
                assert len(records) == 1 and server.stats.ignored == 1

    run(scenario())


# ------------------------------------------------------------------------------------------------ test knobs


def test_ack_delay_still_acks():
    async def scenario():
        async with receiver(ack_delay=0.05) as (server, records), raw_connection(server) as (reader, writer):
            writer.write(message("late"))
            assert await reader.readexactly(len(codec.build_ack("late"))) == codec.build_ack("late")

    run(scenario())


def test_close_before_ack_then_normal():
    async def scenario():
        async with receiver(close_before_ack=1) as (server, records):
            async with raw_connection(server) as (reader, writer):
                writer.write(message("first"))
                assert await read_until_eof(reader) == b""
            async with raw_connection(server) as (reader, writer):
                writer.write(message("second"))
                assert await reader.readexactly(len(codec.build_ack("second"))) == codec.build_ack("second")
            assert len(records) == 2 and server.stats.closed_before_ack == 1

    run(scenario())


def test_stop_with_a_connection_waiting_in_ack_delay():
    async def scenario():
        async with receiver(ack_delay=3600) as (server, records), raw_connection(server) as (reader, writer):
            writer.write(message("never"))
            while not records:
                await asyncio.sleep(0.01)
            await server.stop()
            assert await read_until_eof(reader) == b""

    run(scenario())


def test_record_line_escapes_invalid_utf8():
    record = {"log": "ok \udcff\udcfe", "bin": b"\xff", 1: "int key", "nested": {"t": codec.EventTime(1, 2)}}
    line = record_line("tag", codec.EventTime(1, 500_000_000), record)
    assert line == {
        "tag": "tag",
        "time": 1.5,
        "time_ns": 1_500_000_000,
        "record": {"log": "ok \\xff\\xfe", "bin": "\\xff", "1": "int key", "nested": {"t": 1_000_000_002}},
    }
    json.dumps(line)


# ------------------------------------------------------------------------------------------------------- CLI


class ReceiverProcess:
    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driver.receiver", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_head: list[str] = []
        self.address = self._wait_listening()

    def _wait_listening(self) -> str:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_head.append(line)
            found = re.search(r"listening on (\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError("receiver exited before listening: " + "".join(self.stderr_head))

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, "".join(self.stderr_head) + err


@pytest.fixture
def cli(tmp_path):
    started: list[ReceiverProcess] = []

    def start(*args: str) -> ReceiverProcess:
        process = ReceiverProcess(*args, cwd=tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


async def send_lines(address: str, count: int, **client) -> None:
    entries = [
        ("stderr", i * codec.NS, f"line {i} \u00e9".encode(), False, False, "", 0) for i in range(count)
    ]
    packed = codec.RecordEncoder({"container_id": "a" * 64, "container_name": "/cli"}).encode_batch(entries)
    forward = ForwardClient(address, ack_timeout=10, **client)
    for chunk_id, frame in codec.encode_records("cli.tag", packed, max_bytes=4000):
        await forward.send(frame, chunk_id)
    await forward.close()


def test_cli_prints_json_lines_and_exits_cleanly_on_sigterm(cli):
    proc = cli("--listen", "tcp://127.0.0.1:0", "--shared-key", "k")
    run(send_lines(proc.address, 100, shared_key="k"))
    code, out, err = proc.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["record"]["log"] for line in lines] == [f"line {i} \u00e9" for i in range(100)]
    assert lines[3] == {
        "tag": "cli.tag",
        "time": 3.0,
        "time_ns": 3 * codec.NS,
        "record": {
            "container_id": "a" * 64,
            "container_name": "/cli",
            "source": "stderr",
            "log": "line 3 \u00e9",
        },
    }
    assert "handshake ok" in err and "connected" in err and '"records": 100' in err


def test_cli_count_only_and_output_file(cli, tmp_path):
    out_file = tmp_path / "records.jsonl"
    proc = cli("--listen", "tcp://127.0.0.1:0", "--output", str(out_file))
    run(send_lines(proc.address, 10))
    assert proc.stop()[0] == 0
    assert len(out_file.read_text().splitlines()) == 10

    counting = cli("--listen", "tcp://127.0.0.1:0", "--count-only")
    run(send_lines(counting.address, 25))
    code, out, _ = counting.stop()
    assert code == 0
    [summary] = [json.loads(line) for line in out.splitlines()]
    assert (
        summary["summary"]["records"] == 25 and summary["summary"]["acks"] == summary["summary"]["requests"]
    )


def test_cli_unix_socket_and_sigint(cli, tmp_path):
    sock = tmp_path / "recv.sock"
    proc = cli("--listen", f"unix://{sock}", "--flavour", "fluentd")
    run(send_lines(f"unix://{sock}", 5))
    proc.proc.send_signal(signal.SIGINT)
    out, _ = proc.proc.communicate(timeout=30)
    assert proc.proc.returncode == 0 and len(out.splitlines()) == 5
    assert not sock.exists()


def test_cli_closes_on_malformed_input(cli):
    proc = cli("--listen", "tcp://127.0.0.1:0")

    async def poke() -> bytes:
        host, port = proc.address.removeprefix("tcp://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"\xc0")
        data = await reader.read()
        writer.close()
        return data

    assert run(poke()) == b""
    code, _, err = proc.stop()
    assert code == 0 and "expected an array, got a nil heartbeat" in err


def test_cli_rejects_a_tls_listener_without_a_certificate(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "driver.receiver", "--listen", "tls://127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--tls-cert" in done.stderr


def test_a_record_nested_deeper_than_json_can_print_is_acked_and_shown_as_such():
    """msgpack nests to 1024 levels, Python's JSON gives up near 1000: the record is valid (Fluent Bit takes it),
    so it is acked and its line says why it could not be printed, instead of the connection dying."""

    async def scenario():
        deep: object = "bottom"
        for _ in range(1000):
            deep = [deep]
        async with receiver() as (server, records), raw_connection(server) as (reader, writer):
            writer.write(codec.encode_message("t", 1, {"log": "deep", "deep": deep}, {"chunk": "d"}) + message("n"))
            acks = codec.build_ack("d") + codec.build_ack("n")
            assert await reader.readexactly(len(acks)) == acks
            assert records[0]["record"] == {"_receiver_error": "record nested too deep to print as JSON"}
            assert records[1]["record"] == {"log": "hi"}

    run(scenario())
