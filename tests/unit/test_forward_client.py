"""ForwardClient against the in-process receiver over real loopback and unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from driver.outputs.forward import codec
from driver.outputs.forward.client import (
    Address,
    ConnectError,
    DeliveryError,
    ForwardClient,
    ForwardError,
    HandshakeFailed,
    TlsSettings,
    parse_address,
    ssl_context,
)
from driver.receiver import Receiver
from tests.unit.receivers import receiver

STATIC = {"container_id": "f" * 64, "container_name": "/app"}


def frames(count: int, *, start: int = 0, max_bytes: int = codec.DEFAULT_MAX_FRAME_BYTES, **kwargs):
    entries = [
        ("stdout", 1_700_000_000 * codec.NS + i, b"line %d" % i, False, False, "", 0) for i in range(count)
    ]
    packed = codec.RecordEncoder(STATIC).encode_batch(entries[start:])
    return codec.encode_records("docker.app", packed, max_bytes=max_bytes, **kwargs)


@contextlib.asynccontextmanager
async def client_for(server: Receiver, **kwargs) -> AsyncIterator[ForwardClient]:
    kwargs = {"connect_timeout": 5.0, "ack_timeout": 5.0, "retry_wait": 0.01, **kwargs}
    client = ForwardClient(str(server.address), **kwargs)
    try:
        yield client
    finally:
        await client.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def logs(records: list[dict]) -> list[str]:
    return [r["record"]["log"] for r in records]


# ---------------------------------------------------------------------------------------------------- address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Address("tcp", "127.0.0.1", 24224)),
        ("tcp://agg:24225", Address("tcp", "agg", 24225)),
        ("agg:24225", Address("tcp", "agg", 24225)),
        ("agg", Address("tcp", "agg", 24224)),
        ("tcp://:5000", Address("tcp", "127.0.0.1", 5000)),
        ("tls://agg.example:24224", Address("tls", "agg.example", 24224)),
        ("tcp+tls://agg:1", Address("tls", "agg", 1)),
        ("TCP://agg:2", Address("tcp", "agg", 2)),
        ("tcp://[::1]:24224", Address("tcp", "::1", 24224)),
        ("unix:///run/fluent.sock", Address("unix", path="/run/fluent.sock")),
        # Accepted by Docker's fluentd driver too (moby daemon/logger/fluentd/fluentd.go parseAddress): an
        # address without a host is 127.0.0.1, without a port 24224, and any name is a host (it may not resolve:
        # then the destination is down, which is not an error at docker run).
        ("tcp://", Address("tcp", "127.0.0.1", 24224)),
        ("tcp://agg:", Address("tcp", "agg", 24224)),
        ("garbage", Address("tcp", "garbage", 24224)),
        ("127.0.0.1", Address("tcp", "127.0.0.1", 24224)),
        ("tcp://user@agg:7", Address("tcp", "agg", 7)),
        ("tcp://my_service.local:7", Address("tcp", "my_service.local", 7)),
        ("tcp://bücher.example:7", Address("tcp", "bücher.example", 7)),
        ("tls://[fe80::1]:7", Address("tls", "fe80::1", 7)),
        ("unix:///run/my sock", Address("unix", path="/run/my sock")),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("udp://agg:24224", "unsupported scheme"),
        ("unixgram:///x", "unsupported scheme"),
        ("unix://", "unix:///absolute"),
        ("unix://relative/sock", "unix:///absolute"),
        ("tcp://agg:24224/path", "no path"),
        ("tcp://agg:99999", "port"),
        ("tcp://agg:http", "port"),
        ("tcp://agg:0", "port"),
        # Refused by Go's url.Parse / strconv.ParseUint(port, 10, 16) in Docker's parser as well:
        ("tcp://agg:65536", "port"),
        ("agg:70000", "port"),
        ("tcp://agg:-1", "port"),
        ("tcp://agg:+80", "port"),
        ("tcp://agg:\u0668\u0660", "port"),  # Arabic-Indic digits: int() takes them, Go does not
        ("tcp://[::1", "invalid fluentd-address"),
        ("tcp://ag g:1", "spaces and control characters"),
        (" tcp://agg:1", "spaces and control characters"),
        ("tcp://agg:1\n", "spaces and control characters"),
        ("tcp://ag\x00g:1", "spaces and control characters"),
        ("tcp://a{b}:1", "not a host name"),
        ("tcp://[agg]:1", "invalid fluentd-address"),
        # Stricter than Docker (which ignores a query and dials port 0): neither can be meant as an address.
        ("tcp://agg:1?x=y", "no path"),
    ],
)
def test_parse_address_errors(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_address(text)


def test_address_round_trips_through_str():
    for text in ("tcp://agg:1", "tls://[::1]:2", "unix:///a/b"):
        assert str(parse_address(text)) == text


def test_tls_settings_need_a_tls_address():
    with pytest.raises(ValueError, match="not a tls"):
        ForwardClient("tcp://127.0.0.1:1", tls=TlsSettings())


def test_missing_ca_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load TLS files"):
        ssl_context(TlsSettings(ca_file=str(tmp_path / "missing.pem")))


def test_backoff_is_zero_then_doubles_up_to_the_cap():
    client = ForwardClient("tcp://127.0.0.1:1", retry_wait=1.0, max_retry_wait=8.0)
    assert client._backoff_delay(1) == 0.0
    for failures, full in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (30, 8.0)]:
        assert full * 0.5 <= client._backoff_delay(failures) <= full


# ------------------------------------------------------------------------------------------------ delivery


def test_ack_round_trip():
    async def scenario():
        async with receiver() as (server, records), client_for(server) as client:
            batch = frames(2000, max_bytes=20_000)
            assert len(batch) > 1
            for chunk_id, frame in batch:
                await client.send(frame, chunk_id)
            assert client.connected
            assert server.stats.acks == len(batch) and server.stats.connections == 1
            assert logs(records) == [f"line {i}" for i in range(2000)]
            assert records[0]["record"]["container_name"] == "/app"
            assert records[0]["time_ns"] == 1_700_000_000 * codec.NS

    run(scenario())


def test_compressed_frames_round_trip():
    async def scenario():
        async with receiver() as (server, records), client_for(server) as client:
            for chunk_id, frame in frames(500, compress=True):
                await client.send(frame, chunk_id)
            assert len(records) == 500 and server.stats.acks == 1

    run(scenario())


def test_frame_near_fluent_bits_cap_is_accepted():
    async def scenario():
        async with receiver() as (server, records), client_for(server) as client:
            big = [codec.pack_entry(i, {"log": "x" * 16_000}) for i in range(400)]
            batch = codec.encode_records("t", big)
            assert max(len(f) for _, f in batch) > 900_000
            for chunk_id, frame in batch:
                await client.send(frame, chunk_id)
            assert len(records) == 400

    run(scenario())


def test_unix_socket(tmp_path):
    async def scenario():
        path = tmp_path / "fwd.sock"
        async with receiver(listen=f"unix://{path}") as (server, records), client_for(server) as client:
            for chunk_id, frame in frames(10):
                await client.send(frame, chunk_id)
            assert len(records) == 10

    run(scenario())


def test_without_ack_send_returns_after_the_write():
    async def scenario():
        async with receiver() as (server, records), client_for(server, require_ack=False) as client:
            for chunk_id, frame in frames(100, require_ack=False):
                assert chunk_id is None
                await client.send(frame, chunk_id)
            while len(records) < 100:
                await asyncio.sleep(0.01)
            assert server.stats.acks == 0

    run(scenario())


# --------------------------------------------------------------------------------------------------- failures


def test_resend_after_the_receiver_closes_before_acking():
    async def scenario():
        async with receiver(close_before_ack=1) as (server, records), client_for(server) as client:
            [(chunk_id, frame)] = frames(5)
            with pytest.raises(DeliveryError, match="closed by the receiver"):
                await client.send(frame, chunk_id)
            assert not client.connected and client.consecutive_failures == 1
            await client.send(frame, chunk_id)  # the caller resends the same frame
            assert client.consecutive_failures == 0
            assert server.stats.connections == 2 and server.stats.acks == 1
            # at-least-once: the first copy was received before the connection dropped
            assert logs(records) == [f"line {i}" for i in range(5)] * 2

    run(scenario())


def test_ack_timeout_closes_and_raises():
    async def scenario():
        async with receiver(drop_acks=1) as (server, records), client_for(server, ack_timeout=0.2) as client:
            [(chunk_id, frame)] = frames(3)
            with pytest.raises(DeliveryError, match="no ack"):
                await client.send(frame, chunk_id)
            await client.send(frame, chunk_id)
            assert (
                server.stats.acks_withheld == 1 and server.stats.acks == 1 and server.stats.connections == 2
            )

    run(scenario())


async def _serve_replies(reply: bytes) -> tuple[asyncio.Server, str]:
    """A fake server that answers every read with `reply`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(reply)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    "reply", [codec.build_ack("not-my-chunk"), msgpack.packb({"ack": 42}), msgpack.packb(["huh"])]
)
def test_a_wrong_ack_is_a_delivery_error(reply):
    async def scenario():
        server, address = await _serve_replies(reply)
        async with server:
            client = ForwardClient(address, ack_timeout=5)
            [(chunk_id, frame)] = frames(1)
            with pytest.raises(DeliveryError):
                await client.send(frame, chunk_id)
            assert not client.connected
            await client.close()

    run(scenario())


