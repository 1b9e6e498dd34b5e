"""Fluent forward codec: bytes in, bytes/events out."""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driver.outputs.forward import codec
from driver.outputs.forward.codec import (
    Ack,
    ClientProtocol,
    CompressedPackedForward,
    EventTime,
    Forward,
    HandshakeError,
    Helo,
    Ignored,
    Message,
    PackedForward,
    PingReceived,
    ProtocolError,
    RecordEncoder,
    ServerProtocol,
)

CID = "c" * 64
STATIC = {"container_id": CID, "container_name": "/web"}


def entry(line: bytes = b"hello", *, source: str = "stdout", time_nano: int = 1_700_000_000_123_456_789):
    return (source, time_nano, line, False, False, "", 0)


def raw_unpack(data: bytes) -> object:
    """Unpack keeping str and bin apart, str as exact bytes."""
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape", ext_hook=codec._ext_hook)


def decode_all(data: bytes, **kwargs) -> list:
    server = ServerProtocol(**kwargs)
    return server.receive_data(data)


# ------------------------------------------------------------------------------------------------------- time


def test_event_time_exact_bytes():
    # 1700000000 = 0x6553F100, 123456789 = 0x075BCD15; fixext 8 (0xd7), ext type 0.
    assert codec.pack_time(1_700_000_000_123_456_789) == bytes.fromhex("d700 6553f100 075bcd15")


def test_integer_time_exact_bytes():
    assert codec.pack_time(1_700_000_000_999_999_999, "integer") == bytes.fromhex("ce 6553f100")


def test_time_is_clamped_to_what_event_time_carries():
    assert codec.pack_time(-5) == bytes.fromhex("d700 00000000 00000000")
    # 0xFFFFFFFF and 0xFFFFFFFE are Fluent Bit's group markers: never send them.
    assert codec.pack_time((1 << 32) * codec.NS) == bytes.fromhex("d700 fffffffd 00000000")


def test_event_time_round_trip():
    t = EventTime.from_ns(1_700_000_000_000_000_001)
    assert t == EventTime(1_700_000_000, 1)
    assert codec.time_to_ns(t) == 1_700_000_000_000_000_001
    assert codec.time_to_ns(12) == 12 * codec.NS
    assert codec.time_to_ns(1.5) == 1_500_000_000


# ---------------------------------------------------------------------------------------------------- records


def test_record_encoder_exact_bytes():
    packed = RecordEncoder({"container_id": "c", "container_name": "/n"}).encode(
        ("stdout", 1_500_000_001, b"hi", False, False, "", 0)
    )
    expected = (
        b"\x92"
        + bytes.fromhex("d700 00000001 1dcd6501")
        + b"\x84"
        + b"\xaccontainer_id\xa1c"
        + b"\xaecontainer_name\xa2/n"
        + b"\xa6source\xa6stdout"
        + b"\xa3log\xa2hi"
    )
    assert packed == expected


def test_record_layout_matches_docker():
    static = {**STATIC, "com.example.team": "payments"}
    rec = codec.record_for(("stderr", 1, b"line", True, False, "pid-1", 2), static)
    assert list(rec) == [
        "container_id",
        "container_name",
        "source",
        "log",
        "com.example.team",
        "partial_message",
        "partial_id",
        "partial_ordinal",
        "partial_last",
    ]
    assert rec["partial_message"] == "true"
    assert rec["partial_ordinal"] == "2"
    assert rec["partial_last"] == "false"
    assert rec["log"] == b"line"


def test_extras_override_fixed_keys_like_docker():
    rec = codec.record_for(entry(b"x"), {**STATIC, "source": "label-value"})
    assert rec["source"] == "label-value"
    decoded = raw_unpack(RecordEncoder({**STATIC, "source": "label-value"}).encode(entry(b"x")))
    assert decoded[1]["source"] == "label-value"


