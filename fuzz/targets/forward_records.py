"""Forward record packing, differential: driver/_speedups.c encode_records (through RecordEncoder) against
RecordEncoder(pure=True), whole batches byte for byte; and each packed Entry unpacks, using every byte, to
``[time, record_for(entry)]``, the record Docker's fluentd driver sends. Then encode_record_frames (through
RecordEncoder.encode_frames: journal frames straight to Entries, the forward sink's direct batches) against the
decoded way: the frames decode_frames takes, cut at the first chunk to join or Entry over the budget, packed as
RecordEncoder(pure=True) packs FrameDecoder(pure=True)'s entries of them, record ids from their offsets.

Input: carved into the per-container fields (id, name, extras, sometimes one that shadows a per-record key and
forces the generic packer), the time format, the invalid-UTF-8 policy, a record id key, and a batch; what is
left into a journal stream (frames of entries, any bytes between them, a torn tail), a budget, partials on or
off and the first frame's journal offset."""

from __future__ import annotations

import atheris
import msgpack

from driver import speedups
from driver.frames import MAX_FRAME, FrameDecoder
from driver.outputs.forward import codec
from driver.outputs.forward.codec import RecordEncoder, pack_entry, record_for

from .. import inputs
from .common import Finding, outcome, same

MAX_LEN = 1 << 14
SHADOWING = sorted(codec._PARTIAL_KEYS | {"source", "log"})


def unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape", ext_hook=codec._ext_hook)


def static_fields(fdp) -> dict[str, str]:
    static = {"container_id": fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)),
              "container_name": fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20))}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        key = (fdp.PickValueInList(SHADOWING) if fdp.ConsumeIntInRange(0, 7) == 0
               else fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 10)))
        static[key] = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    return static


def fuzz_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    static = static_fields(fdp)
    options = {"time_format": fdp.PickValueInList(["event_time", "integer"]),
               "invalid_utf8": fdp.PickValueInList(["keep", "replace"]),
               "record_id_key": fdp.PickValueInList([None, None, "_id"])}
    odd = fdp.ConsumeIntInRange(0, 3) == 0
    batch = inputs.entries(fdp, odd=odd)
    ids = [str(i * 977) for i in range(len(batch))] if options["record_id_key"] else None
    fast = outcome(RecordEncoder(static, **options).encode_batch, batch, ids)
    reference = outcome(RecordEncoder(static, **options, pure=True).encode_batch, batch, ids)
    same("encode_batch", fast[:2], reference[:2])
    check_frames(fdp, static, options)  # from the bytes left: the corpus's inputs still mean what they did
    if odd or reference[0] != "ok" or options["invalid_utf8"] != "keep":  # record_for's domain: decoded entries
        return
    for i, (e, packed) in enumerate(zip(batch, reference[1], strict=True)):
        record = record_for(e, static)
        if ids:
            record[options["record_id_key"]] = ids[i]
        want = outcome(pack_entry, e[1], record, options["time_format"])
        if want[0] != "ok":
            raise Finding(f"the fast path packed what the generic packer refuses: {want!r}")
        same("unpacked Entry", unpack(packed), unpack(want[1]))


def check_frames(fdp, static: dict[str, str], options: dict) -> None:
    stream = inputs.journal(fdp)
    budget = fdp.PickValueInList([1 << 30, 0, 200]) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 4000)
    partials, start = fdp.ConsumeBool(), fdp.ConsumeIntInRange(0, 2**40)
    encoder = RecordEncoder(static, **options)
    got = encoder.encode_frames(stream, budget, partials=partials, start=start, id_prefix="p-")
    if got is None:
        if encoder.encodes_frames:
            raise Finding("encode_frames returned None though the encoder packs frames in C")
        return
    offsets: list[int] = []
    entries, stop, _ = speedups.decode_frames(stream, 0, offsets)
    key = options["record_id_key"]
    pure = RecordEncoder(static, **options, pure=True)
    records = pure.encode_batch(entries, [f"p-{start + at:x}" for at in offsets] if key else None)
    want = None
    size = 0
    for k, (e, record) in enumerate(zip(entries, records, strict=True)):
        if (e[3] and not partials) or size + len(record) > budget:
            want = (offsets[k], k, True, b"".join(records[:k]))
            break
        size += len(record)
    if want is None:
        rest = len(stream) - stop
        length = int.from_bytes(stream[stop : stop + 4], "big") if rest >= 4 else 0
        torn = rest < 4 or (0 < length <= MAX_FRAME and length > rest - 4)
        want = (stop, len(entries), not torn, b"".join(records))
    same("encode_frames", tuple(got), want)
    # The bytes it took, the decoded way: every frame one entry, nothing skipped, the same Entries.
    decoder = FrameDecoder(pure=True)
    offsets = []
    taken, used = decoder.decode(stream[: got[0]], offsets=offsets)
    same("decoded the same frames", (used, len(taken), decoder.skipped_bytes), (got[0], got[1], 0))
    same("packed as the decoded way",
         got[3], b"".join(pure.encode_batch(taken, [f"p-{start + at:x}" for at in offsets] if key else None)))


def seeds() -> dict[str, bytes]:
    return {}