def test_aggregator_down_then_up():
    async def scenario():
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        client = ForwardClient(f"tcp://127.0.0.1:{port}", retry_wait=0.01, max_retry_wait=0.05)
        [(chunk_id, frame)] = frames(4)
        for attempt in (1, 2):
            with pytest.raises(ConnectError, match="cannot connect"):
                await client.send(frame, chunk_id)
            assert client.consecutive_failures == attempt
        async with receiver(listen=f"tcp://127.0.0.1:{port}") as (server, records):
            await client.send(frame, chunk_id)
            assert len(records) == 4
        await client.close()

    run(scenario())


def test_reconnects_after_the_receiver_restarts():
    async def scenario():
        async with receiver() as (server, records):
            port = server.address.port
            client = ForwardClient(str(server.address), retry_wait=0.01)
            [(chunk_id, frame)] = frames(2)
            await client.send(frame, chunk_id)
        # the old connection is dead now; a new receiver on the same port gets the next frame
        async with receiver(listen=f"tcp://127.0.0.1:{port}") as (server2, records2):
            for _ in range(3):  # the first attempt may still see the stale socket as alive
                try:
                    await client.send(frame, chunk_id)
                    break
                except DeliveryError:
                    continue
            assert len(records2) == 2
        await client.close()

    run(scenario())