def test_log_bytes_go_out_as_str_even_when_not_utf8():
    packed = RecordEncoder(STATIC).encode(entry(b"\xff\xfe bad"))
    # The log value sits right after the key "log" and is a fixstr (0xa0 | 6), never bin (0xc4).
    at = packed.index(b"\xa3log") + 4
    assert packed[at] == 0xA0 | 6
    assert packed[at + 1 : at + 7] == b"\xff\xfe bad"


def test_invalid_utf8_can_be_replaced_at_the_source():
    encoder = RecordEncoder(STATIC, invalid_utf8="replace")
    lines = [b"plain", "caf\u00e9".encode(), b"bad \xff end"]
    decoded = [raw_unpack(b)[1]["log"] for b in encoder.encode_batch([entry(line) for line in lines])]
    assert decoded == ["plain", "caf\u00e9", "bad \ufffd end"]


@pytest.mark.parametrize("size", [0, 31, 32, 255, 256, 65535, 65536])
def test_str_headers_at_boundaries(size):
    line = b"x" * size
    decoded = raw_unpack(RecordEncoder(STATIC).encode(entry(line)))
    assert decoded[1]["log"] == line.decode()


def test_static_strings_are_str_not_bin():
    packed = RecordEncoder(STATIC).encode(entry())
    assert b"\xc4" not in packed[:20] and b"\xc5" not in packed and b"\xc6" not in packed


_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20)
_static = st.dictionaries(_text, _text, max_size=6).map(lambda d: {**STATIC, **d})
_entries = st.tuples(
    st.sampled_from(["stdout", "stderr"]),
    st.integers(min_value=-(10**9), max_value=(1 << 33) * codec.NS),
    st.binary(max_size=300),
    st.booleans(),
    st.booleans(),
    _text,
    st.integers(min_value=1, max_value=10**6),
)


@settings(max_examples=300, deadline=None)
@given(
    static=_static,
    entries=st.lists(_entries, max_size=8),
    time_format=st.sampled_from(["event_time", "integer"]),
)
def test_fast_encoder_equals_generic_packing(static, entries, time_format):
    fast = RecordEncoder(static, time_format=time_format).encode_batch(entries)
    generic = [codec.pack_entry(e[1], codec.record_for(e, static), time_format) for e in entries]
    assert [raw_unpack(b) for b in fast] == [raw_unpack(b) for b in generic]


# ----------------------------------------------------------------------------------------------------- frames


def test_packed_forward_layout():
    entries = RecordEncoder(STATIC).encode_batch([entry(b"a"), entry(b"b")])
    [(chunk_id, frame)] = codec.encode_records("docker.web", entries)
    tag = b"\xaadocker.web"
    blob = b"".join(entries)
    assert frame.startswith(b"\x93" + tag + b"\xdb" + struct.pack(">I", len(blob)) + blob)
    option = raw_unpack(frame[1 + len(tag) + 5 + len(blob) :])
    assert option == {"size": 2, "chunk": chunk_id}
    # base64 of 16 random bytes, as fluent-logger makes them; packed as str
    assert len(base64.b64decode(chunk_id, validate=True)) == 16
    assert frame.endswith(b"\xa5chunk\xb8" + chunk_id.encode())


def test_no_chunk_without_ack():
    [(chunk_id, frame)] = codec.encode_records("t", [codec.pack_entry(1, {"a": "b"})], require_ack=False)
    assert chunk_id is None
    [event] = decode_all(frame)
    assert event.option == {"size": 1} and event.chunk is None


def test_compressed_packed_forward():
    entries = RecordEncoder(STATIC).encode_batch([entry(b"x" * 100)] * 50)
    [(chunk_id, frame)] = codec.encode_records("t", entries, compress=True)
    decoded = raw_unpack(frame)
    assert decoded[2] == {"size": 50, "chunk": chunk_id, "compressed": "gzip"}
    assert gzip.decompress(decoded[1].encode("utf-8", "surrogateescape")) == b"".join(entries)
    [event] = decode_all(frame)
    assert isinstance(event, CompressedPackedForward) and len(event.entries) == 50


