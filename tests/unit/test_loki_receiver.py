"""The test Loki receiver's own rules (the distributor's validation and partial acceptance), over HTTP."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from driver.outputs.loki import codec
from tests.support.loki import go_unquote, loki_receiver, parse_labels

NOW = time.time_ns()


def body(*streams: tuple[str, list[bytes]]) -> bytes:
    out = []
    for labels, lines in streams:
        buf = bytearray()
        for i, line in enumerate(lines):
            codec.append_entry(buf, NOW + i, line)
        out.append(codec.stream_bytes(labels, buf))
    return codec.compress(codec.push_request(out))


def post(data: bytes, **kw):
    async def main():
        async with loki_receiver(**kw) as rx, aiohttp.ClientSession() as s:
            r = await s.post(rx.url, data=data, headers={"Content-Type": codec.CONTENT_TYPE})
            return r.status, await r.text(), rx

    return asyncio.run(main())


def test_labels_are_parsed_sorted_and_empty_values_dropped():
    assert parse_labels('{b="2", a="x\\"y", e=""}') == [("a", 'x"y'), ("b", "2")]
    assert go_unquote(codec.go_quote("tab\there é \x01 \u200b")[1:-1]) == "tab\there é \x01 \u200b"


def test_invalid_streams_are_refused_and_the_valid_ones_stored():
    status, text, rx = post(body(('{a="1"}', [b"kept"]), ('{a="1", a="2"}', [b"dup names"]),
                                 ("{9x=\"bad\"}", [b"bad name"]), ('{a="2"}', [b"ok", b"x" * 300_000])))
    assert status == 400 and "total ignored: 3 out of 5" in text
    assert sorted(rx.lines()) == [b"kept", b"ok"]


def test_too_many_label_names_but_service_name_is_not_counted():
    names = ", ".join(f'l{i}="v"' for i in range(15))
    status, _, _ = post(body(("{" + names + ', service_name="s"}', [b"fine"])))
    assert status == 204
    status, _, _ = post(body(("{" + names + ', extra="s"}', [b"one too many"])))
    assert status == 400


def test_no_streams_is_422_and_missing_tenant_401():
    assert post(codec.compress(b""))[0] == 422
    assert post(body(('{a="1"}', [b"x"])), require_tenant=True)[0] == 401