def test_close_interrupts_the_backoff_wait():
    async def scenario():
        client = ForwardClient("tcp://127.0.0.1:1", retry_wait=3600, max_retry_wait=3600)
        client._failures = 5
        client._next_attempt = asyncio.get_running_loop().time() + 3600
        task = asyncio.create_task(client.send(b"x", None))
        await asyncio.sleep(0)
        await client.close()
        with pytest.raises(ForwardError, match="closed"):
            await task

    run(scenario())


def test_cancelled_send_drops_the_connection():
    async def scenario():
        async with receiver(ack_delay=3600) as (server, records), client_for(server) as client:
            [(chunk_id, frame)] = frames(1)
            task = asyncio.create_task(client.send(frame, chunk_id))
            while not records:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not client.connected and client.consecutive_failures == 0

    run(scenario())


# -------------------------------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("flavour", ["fluent-bit", "fluentd"])
def test_shared_key_handshake(flavour):
    async def scenario():
        async with receiver(flavour=flavour, shared_key="s3cret") as (server, records):
            async with client_for(server, shared_key="s3cret", hostname="node-1") as client:
                for chunk_id, frame in frames(20):
                    await client.send(frame, chunk_id)
            assert len(records) == 20 and server.stats.handshakes_ok == 1

    run(scenario())


@pytest.mark.parametrize(
    ("flavour", "complaint"),
    [("fluent-bit", "closed by the receiver while waiting for PONG"), ("fluentd", "shared_key mismatch")],
)
def test_wrong_shared_key_is_rejected(flavour, complaint):
    async def scenario():
        async with receiver(flavour=flavour, shared_key="right") as (server, records):
            async with client_for(server, shared_key="wrong") as client:
                [(chunk_id, frame)] = frames(1)
                with pytest.raises(HandshakeFailed, match=complaint):
                    await client.send(frame, chunk_id)
            assert records == [] and server.stats.handshakes_refused == 1

    run(scenario())


def test_username_and_password():
    async def scenario():
        async with receiver(shared_key="k", users={"alice": "pw"}) as (server, records):
            async with client_for(server, shared_key="k", username="alice", password="pw") as client:
                [(chunk_id, frame)] = frames(1)
                await client.send(frame, chunk_id)
            async with client_for(server, shared_key="k", username="alice", password="bad") as client:
                with pytest.raises(HandshakeFailed, match="username/password mismatch"):
                    await client.send(frame, chunk_id)
            assert len(records) == 1

    run(scenario())