def test_frames_split_at_the_cap_and_keep_order():
    entries = [codec.pack_entry(i, {"log": "x" * 50, "i": str(i)}) for i in range(500)]
    frames = codec.encode_records("tag", entries, max_bytes=2_000)
    assert len(frames) > 10
    assert all(len(frame) <= 2_000 for _, frame in frames)
    got = [rec["i"] for _, frame in frames for event in decode_all(frame) for _, rec in event.entries]
    assert got == [str(i) for i in range(500)]
    assert len({chunk for chunk, _ in frames}) == len(frames)


def test_an_entry_over_the_cap_gets_a_frame_of_its_own():
    small, big = codec.pack_entry(1, {"log": "s"}), codec.pack_entry(2, {"log": "b" * 5_000})
    builder = codec.BatchBuilder("t", max_bytes=1_000)
    assert builder.add(small) is None
    closed = builder.add(big)
    assert closed is not None and closed.count == 1
    last = builder.flush()
    assert last is not None and last.count == 1 and len(last.data) > 5_000
    assert builder.flush() is None


def test_batch_builder_counts_and_extend_agree_with_add():
    entries = [codec.pack_entry(i, {"log": "y" * (i % 90)}) for i in range(300)]
    ids = iter(range(10**6))
    b1 = codec.BatchBuilder("t", max_bytes=1_500, chunk_ids=lambda: str(next(ids)))
    via_extend = b1.extend(entries) + [b1.flush()]
    ids = iter(range(10**6))
    b2 = codec.BatchBuilder("t", max_bytes=1_500, chunk_ids=lambda: str(next(ids)))
    via_add = [f for f in (b2.add(e) for e in entries) if f] + [b2.flush()]
    assert via_extend == via_add
    assert sum(f.count for f in via_extend) == 300


def test_builder_frames_equal_packed_forward():
    entries = [codec.pack_entry(i, {"log": "z"}) for i in range(3)]
    builder = codec.BatchBuilder("t", chunk_ids=lambda: "fixed")
    builder.extend(entries)
    frame = builder.flush()
    assert frame is not None
    assert frame.data == codec.packed_forward("t", b"".join(entries), 3, chunk_id="fixed")


def test_message_mode_like_dockers_driver():
    frame = codec.encode_message(
        "docker.x", 1_700_000_000, {"log": "hi", "source": "stdout"}, {"chunk": "abc"}
    )
    assert frame[0] == 0x94
    [event] = decode_all(frame)
    assert isinstance(event, Message)
    assert event.entries == [(1_700_000_000, {"log": "hi", "source": "stdout"})]
    assert event.chunk == b"abc"


def test_forward_mode():
    frame = codec.encode_forward("t", [(EventTime(1, 2), {"a": "b"}), (3, {"c": "d"})])
    [event] = decode_all(frame)
    assert isinstance(event, Forward)
    assert event.entries == [(EventTime(1, 2), {"a": "b"}), (3, {"c": "d"})]


def test_fluent_bit_v2_entry_shape_is_accepted():
    entries = msgpack.packb([[msgpack.ExtType(0, struct.pack(">II", 1, 0)), {"m": 1}], {"a": "b"}])
    frame = msgpack.packb(["t", entries, {}], use_bin_type=True)
    [event] = decode_all(frame)
    assert event.entries == [(EventTime(1, 0), {"a": "b"})]


# -------------------------------------------------------------------------------------------------------- ack


def test_ack_is_a_str_echo():
    assert codec.build_ack("abc") == b"\x81\xa3ack\xa3abc"
    # Fluentd's chunk ids end in "\n": echoed byte for byte
    assert raw_unpack(codec.build_ack(b"QUJD\n")) == {"ack": "QUJD\n"}


