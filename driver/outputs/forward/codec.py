"""Fluent forward protocol v1 as pure code over bytes: no sockets, no asyncio, no clocks (h11 style).

Sending side (logbridge's forward sink)
    RecordEncoder(static_fields).encode_batch(entries) -> [packed Entry]   (hot path: ~0.05 us/record in C)
    encode_records(tag, packed_entries, ...) -> [(chunk_id, frame)]     (PackedForward, optionally gzip)
    BatchBuilder: the same split, incrementally, with the entry count of every frame
    ClientProtocol: parses what a server sends back (HELO, PONG, acks) and answers HELO with PING

Receiving side (`driver.receiver`, tests)
    ServerProtocol(strict=...): initiate() -> HELO bytes; receive_data(bytes) -> events; ack(chunk) -> bytes
    strict=True behaves like Fluent Bit's in_forward, strict=False like Fluentd's in_forward.

Wire facts this module relies on, read in fluent/fluent-bit plugins/in_forward/fw_prot.c, fw_conn.c,
plugins/out_forward/forward.c and fluent/fluentd lib/fluent/plugin/in_forward.rb, out_forward.rb,
out_forward/handshake_protocol.rb:
- EventTime is ext type 0 with 8 bytes, BE uint32 seconds + BE uint32 nanoseconds. Seconds 0xFFFFFFFF and
  0xFFFFFFFE (with 0 ns) are Fluent Bit's group markers, so we never send them.
- PackedForward entries may be str or bin; both receivers accept both. Fluentd's own out_forward sends str32,
  so every receiver that works with Fluentd accepts str32: that is what we send (gzip included).
- Tags, option values, handshake fields, ack chunks and record keys/values are msgpack str. Fluent Bit closes
  the connection on a bin tag, a bin chunk or a bin PING field; Docker 20.10's fluent-logger crashed on a bin
  ack. Raw log bytes go into str unchanged, exactly as Docker's fluentd driver does (a Go string holds any
  bytes); Fluent Bit replaces invalid UTF-8 with U+FFFD when it renders JSON (flb_utils_write_str_escaped).
- Fluent Bit closes a connection whose request is over buffer_max_size (6,144,000 by default) and also
  rejects a compressed payload whose *decompressed* size is over it, so frames are capped on the
  uncompressed size.
- Digests: PING carries sha512_hex(salt + client_hostname + nonce + shared_key), PONG carries
  sha512_hex(salt + server_hostname + nonce + shared_key) with the salt from PING, and the password digest
  is sha512_hex(auth + username + password), where nonce and auth are the raw bytes from HELO.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import msgpack

from driver import speedups

# Whether RecordEncoder packs in C (driver/speedups.py); the loop here is the reference.
_encode_records = speedups.encode_records
_encode_record_frames = speedups.encode_record_frames
SPEEDUPS = _encode_records is not None

DEFAULT_PORT = 24224
# Fluent Bit in_forward's buffer_max_size: the largest request it accepts (fw_conn.h).
FLUENT_BIT_MAX_REQUEST = 6_144_000
# Our frame cap: below Fluent Bit's buffer_chunk_size (1,024,000), so a frame never makes it grow its
# per-connection buffer, and far below the hard limit above.
DEFAULT_MAX_FRAME_BYTES = 1_000_000
# Fluentd's in_forward decompression_size_limit default.
FLUENTD_DECOMPRESSION_LIMIT = 256 * 1024 * 1024
DEFAULT_SERVER_HOSTNAME = "logbridge-receiver"

NS = 1_000_000_000
_MAX_SECONDS = 0xFFFFFFFD  # 0xFFFFFFFE/0xFFFFFFFF are Fluent Bit group markers

TimeFormat = Literal["event_time", "integer"]
HeloStyle = Literal["fluent-bit", "fluentd"]


class ProtocolError(Exception):
    """The peer sent something the forward protocol (or the chosen flavour of it) does not allow.

    `events` holds what the same receive_data() call decoded before the bad input: valid requests that
    a server still handles (and acks) before it closes, as Fluent Bit does.
    """

    def __init__(self, message: str, events: list[ServerEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[ServerEvent] = events or []


class HandshakeError(ProtocolError):
    """The shared-key / user handshake failed: wrong key, wrong password, or a peer without one."""


# ----------------------------------------------------------------------------------------------- msgpack bits

_II = struct.Struct(">II")
# One struct call builds "[" (fixarray 2), then the time: fixext8 type 0, or a uint32.
_ENTRY_EVENT_TIME = struct.Struct(">3sII")
_ENTRY_INT_TIME = struct.Struct(">2sI")
_EVENT_TIME_LEAD = b"\x92\xd7\x00"
_INT_TIME_LEAD = b"\x92\xce"

# use_bin_type=False packs both str and bytes with the str family: "strings always str, never bin".
_STR_PACKER = msgpack.Packer(use_bin_type=False)
_STR_HEADERS = [bytes((0xA0 | n,)) for n in range(32)] + [b"\xd9" + bytes((n,)) for n in range(32, 256)]


def _str_header(n: int) -> bytes:
    if n < 256:
        return _STR_HEADERS[n]
    if n < 0x10000:
        return b"\xda" + n.to_bytes(2, "big")
    return b"\xdb" + n.to_bytes(4, "big")


def _pack_str(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return _str_header(len(raw)) + raw


def _map_header(n: int) -> bytes:
    return bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big")


def _raw(value: object) -> bytes:
    """The bytes of a str or bin field exactly as they were on the wire (see _unpacker)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        return value
    raise ProtocolError(f"expected str or bin, got {_type_name(value)}")


def _brief(value: object) -> str:
    """At most 200 characters of repr(value) for an error message."""
    try:
        return f"{value!r:.200}"
    except RecursionError:  # msgpack nests up to 1024 deep, repr gives up near 1000
        return f"a {_type_name(value)} nested too deep to show"


def _type_name(value: object) -> str:
    if value is None:
        return "nil"
    return {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        bytes: "bin",
        list: "array",
        dict: "map",
    }.get(type(value), "ext")


# ------------------------------------------------------------------------------------------------------- time


class EventTime(NamedTuple):
    """Forward's EventTime (ext type 0)."""

    seconds: int
    nanoseconds: int

    def to_ns(self) -> int:
        return self.seconds * NS + self.nanoseconds

    @classmethod
    def from_ns(cls, time_nano: int) -> EventTime:
        return cls(*_split_ns(time_nano))

    def pack(self) -> bytes:
        return b"\xd7\x00" + _II.pack(self.seconds, self.nanoseconds)


