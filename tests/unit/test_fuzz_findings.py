"""What `make fuzz` found (fuzz/README.md, "Findings"), one test each, fast and deterministic: the input that broke
a property, replayed on the code that now keeps it."""

from __future__ import annotations

import math
import random

from driver.outputs.batching import Backoff
from driver.outputs.loki.client import answer, parse_retry_after


def test_a_nan_retry_after_is_no_retry_after():
    # fuzz target loki_response: float() takes "nan", and min/max keep a NaN, so a server's `Retry-After: nan`
    # became a NaN wait in the PushResult the batcher sleeps on.
    for spelling in ("nan", "NaN", "-nan", " nan "):
        assert parse_retry_after(spelling) is None, spelling
        result = answer(429, "slow down", spelling)
        assert result.retry_after is None
        wait = Backoff(0.5, 30.0, random.Random(1)).next(result.retry_after)
        assert math.isfinite(wait) and 0.5 <= wait <= 1.0
    assert parse_retry_after("inf") == parse_retry_after("1e400") == 3600.0 and parse_retry_after("-inf") == 0.0


def test_a_2xx_answer_nested_deeper_than_the_stack_is_retried_and_the_batcher_carries_on():
    # fuzz target es_response: json.loads raised RecursionError (not a ValueError) on a 200 body of thousands of
    # "[" (a broken proxy, a hostile endpoint), out of EsClient.bulk and the batcher's request loop: the loop's task
    # died and the part it held was never settled, so that container's Elasticsearch output waited for ever.
    import asyncio

    from aiohttp import web

    from driver.options import parse_options
    from driver.outputs.elasticsearch.batcher import Batcher, EsStats, Part
    from driver.outputs.elasticsearch.client import EsClient
    from driver.outputs.elasticsearch.options import settings_from

    answers = [b"[" * 5000, b'{"errors":true,"items":' + b"[" * 5000, b'{"errors":false,"items":[]}']

    async def bulk(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=answers.pop(0), content_type="application/json")

    async def main():
        app = web.Application()
        app.router.add_post("/_bulk", bulk)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = EsClient(settings_from(parse_options({"hosts": f"http://127.0.0.1:{port}"})))
        waits = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        batcher = Batcher(client, bulk_bytes=1 << 20, batch_wait=0.0, backoff_init=0.01, backoff_max=0.01,
                          sleep=no_wait)
        part = Part([b'{"create":{"_index":"logs-a-b"}}\n{"message":"m"}\n'], EsStats(), urgent=True)
        try:
            settled = await asyncio.wait_for(batcher.send(part), 10)  # a deadline, not a pace: never settled before
        finally:
            await batcher.close()
            await runner.cleanup()
        return settled, part, waits

    settled, part, waits = asyncio.run(main())
    assert settled.indexed == 1 and not settled.dropped and len(waits) == 2  # two rounds retried, then indexed
    assert part.stats.retried == 2 and part.stats.statuses[200] == 3 and "not a bulk answer" in part.stats.last_error