def test_client_parses_acks_in_str_and_bin():
    client = ClientProtocol(hostname="node")
    events = client.receive_data(codec.build_ack("id1") + msgpack.packb({"ack": b"id2"}, use_bin_type=True))
    assert events == [Ack(b"id1"), Ack(b"id2")]


def test_client_parses_replies_split_anywhere():
    client = ClientProtocol(hostname="node")
    data = codec.build_ack("0123456789")
    events = [e for i in range(len(data)) for e in client.receive_data(data[i : i + 1])]
    assert events == [Ack(b"0123456789")]


def test_client_rejects_garbage_replies():
    with pytest.raises(ProtocolError):
        ClientProtocol(hostname="node").receive_data(msgpack.packb([1, 2, 3]))
    with pytest.raises(ProtocolError):
        ClientProtocol(hostname="node").receive_data(b"\xc1")


# -------------------------------------------------------------------------------------------------- handshake


NONCE = bytes(range(16))
AUTH = bytes(range(100, 116))


def spec_digest(*parts: bytes) -> str:
    """The spec formula, written out independently of the codec."""
    return hashlib.sha512(b"".join(parts)).hexdigest()


def test_digests_follow_the_spec_formula():
    assert codec.shared_key_digest("salt", "client", NONCE, "key") == spec_digest(
        b"salt", b"client", NONCE, b"key"
    )
    assert codec.password_digest(AUTH, "user", "pw") == spec_digest(AUTH, b"user", b"pw")
    assert len(codec.shared_key_digest("s", "h", NONCE, "k")) == 128


def test_digest_known_value():
    # printf 'saltclientNNNNNNNNNNNNNNNNkey' | sha512sum
    expected = (
        "9f67e3ff894d6310fd15b9b9a41caa26187eefb50db816486aa89e3d1349258b"
        "b7659b3f7a91e11e70309650103db4436f416cd379c6aa67560ae0093be20f96"
    )
    assert codec.shared_key_digest("salt", "client", b"N" * 16, "key") == expected


def test_ping_fields_and_digests():
    ping = raw_unpack(
        codec.build_ping(
            hostname="node-1", salt="s" * 32, nonce=NONCE, shared_key="k", auth=AUTH, username="u"
        )
    )
    assert ping == [
        "PING",
        "node-1",
        "s" * 32,
        spec_digest(b"s" * 32, b"node-1", NONCE, b"k"),
        "u",
        spec_digest(AUTH, b"u", b""),
    ]
    no_auth = raw_unpack(codec.build_ping(hostname="n", salt="s", nonce=NONCE, shared_key="k"))
    assert no_auth[4:] == ["", ""]


def test_helo_styles():
    fb = codec.build_helo(NONCE, AUTH, style="fluent-bit")
    assert b"\xa5nonce\xb0" + NONCE in fb  # str of 16 bytes, like Fluent Bit
    assert b"keepalive" not in fb
    fd = codec.build_helo(NONCE, AUTH, style="fluentd")
    assert b"\xa5nonce\xc4\x10" + NONCE in fd  # bin, like Fluentd
    client = ClientProtocol(hostname="n", shared_key="k")
    assert client.receive_data(fb) == [Helo(NONCE, AUTH, True)]
    assert client.receive_data(fd) == [Helo(NONCE, AUTH, True)]


def handshake(server: ServerProtocol, client: ClientProtocol) -> PingReceived:
    [helo] = client.receive_data(server.initiate())
    assert isinstance(helo, Helo)
    [event] = server.receive_data(client.ping(helo))
    assert isinstance(event, PingReceived)
    return event