Time = int | float | EventTime


def _split_ns(time_nano: int) -> tuple[int, int]:
    """Seconds and nanoseconds, clamped to what EventTime can carry (negative times become 0)."""
    if time_nano <= 0:
        return 0, 0
    seconds, nanos = divmod(time_nano, NS)
    if seconds > _MAX_SECONDS:
        return _MAX_SECONDS, 0
    return seconds, nanos


def pack_time(time_nano: int, time_format: TimeFormat = "event_time") -> bytes:
    seconds, nanos = _split_ns(time_nano)
    if time_format == "integer":
        return msgpack.packb(seconds)
    return b"\xd7\x00" + _II.pack(seconds, nanos)


def time_to_ns(value: Time) -> int:
    """Nanoseconds since the epoch of any time a forward client may send."""
    if isinstance(value, EventTime):
        return value.to_ns()
    if isinstance(value, float):
        return int(round(value * NS))
    return int(value) * NS


def _time_object(value: Time) -> object:
    return msgpack.ExtType(0, _II.pack(*value)) if isinstance(value, EventTime) else value


# ---------------------------------------------------------------------------------------------------- records

# (source, time_nano, line, partial, last, partial_id, ordinal): frames.FrameDecoder's decoded entry.
Entry = tuple[str, int, bytes, bool, bool, str, int]

_FIXED_KEYS = ("container_id", "container_name")
_PARTIAL_KEYS = frozenset({"partial_message", "partial_id", "partial_ordinal", "partial_last"})


def record_for(entry: Entry, static_fields: Mapping[str, str]) -> dict[str, str | bytes]:
    """The record Docker's fluentd driver sends for one entry (fluentd.go Log), as a dict.

    `static_fields` holds the per-container fields: `container_id`, `container_name` (with its leading
    "/") and the extra attributes (labels, env), in order. As in Docker, extras are merged after the fixed
    keys, so an extra named `source` or `log` replaces them, and the partial_* fields come last.
    `log` stays bytes; it is packed as msgpack str.
    """
    source, _time, line, partial, last, partial_id, ordinal = entry
    record: dict[str, str | bytes] = {
        "container_id": static_fields.get("container_id", ""),
        "container_name": static_fields.get("container_name", ""),
        "source": source,
        "log": line,
    }
    record.update(static_fields)
    if partial:
        record["partial_message"] = "true"
        record["partial_id"] = partial_id
        record["partial_ordinal"] = str(ordinal)
        record["partial_last"] = "true" if last else "false"
    return record


def pack_entry(time_nano: int, record: Mapping[str, Any], time_format: TimeFormat = "event_time") -> bytes:
    """One packed `[time, record]` Entry for any record; str and bytes values both become msgpack str."""
    return b"\x92" + pack_time(time_nano, time_format) + _STR_PACKER.pack(record)


def _pack_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(_pack_str(k) + _pack_str(v) for k, v in pairs)