def test_missing_shared_key_on_the_client_is_explained():
    async def scenario():
        async with receiver(shared_key="k") as (server, records), client_for(server) as client:
            [(chunk_id, frame)] = frames(1)
            with pytest.raises(HandshakeFailed, match="set shared_key"):
                await client.send(frame, chunk_id)

    run(scenario())


def test_shared_key_against_a_receiver_without_one_times_out_clearly():
    async def scenario():
        async with receiver() as (server, records):
            async with client_for(server, shared_key="k", connect_timeout=0.2) as client:
                [(chunk_id, frame)] = frames(1)
                with pytest.raises(ConnectError, match="is shared_key set on the receiver"):
                    await client.send(frame, chunk_id)

    run(scenario())


# -------------------------------------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(cwd: Path, name: str, usage: str) -> None:
    ext = cwd / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        f"keyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
    )
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    cwd = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=logbridge test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)  # fmt: skip
    _leaf(cwd, "server", "serverAuth")
    _leaf(cwd, "client", "clientAuth")
    return cwd


def tls_receiver(pki: Path, **config):
    return receiver(
        listen="tls://127.0.0.1:0",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        **config,
    )


def test_tls_with_a_private_ca(pki):
    async def scenario():
        async with tls_receiver(pki, shared_key="k") as (server, records):
            async with client_for(
                server, tls=TlsSettings(ca_file=str(pki / "ca.pem")), shared_key="k"
            ) as client:
                for chunk_id, frame in frames(50):
                    await client.send(frame, chunk_id)
            assert len(records) == 50

    run(scenario())


def test_tls_verifies_by_default(pki):
    async def scenario():
        async with tls_receiver(pki) as (server, records), client_for(server) as client:
            [(chunk_id, frame)] = frames(1)
            with pytest.raises(ConnectError, match="verification failed"):
                await client.send(frame, chunk_id)
            assert records == []

    run(scenario())


def test_tls_checks_the_server_name(pki):
    async def scenario():
        tls = TlsSettings(ca_file=str(pki / "ca.pem"), server_name="other.example")
        async with tls_receiver(pki) as (server, records), client_for(server, tls=tls) as client:
            [(chunk_id, frame)] = frames(1)
            with pytest.raises(ConnectError, match="verification failed"):
                await client.send(frame, chunk_id)
        tls = TlsSettings(ca_file=str(pki / "ca.pem"), server_name="localhost")
        async with tls_receiver(pki) as (server, records), client_for(server, tls=tls) as client:
            await client.send(frame, chunk_id)
            assert len(records) == 1

    run(scenario())


def test_tls_insecure_skip_verify(pki):
    async def scenario():
        tls = TlsSettings(insecure_skip_verify=True)
        async with tls_receiver(pki) as (server, records), client_for(server, tls=tls) as client:
            [(chunk_id, frame)] = frames(1)
            await client.send(frame, chunk_id)
            assert len(records) == 1

    run(scenario())


def test_tls_client_certificate(pki):
    async def scenario():
        ca = str(pki / "ca.pem")
        with_cert = TlsSettings(
            ca_file=ca, cert_file=str(pki / "client.pem"), key_file=str(pki / "client.key")
        )
        async with tls_receiver(pki, tls_client_ca=ca) as (server, records):
            [(chunk_id, frame)] = frames(1)
            async with client_for(server, tls=with_cert) as client:
                await client.send(frame, chunk_id)
            async with client_for(server, tls=TlsSettings(ca_file=ca)) as client:
                # TLS 1.3 reports a missing client certificate only when the client first reads
                with pytest.raises(ForwardError):
                    await client.send(frame, chunk_id)
            assert len(records) == 1

    run(scenario())


def test_a_server_without_keepalive_gets_a_new_connection_per_frame():
    """Fluentd with deny_keepalive announces keepalive=false in HELO and closes after each response."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        protocol = codec.ServerProtocol(strict=False, shared_key="k", keepalive=False)
        writer.write(protocol.initiate())
        while data := await reader.read(65536):
            for event in protocol.receive_data(data):
                if isinstance(event, codec.PingReceived):
                    writer.write(event.reply)
                elif event.chunk is not None:
                    writer.write(protocol.ack(event.chunk))
                    await writer.drain()
                    writer.close()
                    return

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = ForwardClient(f"tcp://127.0.0.1:{port}", shared_key="k", ack_timeout=5)
            for chunk_id, frame in frames(300, max_bytes=2_000)[:3]:
                await client.send(frame, chunk_id)
                assert not client.connected
            assert len(connections) == 3 and client.consecutive_failures == 0
            await client.close()

    run(scenario())