@pytest.mark.parametrize("strict", [True, False])
def test_handshake_round_trip(strict):
    server = ServerProtocol(
        strict=strict, shared_key="secret", self_hostname="agg", nonce=NONCE, auth_salt=AUTH
    )
    client = ClientProtocol(hostname="node", shared_key="secret", salt="ab" * 16)
    event = handshake(server, client)
    assert event.accepted and event.hostname == "node"
    pong = raw_unpack(event.reply)
    assert pong == ["PONG", True, "", "agg", spec_digest(b"ab" * 16, b"agg", NONCE, b"secret")]
    [parsed] = client.receive_data(event.reply)
    client.check_pong(parsed)
    assert server.established
    [request] = server.receive_data(codec.encode_message("t", 1, {"a": "b"}))
    assert request.entries == [(1, {"a": "b"})]


def test_wrong_key_fluent_bit_closes_without_pong():
    server = ServerProtocol(strict=True, shared_key="right")
    event = handshake(server, ClientProtocol(hostname="node", shared_key="wrong"))
    assert not event.accepted and event.reply is None and event.reason == "shared_key mismatch"
    with pytest.raises(ProtocolError):
        server.receive_data(codec.encode_message("t", 1, {}))


def test_wrong_key_fluentd_answers_pong_false():
    server = ServerProtocol(strict=False, shared_key="right")
    client = ClientProtocol(hostname="node", shared_key="wrong")
    event = handshake(server, client)
    assert not event.accepted
    assert raw_unpack(event.reply) == ["PONG", False, "shared_key mismatch", "", ""]
    [pong] = client.receive_data(event.reply)
    with pytest.raises(HandshakeError, match="shared_key mismatch"):
        client.check_pong(pong)


def test_client_rejects_a_pong_with_a_wrong_digest():
    client = ClientProtocol(hostname="node", shared_key="k")
    client.receive_data(codec.build_helo(NONCE, b""))
    client.ping(Helo(NONCE, b""))
    with pytest.raises(HandshakeError, match="digest"):
        client.check_pong(codec.Pong(True, "", b"agg", b"0" * 128))


@pytest.mark.parametrize("strict", [True, False])
def test_user_auth(strict):
    users = {"alice": "pw"}
    ok = handshake(
        ServerProtocol(strict=strict, shared_key="k", users=users),
        ClientProtocol(hostname="n", shared_key="k", username="alice", password="pw"),
    )
    assert ok.accepted and ok.username == "alice"
    bad = handshake(
        ServerProtocol(strict=strict, shared_key="k", users=users),
        ClientProtocol(hostname="n", shared_key="k", username="alice", password="nope"),
    )
    assert not bad.accepted
    assert raw_unpack(bad.reply) == ["PONG", False, "username/password mismatch", "", ""]


def test_ping_with_raw_byte_salt_as_str_like_fluent_bit_out_forward():
    # Fluent Bit's client packs 16 random bytes as str: not UTF-8, hashed as raw bytes.
    server = ServerProtocol(strict=True, shared_key="k", nonce=NONCE)
    server.initiate()
    salt = bytes(range(240, 256))
    digest = spec_digest(salt, b"fb", NONCE, b"k")
    ping = codec._STR_PACKER.pack(["PING", b"fb", salt, digest, "", ""])
    [event] = server.receive_data(ping)
    assert event.accepted
    assert raw_unpack(event.reply)[4] == spec_digest(
        salt, codec.DEFAULT_SERVER_HOSTNAME.encode(), NONCE, b"k"
    )


def test_strict_rejects_a_ping_with_bin_fields():
    server = ServerProtocol(strict=True, shared_key="k", nonce=NONCE)
    server.initiate()
    ping = msgpack.packb(["PING", b"host", "s", "d", "", ""], use_bin_type=True)
    with pytest.raises(ProtocolError, match="PING"):
        server.receive_data(ping)


def test_client_without_key_facing_a_helo():
    client = ClientProtocol(hostname="n")
    [helo] = client.receive_data(codec.build_helo(NONCE, b""))
    with pytest.raises(HandshakeError, match="shared_key"):
        client.ping(helo)