class RecordEncoder:
    """Packs entries of one container into `[time, record]` Entries, the hot path of the forward sink.

    The map header, container_id, container_name, source and the extras are packed once per container;
    per record only the time, the log bytes and (for partials) four short fields are added. Measured
    1.7x faster than building a dict and calling msgpack per record. Decodes to the same record as
    `record_for` (checked by the tests).

    With the C extension (``SPEEDUPS``) that per-record loop runs in C over the same cached bytes, and a batch
    it declines (an unusual source, a line that is not bytes, ...) goes through the Python loop, which stays
    the reference. ``pure=True`` makes an encoder that never uses C (for comparisons).
    """

    def __init__(
        self,
        static_fields: Mapping[str, str],
        *,
        time_format: TimeFormat = "event_time",
        invalid_utf8: Literal["keep", "replace"] = "keep",
        record_id_key: str | None = None,
        pure: bool = False,
    ) -> None:
        self._static = dict(static_fields)
        # A per-record id (``encode_batch(entries, ids)``; the sink names each entry by its journal offset): the
        # same entry gets the same id when it is resent, so an output such as Elasticsearch can use it as the
        # document _id and drop the duplicate.
        self._id_name = record_id_key or ""
        self._id_key = _pack_str(record_id_key) if record_id_key else b""
        self._time_format: TimeFormat = time_format
        # "keep" sends the bytes as Docker's driver does; "replace" swaps invalid UTF-8 for U+FFFD here, for
        # Fluentd pipelines whose JSON outputs choke on it (Fluent Bit does it itself when it renders JSON).
        self._scrub = invalid_utf8 == "replace"
        extras = [(k, v) for k, v in self._static.items() if k not in _FIXED_KEYS]
        # An extra that shadows a per-record key changes the map's shape: leave that rare case to the
        # generic packer rather than complicate the splice.
        per_record = _PARTIAL_KEYS | {"source", "log"} | ({record_id_key} if record_id_key else set())
        self._fast = not ({k for k, _ in extras} & per_record)
        self._fields = 4 + len(extras) + (1 if record_id_key else 0)
        self._head = _pack_pairs((k, self._static.get(k, "")) for k in _FIXED_KEYS)
        self._extras = _pack_pairs(extras)
        self._prefix: dict[str, bytes] = {}
        self._partial_prefix: dict[str, bytes] = {}
        if time_format == "event_time":
            self._time_struct, self._time_lead = _ENTRY_EVENT_TIME, _EVENT_TIME_LEAD
        else:
            self._time_struct, self._time_lead = _ENTRY_INT_TIME, _INT_TIME_LEAD
        # What encode_records takes besides the entries: all that is packed once per container.
        self._c_encode = _encode_records if self._fast and not pure else None
        self._c_args = (
            time_format == "event_time",
            self._prefix_for("stdout", False),
            self._prefix_for("stderr", False),
            self._prefix_for("stdout", True),
            self._prefix_for("stderr", True),
            self._extras,
        )
        # encode_frames: the same per-container bytes, for journal frames straight to Entries (no scrub in C).
        self._c_frames = _encode_record_frames if self._c_encode is not None and not self._scrub else None

    def _prefix_for(self, source: str, partial: bool) -> bytes:
        """Map header + container_id + container_name + source + the key "log", cached per source."""
        cache = self._partial_prefix if partial else self._prefix
        prefix = cache.get(source)
        if prefix is None:
            count = self._fields + (4 if partial else 0)
            prefix = _map_header(count) + self._head + _pack_pairs([("source", source)]) + _pack_str("log")
            cache[source] = prefix
        return prefix

    def _partial_tail(self, last: bool, partial_id: str, ordinal: int) -> bytes:
        return b"".join(
            (
                _PARTIAL_MESSAGE_TRUE,
                _PARTIAL_ID_KEY,
                _pack_str(partial_id),
                _PARTIAL_ORDINAL_KEY,
                _pack_str(str(ordinal)),
                _PARTIAL_LAST_TRUE if last else _PARTIAL_LAST_FALSE,
            )
        )

    def _time(self, time_nano: int) -> bytes:
        if 0 < time_nano < _TIME_FAST_LIMIT:
            seconds, nanos = divmod(time_nano, NS)
        else:
            seconds, nanos = _split_ns(time_nano)
        if self._time_format == "event_time":
            return self._time_struct.pack(self._time_lead, seconds, nanos)
        return self._time_struct.pack(self._time_lead, seconds)

    def encode(self, entry: Entry) -> bytes:
        return self.encode_batch((entry,))[0]

    def encode_batch(self, entries: Iterable[Entry], ids: Sequence[str] | None = None) -> list[bytes]:
        """Packed Entries, one per entry, in order; with a record id key, entry i gets the id ``ids[i]``."""
        if self._scrub:
            entries = [e if e[2].isascii() else (*e[:2], _scrub_utf8(e[2]), *e[3:]) for e in entries]
        if self._id_key:
            entries = list(entries)
            if ids is None or len(ids) != len(entries):
                raise ValueError(f"{len(entries)} entries need as many record ids, got "
                                 f"{'none' if ids is None else len(ids)}")
            return self._with_ids(entries, ids)
        if not self._fast:
            return [pack_entry(e[1], record_for(e, self._static), self._time_format) for e in entries]
        if self._c_encode is not None and type(entries) in (list, tuple):  # C takes a batch it can index
            packed = self._c_encode(entries, *self._c_args)
            if packed is not None:
                return packed
        out: list[bytes] = []
        append = out.append
        join = b"".join
        prefixes = self._prefix
        extras = self._extras
        event_time = self._time_format == "event_time"
        time_pack = self._time_struct.pack
        lead = self._time_lead
        for entry in entries:
            source, time_nano, line, partial, last, partial_id, ordinal = entry
            if event_time and 0 < time_nano < _TIME_FAST_LIMIT:
                seconds, nanos = divmod(time_nano, NS)
                time_bytes = time_pack(lead, seconds, nanos)
            else:
                time_bytes = self._time(time_nano)
            n = len(line)
            header = _STR_HEADERS[n] if n < 256 else _str_header(n)
            if partial:
                prefix = self._prefix_for(source, True)
                tail = extras + self._partial_tail(last, partial_id, ordinal)
            else:
                prefix = prefixes.get(source) or self._prefix_for(source, False)
                tail = extras
            append(join((time_bytes, prefix, header, line, tail)))
        return out

    @property
    def encodes_frames(self) -> bool:
        """Whether encode_frames packs in C (else it returns None: the caller decodes)."""
        return self._c_frames is not None

    def encode_frames(self, frames: bytes, budget: int, *, partials: bool = True, start: int = 0,
                      id_prefix: str = "") -> tuple[int, int, bool, bytes] | None:
        """Journal frames straight to packed Entries, in C: ``(used, count, declined, packed)`` for the ordinary
        frames at the start of ``frames``, ``packed`` their Entries concatenated (at most ``budget`` bytes), each
        exactly what ``encode_batch`` makes of ``FrameDecoder().decode(frames)``'s entries, with the record id
        ``f"{id_prefix}{start + frame position:x}"`` when there is a record id key. It stops at the first frame that
        is incomplete (``used`` is where it starts) or that needs the decoded way (``declined``; see _speedups.c:
        garbage, a partial chunk unless ``partials``, more than ``budget``). None without C (or on the generic or
        scrubbing path): the caller decodes."""
        if self._c_frames is None:
            return None
        prefix = id_prefix.encode("utf-8", "surrogateescape") if self._id_key else b""
        return self._c_frames(frames, *self._c_args, self._id_key, prefix, start, budget, partials)

    def _with_ids(self, entries: list[Entry], ids: Sequence[str]) -> list[bytes]:
        """Entries with the id pair as the map's last field (the cached map headers count it already)."""
        if not self._fast:
            return [pack_entry(e[1], {**record_for(e, self._static), self._id_name: ident}, self._time_format)
                    for e, ident in zip(entries, ids, strict=True)]
        key, self._id_key = self._id_key, b""  # pack the rest with the plain fast path
        try:
            plain = self.encode_batch(entries)
        finally:
            self._id_key = key
        return [packed + key + _pack_str(ident) for packed, ident in zip(plain, ids, strict=True)]


def _scrub_utf8(line: bytes) -> bytes:
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace").encode("utf-8")


_TIME_FAST_LIMIT = (_MAX_SECONDS + 1) * NS
_PARTIAL_MESSAGE_TRUE = _pack_str("partial_message") + _pack_str("true")
_PARTIAL_ID_KEY = _pack_str("partial_id")
_PARTIAL_ORDINAL_KEY = _pack_str("partial_ordinal")
_PARTIAL_LAST_TRUE = _pack_str("partial_last") + _pack_str("true")
_PARTIAL_LAST_FALSE = _pack_str("partial_last") + _pack_str("false")


# ----------------------------------------------------------------------------------------------------- frames


