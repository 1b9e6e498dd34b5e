"""Forward record packing, differential: driver/_speedups.c encode_records (through RecordEncoder) against
RecordEncoder(pure=True), whole batches byte for byte; and each packed Entry unpacks, using every byte, to
``[time, record_for(entry)]``, the record Docker's fluentd driver sends.

Input: carved into the per-container fields (id, name, extras, sometimes one that shadows a per-record key and
forces the generic packer), the time format, the invalid-UTF-8 policy, a record id key, and a batch."""

from __future__ import annotations

import atheris
import msgpack

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


def seeds() -> dict[str, bytes]:
    return {}