# -------------------------------------------------------------------------------------------- strict decoding

GOOD_OPTION = {"chunk": "c1"}

MALFORMED = {
    "nil heartbeat": b"\xc0",
    "map at top level": msgpack.packb({"a": 1}),
    "array of one": msgpack.packb(["t"]),
    "bin tag": msgpack.packb([b"t", 1, {"a": "b"}], use_bin_type=True),
    "int tag": msgpack.packb([1, 1, {"a": "b"}]),
    "non-map option": msgpack.packb(["t", 1, {"a": "b"}, 7]),
    "bin chunk": msgpack.packb(["t", 1, {"a": "b"}, {"chunk": b"c"}], use_bin_type=True),
    "float time in message mode": msgpack.packb(["t", 1.5, {"a": "b"}]),
    "negative time": msgpack.packb(["t", -1, {"a": "b"}]),
    "msgpack timestamp ext": msgpack.packb(["t", msgpack.Timestamp(1, 0), {"a": "b"}], datetime=False),
    "record not a map": msgpack.packb(["t", 1, ["x"]]),
    "message without record": msgpack.packb(["t", 1]),
    "bad forward entry": msgpack.packb(["t", [[1, "x"]]]),
    "packed with nil option": msgpack.packb(["t", b"\x92\x01\x80", None], use_bin_type=True),
    "packed bad fluent_signal": msgpack.packb(
        ["t", b"\x92\x01\x80", {"fluent_signal": 7}], use_bin_type=True
    ),
    "packed truncated entries": msgpack.packb(["t", b"\x92\x01\x81\xa1a", {}], use_bin_type=True),
    "invalid msgpack": b"\xc1",
    "map-typed element 1": msgpack.packb(["t", {"a": 1}]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_strict_rejects(name):
    server = ServerProtocol(strict=True)
    with pytest.raises(ProtocolError):
        server.receive_data(MALFORMED[name])
    with pytest.raises(ProtocolError):  # and stays closed
        server.receive_data(codec.encode_message("t", 1, {}))


LENIENT_OUTCOME = {
    "nil heartbeat": [],
    "map at top level": [Ignored],
    "array of one": [Ignored],
    "bin tag": [Message],
    "int tag": [Ignored],
    "non-map option": [Message],
    "bin chunk": [Message],
    "float time in message mode": [Message],
    "negative time": [Message],
    "record not a map": [Message],
    "message without record": [Message],
    "bad forward entry": [Forward],
    "packed with nil option": [PackedForward],
    "packed bad fluent_signal": [PackedForward],
    "map-typed element 1": [Message],
}


@pytest.mark.parametrize("name", list(LENIENT_OUTCOME))
def test_lenient_accepts_what_fluentd_accepts(name):
    server = ServerProtocol(strict=False)
    events = server.receive_data(MALFORMED[name])
    assert [type(e) for e in events] == LENIENT_OUTCOME[name]
    [after] = server.receive_data(codec.encode_message("t", 1, {"ok": "yes"}))
    assert after.entries == [(1, {"ok": "yes"})]


def test_lenient_skips_invalid_events_but_acks_messages():
    [event] = decode_all(msgpack.packb(["t", 1.5, {"a": "b"}, {"chunk": "c"}]), strict=False)
    assert event.entries == [] and event.skipped == 1 and event.chunk == b"c"
    [fwd] = decode_all(msgpack.packb(["t", [[1, {"a": "b"}], [1, "x"], "y"]]), strict=False)
    assert fwd.entries == [(1, {"a": "b"})] and fwd.skipped == 2


def test_bin_tag_is_decoded_in_lenient_mode():
    [event] = decode_all(MALFORMED["bin tag"], strict=False)
    assert event.tag == "t"


def test_request_over_the_limit():
    frame = codec.encode_message("t", 1, {"log": "x" * 2000})
    with pytest.raises(ProtocolError, match="limit"):
        decode_all(frame, max_request=1000)
    [ignored] = decode_all(frame, strict=False, max_request=1000)
    assert isinstance(ignored, Ignored)
    assert len(decode_all(frame, max_request=len(frame))) == 1


def test_strict_closes_before_an_oversized_request_is_complete():
    server = ServerProtocol(strict=True, max_request=1000)
    frame = codec.encode_message("t", 1, {"log": "x" * 5000})
    with pytest.raises(ProtocolError, match="exceed"):
        server.receive_data(frame[:1500])


def test_decompressed_size_is_limited():
    entries = [codec.pack_entry(1, {"log": "a" * 1000})] * 20  # ~20 kB raw, tiny gzipped
    [(_, frame)] = codec.encode_records("t", entries, compress=True)
    assert len(frame) < 1000
    with pytest.raises(ProtocolError, match="decompressed"):
        decode_all(frame, max_request=10_000)


def test_gzip_magic_wins_over_a_missing_option_like_fluent_bit():
    blob = gzip.compress(codec.pack_entry(1, {"a": "b"}))
    [event] = decode_all(msgpack.packb(["t", blob, {}], use_bin_type=True))
    assert isinstance(event, CompressedPackedForward) and event.entries == [(EventTime(0, 1), {"a": "b"})]


def test_zstd_is_refused_clearly():
    with pytest.raises(ProtocolError, match="zstd"):
        decode_all(msgpack.packb(["t", b"\x28\xb5\x2f\xfd rest", {"compressed": "zstd"}], use_bin_type=True))


def test_docker_18_nil_option_in_message_mode_is_allowed():
    [event] = decode_all(msgpack.packb(["t", 1, {"a": "b"}, None]))
    assert event.option is None


def test_byte_at_a_time_equals_all_at_once():
    entries = RecordEncoder(STATIC).encode_batch([entry(b"line %d" % i) for i in range(20)])
    data = b"".join(f for _, f in codec.encode_records("t", entries, max_bytes=800)) + codec.encode_message(
        "t", 5, {"a": "b"}
    )
    whole = decode_all(data)
    server = ServerProtocol()
    pieces = [e for i in range(len(data)) for e in server.receive_data(data[i : i + 1])]
    assert pieces == whole and len(whole) > 2


def test_json_transport_in_lenient_mode():
    server = ServerProtocol(strict=False)
    data = b'["tag", 1700000000, {"log": "hi"}, {"chunk": "abc"}]\n["tag", [[1, {"a": "b"}]]]'
    events = server.receive_data(data[:20]) + server.receive_data(data[20:])
    assert [type(e) for e in events] == [Message, Forward]
    assert events[0].chunk == b"abc"
    assert server.ack(events[0].chunk) == b'{"ack": "abc"}'


def test_json_is_malformed_input_in_strict_mode():
    with pytest.raises(ProtocolError):
        decode_all(b'["tag", 1, {}]')


def test_request_size_is_reported():
    frame = codec.encode_message("t", 1, {"a": "b"})
    [event] = decode_all(frame + frame)[:1]
    assert event.size == len(frame)


# ---------------------------------------------------------------------------------------------- properties

_values = st.one_of(_text, st.binary(max_size=40))
_records = st.dictionaries(_text, _values, max_size=5)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(min_value=0, max_value=2**62), _records), max_size=40),
    compress=st.booleans(),
    max_bytes=st.integers(min_value=300, max_value=5000),
    cut=st.integers(min_value=1, max_value=97),
)
def test_encode_then_decode_round_trip(records, compress, max_bytes, cut):
    packed = [codec.pack_entry(t, r) for t, r in records]
    frames = codec.encode_records("tag.x", packed, max_bytes=max_bytes, compress=compress)
    data = b"".join(frame for _, frame in frames)
    server = ServerProtocol(strict=True)
    events = [e for i in range(0, len(data), cut) for e in server.receive_data(data[i : i + cut])]
    assert [e.chunk for e in events] == [c.encode() for c, _ in frames]
    got = [(codec.time_to_ns(t), rec) for e in events for t, rec in e.entries]

    def as_wire(value):  # bytes went out as str: the receiver sees text with the same bytes
        return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value

    want = [
        (codec.time_to_ns(EventTime.from_ns(t)), {k: as_wire(v) for k, v in r.items()}) for t, r in records
    ]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    for strict in (True, False):
        server = ServerProtocol(strict=strict, max_request=10_000)
        try:
            server.receive_data(data)
        except ProtocolError:
            pass


