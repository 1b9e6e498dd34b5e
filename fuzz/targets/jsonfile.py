"""json-file encode, differential and byte-exact: driver/_speedups.c encode_lines against
jsonfile.encode_entries_pure, over whole batches; the dispatcher (encode_entries) must equal the reference
whatever C does. Then the reader: every line written decodes back to its stream and time, and decode_line on any
bytes (a torn or foreign json.log line) returns or raises ValueError, nothing else.

Input: the first byte picks encode (even) or decode (odd); the rest is carved into entries (fuzz/inputs.py) or
taken as one line."""

from __future__ import annotations

import atheris

from driver import jsonfile, speedups
from driver.jsonfile import encode_attrs, encode_entries_pure

from .. import inputs
from .common import Finding, outcome, same

MAX_LEN = 1 << 14
ATTRS = [None, b"", encode_attrs({"tag": "web", "env": "prod<&>"}), b'{"tag":"x"}']


def check_encode(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    attrs_json = fdp.PickValueInList(ATTRS)
    batch = inputs.entries(fdp)
    want = outcome(encode_entries_pure, batch, attrs_json)
    got = outcome(speedups.encode_lines, batch, attrs_json)
    if got[0] != "ok":
        raise Finding(f"encode_lines raised instead of declining: {got!r}")
    if got[1] is not None:  # None: declined, the Python runs
        same("encode_lines", got, want)
    dispatched = outcome(jsonfile.encode_entries, batch, attrs_json)
    same("encode_entries", dispatched[:2], want[:2])
    if want[0] == "ok":
        for e, line in zip(batch, want[1], strict=True):
            if not inputs.INT64_MIN <= e[1] <= inputs.INT64_MAX:  # year > 9999: no RFC3339 time reads it back
                continue
            _, stream, time_nano, attrs = jsonfile.decode_line(line)
            same("decode_line(encoded)", (stream, time_nano, attrs), (e[0], e[1], attrs_json or None))


def check_decode(line: bytes) -> None:
    try:
        jsonfile.decode_line(line)
    except ValueError:
        pass


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        check_decode(data[1:])
    else:
        check_encode(data[1:])


def seeds() -> dict[str, bytes]:
    from fuzz.seeds import jsonfile_lines

    return {f"decode-{name}-{i}": b"\x01" + line for name, lines in jsonfile_lines().items()
            for i, line in enumerate(lines[:4])}