def new_chunk_id() -> str:
    """A chunk id as fluent-logger makes them: base64 of 16 random bytes (24 characters, no newline)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def packed_forward(
    tag: str,
    entries: bytes,
    count: int,
    *,
    chunk_id: str | None = None,
    compress: bool = False,
    compress_level: int = 1,
) -> bytes:
    """A PackedForward (or, with `compress`, CompressedPackedForward) request.

    `entries` is the concatenation of packed Entries. The option map carries `size` (the entry count,
    Fluentd's hint), `chunk` when an ack is wanted, and `compressed: "gzip"`.
    """
    option: dict[str, object] = {"size": count}
    if chunk_id is not None:
        option["chunk"] = chunk_id
    if compress:
        # mtime=0 keeps frames deterministic; level 1 already gets most of the gain on log text.
        entries = gzip.compress(entries, compresslevel=compress_level, mtime=0)
        option["compressed"] = "gzip"
    return b"".join(
        (b"\x93", _pack_str(tag), b"\xdb", len(entries).to_bytes(4, "big"), entries, _pack_option(option))
    )


def _pack_option(option: Mapping[str, object]) -> bytes:
    return _STR_PACKER.pack(option)


class Frame(NamedTuple):
    chunk_id: str | None
    data: bytes
    count: int  # Entries in the frame, so a caller can map frames back to journal positions


# Room for the option map: {"size": uint32, "chunk": 24 chars, "compressed": "gzip"} packs to 63 bytes.
_OPTION_RESERVE = 80


class BatchBuilder:
    """Groups packed Entries of one tag into PackedForward frames of at most `max_bytes`.

    The cap counts the uncompressed entries plus the frame overhead, because Fluent Bit limits the
    decompressed size as well. An Entry that alone exceeds the cap still gets a frame of its own: the
    caller decides what to do about records that large.
    """

    def __init__(
        self,
        tag: str,
        *,
        max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        compress: bool = False,
        compress_level: int = 1,
        require_ack: bool = True,
        chunk_ids: Callable[[], str] = new_chunk_id,
    ) -> None:
        self.tag = tag
        self._budget = max_bytes - (1 + len(_pack_str(tag)) + 5 + _OPTION_RESERVE)
        if self._budget <= 0:
            raise ValueError(f"max_bytes={max_bytes} leaves no room for entries with tag {tag!r}")
        self._compress = compress
        self._compress_level = compress_level
        self._require_ack = require_ack
        self._chunk_ids = chunk_ids
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def budget(self) -> int:
        """The most bytes of packed Entries one frame holds (a longer Entry gets a frame of its own)."""
        return self._budget

    @property
    def pending_count(self) -> int:
        return len(self._parts)

    @property
    def pending_bytes(self) -> int:
        return self._size

    def add(self, entry: bytes) -> Frame | None:
        """Adds one Entry; returns the frame it closed, if it did not fit in the current one."""
        frame = None
        if self._parts and self._size + len(entry) > self._budget:
            frame = self.flush()
        self._parts.append(entry)
        self._size += len(entry)
        return frame

    def extend(self, entries: Iterable[bytes]) -> list[Frame]:
        """Adds Entries; returns the frames that filled up (the open one stays pending until flush)."""
        frames = []
        parts = self._parts
        size = self._size
        budget = self._budget
        for entry in entries:
            n = len(entry)
            if parts and size + n > budget:
                self._size = size
                frames.append(self._finish())
                parts = self._parts
                size = 0
            parts.append(entry)
            size += n
        self._size = size
        return frames

    def flush(self) -> Frame | None:
        """The pending Entries as a frame, or None when there are none."""
        return self._finish() if self._parts else None

    def frame_of(self, packed: bytes, count: int) -> Frame:
        """The frame of ``count`` Entries already packed into one bytes of at most ``budget`` (as
        RecordEncoder.encode_frames makes them): the same frame as adding them one by one and flushing."""
        if self._parts:
            raise ValueError("frame_of needs a builder with no pending Entries")
        return self._frame((packed,), len(packed), count)

    def _finish(self) -> Frame:
        frame = self._frame(self._parts, self._size, len(self._parts))
        self._parts = []
        self._size = 0
        return frame

    def _frame(self, parts: Sequence[bytes], size: int, count: int) -> Frame:
        chunk_id = self._chunk_ids() if self._require_ack else None
        if self._compress:
            data = packed_forward(
                self.tag,
                b"".join(parts),
                count,
                chunk_id=chunk_id,
                compress=True,
                compress_level=self._compress_level,
            )
        else:
            # One join straight into the frame: copying a megabyte twice shows in the profile.
            head = b"\x93" + _pack_str(self.tag) + b"\xdb" + size.to_bytes(4, "big")
            option = _pack_option({"size": count} if chunk_id is None else {"size": count, "chunk": chunk_id})
            data = b"".join((head, *parts, option))
        return Frame(chunk_id, data, count)


def encode_records(
    tag: str,
    records: Iterable[bytes],
    *,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    compress: bool = False,
    compress_level: int = 1,
    require_ack: bool = True,
) -> list[tuple[str | None, bytes]]:
    """Packed Entries (from RecordEncoder or pack_entry) -> [(chunk_id, frame bytes)], split at max_bytes.

    chunk_id is None when no ack is requested. Use BatchBuilder to also get the entry count per frame.
    """
    builder = BatchBuilder(
        tag, max_bytes=max_bytes, compress=compress, compress_level=compress_level, require_ack=require_ack
    )
    frames = builder.extend(records)
    last = builder.flush()
    if last is not None:
        frames.append(last)
    return [(f.chunk_id, f.data) for f in frames]


def encode_message(
    tag: str, time: Time, record: Mapping[str, Any], option: Mapping[str, Any] | None = None
) -> bytes:
    """A Message-mode request `[tag, time, record, option]`, the shape Docker's own fluentd driver sends."""
    return _STR_PACKER.pack([tag, _time_object(time), record, dict(option or {})])


def encode_forward(
    tag: str, entries: Iterable[tuple[Time, Mapping[str, Any]]], option: Mapping[str, Any] | None = None
) -> bytes:
    """A Forward-mode request `[tag, [[time, record], ...], option]`."""
    packed = [[_time_object(t), r] for t, r in entries]
    return _STR_PACKER.pack([tag, packed, dict(option or {})])


# -------------------------------------------------------------------------------------------------------- ack


def build_ack(chunk: str | bytes) -> bytes:
    """`{"ack": chunk}` with the chunk as msgpack str, byte for byte as the client sent it."""
    return b"\x81\xa3ack" + _pack_str(chunk)


@dataclass(frozen=True)
class Ack:
    chunk: bytes


# -------------------------------------------------------------------------------------------------- handshake


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def shared_key_digest(salt: str | bytes, hostname: str | bytes, nonce: bytes, shared_key: str | bytes) -> str:
    """sha512_hex(salt + hostname + nonce + shared_key): PING (client hostname) and PONG (server hostname)."""
    return hashlib.sha512(_b(salt) + _b(hostname) + nonce + _b(shared_key)).hexdigest()


def password_digest(auth: bytes, username: str | bytes, password: str | bytes) -> str:
    """sha512_hex(auth + username + password), auth being HELO's user-auth salt."""
    return hashlib.sha512(auth + _b(username) + _b(password)).hexdigest()


@dataclass(frozen=True)
class Helo:
    nonce: bytes
    auth: bytes
    keepalive: bool = True


@dataclass(frozen=True)
class Pong:
    ok: bool
    reason: str
    hostname: bytes
    digest: bytes


def build_helo(
    nonce: bytes, auth: bytes, *, style: HeloStyle = "fluent-bit", keepalive: bool = True
) -> bytes:
    """HELO as Fluent Bit sends it (nonce, auth as str; no keepalive) or as Fluentd does (bin; keepalive)."""
    if style == "fluent-bit":
        return _STR_PACKER.pack(["HELO", {"nonce": nonce, "auth": auth}])
    return msgpack.packb(["HELO", {"nonce": nonce, "auth": auth, "keepalive": keepalive}], use_bin_type=True)


def build_ping(
    *,
    hostname: str,
    salt: str,
    nonce: bytes,
    shared_key: str,
    auth: bytes = b"",
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """PING; every element is a str (Fluent Bit closes on anything else).

    Like Fluentd's out_forward, the user fields are filled whenever HELO carried an auth salt: a server
    without users ignores them, one with users needs them.
    """
    digest = shared_key_digest(salt, hostname, nonce, shared_key)
    if auth:
        user = username or ""
        user_digest = password_digest(auth, user, password or "")
    else:
        user, user_digest = "", ""
    return _STR_PACKER.pack(["PING", hostname, salt, digest, user, user_digest])


def build_pong(*, ok: bool, reason: str = "", hostname: str | bytes = b"", digest: str = "") -> bytes:
    return _STR_PACKER.pack(["PONG", ok, reason, _b(hostname), digest])


def _ext_hook(code: int, data: bytes) -> object:
    if code == 0 and len(data) == 8:
        return _tuple_new(EventTime, _II.unpack(data))  # a third faster than EventTime(*...), once per event
    return msgpack.ExtType(code, data)


_tuple_new = tuple.__new__


def _unpacker(max_buffer_size: int, read_size: int = 0) -> msgpack.Unpacker:
    # raw=False keeps str and bin apart (Fluent Bit rejects bin where it wants str); surrogateescape keeps
    # the exact bytes of str fields that are not UTF-8 (Fluent Bit's HELO nonce, raw log lines).
    # read_size is the buffer allocated at once (msgpack's default: max_buffer_size up to 1 MiB); it grows to
    # max_buffer_size as needed.
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        ext_hook=_ext_hook,
        max_buffer_size=max_buffer_size,
        read_size=read_size or min(max_buffer_size, 1 << 20),
    )


REPLY_BUFFER_MAX = 1 << 20  # replies are tiny; a server flooding us is an error
REPLY_BUFFER_START = 4096


class ClientProtocol:
    """The client's view of a forward connection: parses HELO, PONG and acks; builds PING.

    Use: feed every byte read from the socket to receive_data(); answer a Helo with ping(); check the
    Pong with check_pong(), which raises HandshakeError unless the server proved it knows the key.
    """

    def __init__(
        self,
        *,
        hostname: str,
        shared_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        salt: str | None = None,
    ) -> None:
        self.hostname = hostname
        self.shared_key = shared_key
        self.username = username
        self.password = password
        # 32 hex characters like Fluentd's client: valid UTF-8 for servers that treat it as text.
        self.salt = salt if salt is not None else secrets.token_hex(16)
        self._nonce: bytes | None = None
        # An Unpacker costs ~45 KB (its parse stack, zeroed) and a connection is idle between acks: it holds one
        # only while a reply is incomplete, so 1,000 containers' connections do not keep 45 MB.
        self._unpacker: msgpack.Unpacker | None = None
        self._fed = self._complete = 0  # bytes fed to the current unpacker; bytes of its complete replies

    def receive_data(self, data: bytes) -> list[Helo | Pong | Ack]:
        unpacker = self._unpacker
        if unpacker is None:
            unpacker = self._unpacker = _unpacker(REPLY_BUFFER_MAX, REPLY_BUFFER_START)
            self._fed = self._complete = 0
        try:
            unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise ProtocolError("server sent more than 1 MiB without a complete reply") from exc
        self._fed += len(data)
        events: list[Helo | Pong | Ack] = []
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                if self._complete == self._fed:
                    self._unpacker = None  # every byte belonged to a complete reply: nothing to keep
                return events
            except (msgpack.UnpackException, ValueError, TypeError) as exc:
                raise ProtocolError(f"server sent invalid msgpack: {exc}") from exc
            # tell() counts a partial reply's bytes too; right after a whole one it is where that one ended
            self._complete = unpacker.tell()
            events.append(_parse_reply(obj))

    def ping(self, helo: Helo) -> bytes:
        if self.shared_key is None:
            raise HandshakeError("the server requires a shared_key handshake and no shared_key is configured")
        self._nonce = helo.nonce
        return build_ping(
            hostname=self.hostname,
            salt=self.salt,
            nonce=helo.nonce,
            shared_key=self.shared_key,
            auth=helo.auth,
            username=self.username,
            password=self.password,
        )

    def check_pong(self, pong: Pong) -> None:
        if self._nonce is None or self.shared_key is None:
            raise HandshakeError("PONG before HELO")
        if not pong.ok:
            raise HandshakeError(f"authentication failed: {pong.reason or 'no reason given'}")
        expected = shared_key_digest(self.salt, pong.hostname, self._nonce, self.shared_key)
        if not hmac.compare_digest(expected.encode("ascii"), pong.digest):
            raise HandshakeError("shared_key mismatch: the server's PONG digest is wrong")


def _parse_reply(obj: object) -> Helo | Pong | Ack:
    if isinstance(obj, dict) and "ack" in obj:
        return Ack(_raw(obj["ack"]))
    if isinstance(obj, list) and obj and obj[0] == "HELO" and len(obj) == 2:
        opts = obj[1] if isinstance(obj[1], dict) else {}
        keepalive = opts.get("keepalive", True)
        return Helo(_raw(opts.get("nonce", b"")), _raw(opts.get("auth", b"")), keepalive is not False)
    if isinstance(obj, list) and obj and obj[0] == "PONG" and len(obj) == 5:
        _, ok, reason, hostname, digest = obj
        reason_text = _raw(reason).decode("utf-8", "replace") if reason else ""
        return Pong(ok is True, reason_text, _raw(hostname or b""), _raw(digest or b""))
    raise ProtocolError(f"unexpected reply from server: {_brief(obj)}")


# ---------------------------------------------------------------------------------------------- server events


@dataclass(frozen=True)
class Request:
    """One forward request. `entries` holds the valid events; `skipped` counts invalid ones dropped
    (lenient mode only). `size` is the request's size on the wire. `counted`: valid events checked but not
    decoded (a count-only ServerProtocol's PackedForward); `count` is the number of valid events either way."""

    tag: str
    entries: list[tuple[Time, dict[Any, Any]]]
    option: dict[Any, Any] | None
    size: int
    skipped: int = 0
    counted: int = 0

    @property
    def count(self) -> int:
        return len(self.entries) + self.counted

    @property
    def chunk(self) -> bytes | None:
        """The ack id the client asked for, as the exact bytes it sent, or None."""
        if not self.option:
            return None
        chunk = self.option.get("chunk")
        return _raw(chunk) if isinstance(chunk, (str, bytes)) else None


class Message(Request):
    pass


class Forward(Request):
    pass


class PackedForward(Request):
    pass


class CompressedPackedForward(Request):
    pass


@dataclass(frozen=True)
class PingReceived:
    """A PING was checked. Send `reply` if it is not None; close unless `accepted`."""

    hostname: str
    username: str
    accepted: bool
    reason: str
    reply: bytes | None


@dataclass(frozen=True)
class Ignored:
    """Lenient mode only: something Fluentd would log and drop (nil heartbeat, non-array, oversize)."""

    reason: str
    size: int


ServerEvent = Request | PingReceived | Ignored


# ------------------------------------------------------------------------------------------- server protocol


# Whether ServerProtocol(count_only=True) counts in C (driver/speedups.py).
_c_count_entries = speedups.count_entries
COUNT_SPEEDUPS = _c_count_entries is not None


@dataclass
class _Limits:
    strict: bool
    max_request: int | None
    max_decompressed: int
    count_only: bool = False  # PackedForward entries are counted by _entries.count_entries, not decoded


@dataclass
class _Secret:
    shared_key: str
    users: dict[str, str]
    self_hostname: str
    nonce: bytes
    auth: bytes


class ServerProtocol:
    """The server side of one forward connection.

    strict=True behaves like Fluent Bit's in_forward: any malformed request raises ProtocolError (close the
    connection), including a nil heartbeat, a non-str tag, a non-map option, a non-str chunk, a bad time,
    and a request (or decompressed payload) over `max_request`. Its HELO packs nonce and auth as str.
    A wrong shared key yields PingReceived(accepted=False, reply=None): Fluent Bit closes without a PONG.

    strict=False behaves like Fluentd's: nil and non-arrays are ignored, invalid events are skipped (a
    Message-mode one is still acked), a request over `max_request` (chunk_size_limit) is dropped without
    an ack, and a connection whose first byte is "{" or "[" speaks JSON. Its HELO packs bin and keepalive,
    and a failed PING gets `["PONG", false, reason, "", ""]`.

    Stricter than Fluent Bit in one respect: PackedForward entries are decoded and checked here, where
    Fluent Bit appends them to its buffer undecoded.

    count_only=True (strict only, with the C extension: COUNT_SPEEDUPS) is for a server that only counts
    records: PackedForward entries are checked in C, to the same rules and with the same verdict, without
    building them, and the request carries `counted` instead of `entries`. Decoding them cost ~3 CPU-s per
    million records. Forward and Message mode requests are decoded as usual.
    """

    def __init__(
        self,
        *,
        strict: bool = True,
        max_request: int | None = FLUENT_BIT_MAX_REQUEST,
        shared_key: str | None = None,
        users: Mapping[str, str] | None = None,
        self_hostname: str = DEFAULT_SERVER_HOSTNAME,
        nonce: bytes | None = None,
        auth_salt: bytes | None = None,
        keepalive: bool = True,
        count_only: bool = False,
    ) -> None:
        decompress_cap = max_request if strict and max_request else FLUENTD_DECOMPRESSION_LIMIT
        self._limits = _Limits(strict, max_request, decompress_cap, count_only and strict and COUNT_SPEEDUPS)
        self._secret: _Secret | None = None
        if shared_key is not None or users:
            self._secret = _Secret(
                shared_key=shared_key or "",
                users=dict(users or {}),
                self_hostname=self_hostname,
                nonce=nonce if nonce is not None else os.urandom(16),
                auth=auth_salt if auth_salt is not None else os.urandom(16),
            )
        self._keepalive = keepalive  # announced in a Fluentd-style HELO (Fluentd's deny_keepalive inverted)
        self._state = "helo" if self._secret else "established"
        self._mode: str | None = "msgpack" if (strict or self._secret) else None
        buffer_cap = (max_request or FLUENTD_DECOMPRESSION_LIMIT) + (1 << 20)
        self._unpacker = _unpacker(buffer_cap)
        self._fed = 0
        self._consumed = 0
        self._json = _JsonStream(buffer_cap)

    @property
    def strict(self) -> bool:
        return self._limits.strict

    @property
    def established(self) -> bool:
        return self._state == "established"

    def initiate(self) -> bytes:
        """Bytes to send when the connection opens: the HELO if a shared key is set, else nothing."""
        if self._state != "helo" or self._secret is None:
            return b""
        self._state = "ping"
        style: HeloStyle = "fluent-bit" if self.strict else "fluentd"
        return build_helo(self._secret.nonce, self._secret.auth, style=style, keepalive=self._keepalive)

    def ack(self, chunk: bytes) -> bytes:
        """The ack for a request's chunk, in the connection's format (str in msgpack, JSON for JSON)."""
        if self._mode == "json":
            return json.dumps({"ack": chunk.decode("utf-8", "surrogateescape")}).encode(
                "utf-8", "surrogateescape"
            )
        return build_ack(chunk)

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Events for the complete requests in the bytes received so far. Raises ProtocolError."""
        if self._state in ("closed", "helo"):
            raise ProtocolError(
                "connection is closed" if self._state == "closed" else "initiate() was not called"
            )
        if self._mode is None and data:
            self._mode = "json" if data[:1] in (b"{", b"[") else "msgpack"
        try:
            if self._mode == "json":
                return self._collect(self._json.feed(data))
            return self._receive_msgpack(data)
        except ProtocolError:
            self._state = "closed"
            raise

    def _receive_msgpack(self, data: bytes) -> list[ServerEvent]:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise ProtocolError("incoming data exceed the buffer limit") from exc
        self._fed += len(data)
        events: list[ServerEvent] = []
        while self._state not in ("closed",):
            try:
                obj = self._unpacker.unpack()
            except msgpack.OutOfData:
                break
            except (msgpack.UnpackException, ValueError, TypeError) as exc:
                raise ProtocolError(f"invalid msgpack: {exc}", events) from exc
            end = self._unpacker.tell()
            size, self._consumed = end - self._consumed, end
            try:
                events.extend(self._handle(obj, size))
            except ProtocolError as exc:
                exc.events = events
                raise
        limit = self._limits.max_request
        if self.strict and limit and self._fed - self._consumed > limit:
            raise ProtocolError(f"incoming data exceed limit ({limit} bytes)", events)
        return events

    def _collect(self, objects: Iterable[tuple[object, int]]) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        for obj, size in objects:
            if self._state == "closed":
                break
            try:
                events.extend(self._handle(obj, size))
            except ProtocolError as exc:
                exc.events = events
                raise
        return events

    def _handle(self, obj: object, size: int) -> list[ServerEvent]:
        if self._state == "ping":
            return [self._handle_ping(obj)]
        event = _decode_request(obj, size, self._limits)
        return [] if event is None else [event]

    def _handle_ping(self, obj: object) -> PingReceived:
        secret = self._secret
        assert secret is not None
        fields = _ping_fields(obj, self.strict)
        if fields is None:
            if self.strict:
                raise ProtocolError(f"invalid PING: {_brief(obj)}")
            return self._refuse("invalid ping message", "", "")
        hostname, salt, digest, username, user_digest = fields
        host_text = hostname.decode("utf-8", "replace")
        user_text = username.decode("utf-8", "replace")
        expected = shared_key_digest(salt, hostname, secret.nonce, secret.shared_key)
        if not hmac.compare_digest(expected.encode("ascii"), digest):
            return self._refuse("shared_key mismatch", host_text, user_text, send_pong=not self.strict)
        if secret.users:
            password = secret.users.get(user_text)
            wanted = password_digest(secret.auth, username, password) if password is not None else ""
            if password is None or not hmac.compare_digest(wanted.encode("ascii"), user_digest):
                return self._refuse("username/password mismatch", host_text, user_text)
        self._state = "established"
        pong_digest = shared_key_digest(salt, secret.self_hostname, secret.nonce, secret.shared_key)
        reply = build_pong(ok=True, hostname=secret.self_hostname, digest=pong_digest)
        return PingReceived(host_text, user_text, True, "", reply)

    def _refuse(self, reason: str, hostname: str, username: str, *, send_pong: bool = True) -> PingReceived:
        self._state = "closed"
        reply = build_pong(ok=False, reason=reason) if send_pong else None
        return PingReceived(hostname, username, False, reason, reply)


def _ping_fields(obj: object, strict: bool) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """hostname, salt, digest, username, password digest of a well-formed PING, else None."""
    if not isinstance(obj, list) or len(obj) != 6 or obj[0] != "PING":
        return None
    allowed = (str,) if strict else (str, bytes)
    if not all(isinstance(item, allowed) for item in obj[1:]):
        return None
    hostname, salt, digest, username, user_digest = (_raw(item) for item in obj[1:])
    return hostname, salt, digest, username, user_digest


class _JsonStream:
    """Fluentd's JSON transport: concatenated JSON arrays on one connection (lenient mode only)."""

    def __init__(self, limit: int) -> None:
        self._decoder = json.JSONDecoder()
        self._utf8 = _utf8_decoder()
        self._text = ""
        self._limit = limit

    def feed(self, data: bytes) -> list[tuple[object, int]]:
        self._text += self._utf8.decode(data)
        out: list[tuple[object, int]] = []
        pos = 0
        text = self._text
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos == len(text):
                break
            try:
                obj, end = self._decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                # Most likely an incomplete value: wait for more, up to the limit.
                if len(text) - pos > self._limit:
                    raise ProtocolError("JSON request too large or malformed") from None
                break
            out.append((obj, end - pos))
            pos = end
        self._text = text[pos:]
        return out


def _utf8_decoder() -> Any:
    import codecs

    return codecs.getincrementaldecoder("utf-8")("surrogateescape")


# ------------------------------------------------------------------------------------------- request decoding


def _decode_request(obj: object, size: int, limits: _Limits) -> ServerEvent | None:
    strict = limits.strict
    if not isinstance(obj, list):
        if strict:
            what = "a nil heartbeat" if obj is None else _type_name(obj)
            raise ProtocolError(f"expected an array, got {what}")
        return None if obj is None else Ignored(f"incoming chunk is broken: {_type_name(obj)}", size)
    if limits.max_request and size > limits.max_request:
        if strict:
            raise ProtocolError(f"request of {size} bytes exceeds limit ({limits.max_request} bytes)")
        return Ignored(f"request of {size} bytes is over chunk_size_limit, dropped without ack", size)
    if len(obj) < 2:
        if strict:
            raise ProtocolError(f"array of invalid size {len(obj)}")
        return Ignored(f"array of invalid size {len(obj)}", size)
    tag = _tag(obj[0], strict)
    if tag is None:
        return Ignored(f"invalid tag type {_type_name(obj[0])}", size)
    second = obj[1]
    if isinstance(second, list):
        option = _option(obj, 2, limits, packed=False)
        entries, skipped = _check_entries(second, strict)
        return Forward(tag, entries, option, size, skipped)
    if isinstance(second, (str, bytes)):
        return _decode_packed(tag, obj, size, limits)
    return _decode_message(tag, obj, size, limits)


def _tag(value: object, strict: bool) -> str | None:
    if isinstance(value, str):
        return value
    if strict:
        raise ProtocolError(f"invalid tag format: {_type_name(value)} (must be str)")
    if isinstance(value, bytes):  # Ruby sees bin as a String too
        return value.decode("utf-8", "surrogateescape")
    return None


def _option(obj: list[Any], index: int, limits: _Limits, *, packed: bool) -> dict[Any, Any] | None:
    """The option map at obj[index], validated as Fluent Bit's get_options_chunk/get_chunk_event_type do."""
    if len(obj) <= index:
        return None
    option = obj[index]
    if not limits.strict:
        return option if isinstance(option, dict) else None
    if option is None:
        # "Old Docker 18.x sends a NULL options parameter": allowed, except where Fluent Bit reads the
        # event type of a 3-element PackedForward, which requires a map.
        if packed and len(obj) == 3:
            raise ProtocolError("invalid options field: nil (PackedForward needs a map)")
        return None
    if not isinstance(option, dict):
        raise ProtocolError(f"invalid options field: {_type_name(option)}")
    if "chunk" in option and not isinstance(option["chunk"], str):
        raise ProtocolError(f"invalid chunk type {_type_name(option['chunk'])} (must be str)")
    if packed:
        if any(not isinstance(k, str) for k in option):
            raise ProtocolError("invalid options field: non-str key")
        signal = option.get("fluent_signal", 0)
        if type(signal) is not int or not 0 <= signal <= 2:
            raise ProtocolError(f"invalid value in options fluent_signal: {signal!r}")
    elif "metadata" in option and not isinstance(option["metadata"], dict):
        raise ProtocolError("invalid options field: metadata must be a map")
    return option


def _valid_time(value: object, strict: bool, *, allow_float: bool) -> bool:
    if isinstance(value, EventTime):
        return True
    if type(value) is int:
        return value >= 0 or not strict
    return allow_float and strict and type(value) is float


def _check_entries(entries: Iterable[object], strict: bool) -> tuple[list[tuple[Time, dict[Any, Any]]], int]:
    """Valid `[time, record]` entries; strict raises on the first bad one, lenient skips and counts."""
    good: list[tuple[Time, dict[Any, Any]]] = []
    skipped = 0
    for entry in entries:
        checked = _entry(entry, strict)
        if checked is None:
            if strict:
                raise ProtocolError(f"invalid entry: {_brief(entry)}")
            skipped += 1
        else:
            good.append(checked)
    return good, skipped


def _entry(entry: object, strict: bool) -> tuple[Time, dict[Any, Any]] | None:
    if type(entry) is not list or len(entry) != 2:
        return None
    time, record = entry
    if type(time) is EventTime and type(record) is dict:  # the common case, checked cheaply
        return time, record
    if isinstance(time, list):  # Fluent Bit v2 shape: [[time, metadata], record]
        if len(time) != 2 or not isinstance(time[1], dict):
            return None
        time = time[0]
    if not _valid_time(time, strict, allow_float=True) or not isinstance(record, dict):
        return None
    return time, record


def _decode_message(tag: str, obj: list[Any], size: int, limits: _Limits) -> Message:
    strict = limits.strict
    time = obj[1]
    record = obj[2] if len(obj) > 2 else None
    if strict:
        if not (isinstance(time, EventTime) or (type(time) is int and time >= 0)):
            raise ProtocolError(f"invalid data format: time is {_type_name(time)}")
        if len(obj) < 3:
            raise ProtocolError("message mode requires at least 3 elements")
        if not isinstance(record, dict):
            raise ProtocolError("invalid data format, map expected")
    option = _option(obj, 3, limits, packed=False)
    if not strict and (not _valid_time(time, False, allow_float=False) or not isinstance(record, dict)):
        # Fluentd drops it and still acks: "retry never succeeded so return ack and drop incoming event".
        return Message(tag, [], option, size, 1)
    return Message(tag, [(time, record)], option, size)


def _decode_packed(tag: str, obj: list[Any], size: int, limits: _Limits) -> Request:
    strict = limits.strict
    payload = _raw(obj[1])
    if strict and limits.max_request and len(payload) > limits.max_request:
        raise ProtocolError(f"packedforward payload too large ({len(payload)} bytes)")
    option = _option(obj, 2, limits, packed=True)
    algorithm = _compression(payload, option, strict)
    if algorithm is not None:
        payload = _decompress(payload, algorithm, limits.max_decompressed)
    kind = PackedForward if algorithm is None else CompressedPackedForward
    if strict and option and option.get("fluent_signal", 0) != 0:
        return kind(tag, [], option, size)  # metrics or traces: acknowledged, not decoded here
    if limits.count_only:
        return kind(tag, [], option, size, counted=_count_entries(payload))
    entries, skipped = _check_entries(_unpack_entries(payload), strict)
    return kind(tag, entries, option, size, skipped)


def _compression(payload: bytes, option: Mapping[Any, Any] | None, strict: bool) -> str | None:
    named = option.get("compressed") if option else None
    if not strict:
        # Fluentd: any `compressed` other than "text" names the algorithm.
        if named is None or named == "text":
            return None
        return named if isinstance(named, str) else "gzip"
    # Fluent Bit trusts the magic bytes over the option, and sniffs even without the option.
    if payload[:2] == b"\x1f\x8b":
        return "gzip"
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return named if named in ("gzip", "zstd") else None


def _decompress(payload: bytes, algorithm: str, limit: int) -> bytes:
    if algorithm != "gzip":
        raise ProtocolError(f"compressed={algorithm!r} is not supported by this receiver")
    out = bytearray()
    data = payload
    while data:  # concatenated gzip members are one stream
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise ProtocolError(f"decompression failed: {exc}") from exc
        if len(out) > limit:
            raise ProtocolError(f"decompressed payload exceeds limit ({limit} bytes)")
        if not inflater.eof:
            raise ProtocolError("truncated gzip payload")
        data = inflater.unused_data
    return bytes(out)


def _count_entries(payload: bytes) -> int:
    """len(_check_entries(_unpack_entries(payload), strict=True)[0]), or its ProtocolError, computed in C."""
    try:
        return _c_count_entries(payload)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _unpack_entries(payload: bytes) -> list[object]:
    unpacker = _unpacker(max(len(payload), 1024))
    unpacker.feed(payload)
    entries = []
    end = 0  # tell() also counts a trailing partial object, so remember where the last whole one ended
    try:
        for obj in unpacker:
            entries.append(obj)
            end = unpacker.tell()
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ProtocolError(f"invalid msgpack in entries: {exc}") from exc
    if end != len(payload):
        raise ProtocolError("entries end in the middle of an event")
    return entries