def test_requests_before_the_bad_bytes_come_with_the_error():
    good = codec.encode_message("t", 1, {"a": "b"}, {"chunk": "c1"})
    server = ServerProtocol(strict=True)
    with pytest.raises(ProtocolError) as failure:
        server.receive_data(good + b"\xc0" + good)
    [event] = failure.value.events
    assert event.chunk == b"c1"


def test_record_ids_are_the_last_field_and_stable_per_position():
    import msgpack as _msgpack

    from driver.outputs.forward.codec import RecordEncoder as _Enc

    static = {"container_id": "c" * 64, "container_name": "/n", "team": "core"}
    enc = _Enc(static, record_id_key="record_id")
    entries = [("stdout", 10**18, b"one", False, False, "", 0), ("stderr", 10**18 + 1, b"two", True, True, "p", 2)]
    packed = enc.encode_batch(entries, ["abc-7", "abc-2a"])
    records = [_msgpack.unpackb(p, raw=False, strict_map_key=False)[1] for p in packed]
    assert [r["record_id"] for r in records] == ["abc-7", "abc-2a"]
    assert records[0]["log"] == "one" and records[1]["partial_ordinal"] == "2" and records[0]["team"] == "core"
    assert enc.encode_batch(entries, ["abc-7", "abc-2a"]) == packed  # a resend carries the same ids
    with pytest.raises(ValueError, match="2 entries need as many record ids"):
        enc.encode_batch(entries)
    shadowing = _Enc({**static, "source": "x"}, record_id_key="record_id")  # the slow, generic path
    slow = [_msgpack.unpackb(p, raw=False, strict_map_key=False)[1]
            for p in shadowing.encode_batch(entries, ["z0", "z1"])]
    assert [r["record_id"] for r in slow] == ["z0", "z1"]


def test_a_label_named_like_the_record_id_key_gives_way_to_the_id():
    """A map with a key twice is taken differently by each aggregator: the record carries one record_id, the id."""
    import msgpack as _msgpack

    from driver.outputs.forward.codec import RecordEncoder as _Enc

    enc = _Enc({"container_id": "c" * 64, "container_name": "/n", "record_id": "from-a-label"},
               record_id_key="record_id")
    [packed] = enc.encode_batch([("stdout", 10**18, b"one", False, False, "", 0)], ["b-0"])
    pairs = _msgpack.unpackb(packed, raw=False, strict_map_key=False, object_pairs_hook=list)[1]
    assert [v for k, v in pairs if k == "record_id"] == ["b-0"]


def test_idle_client_connections_keep_no_parse_buffer():
    # 1,000 containers, 1,000 connections idle between acks: each held a 1 MiB buffer and a 45 KB parse stack
    import tracemalloc

    ack = codec.build_ack("0123456789")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        clients = [ClientProtocol(hostname="node", salt="s") for _ in range(100)]
        for client in clients:
            assert client.receive_data(ack[:3]) == []  # a reply split in two: kept between the calls
            assert client.receive_data(ack[3:] + ack) == [Ack(b"0123456789")] * 2
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_client = sum(d.size_diff for d in after.compare_to(before, "filename")) / len(clients)
    assert per_client < 4096, f"{per_client:.0f} bytes per idle client"
