"""`python -m bench.loki_receiver`: tests/support/loki.py's receiver in its count-only mode, reporting its counters
live, the Loki counterpart of bench.receiver.

It decodes each push as Loki does (snappy block, protobuf PushRequest) but keeps nothing and validates nothing
beyond the decoding: the protobuf library's C backend parses the message and each stream's entries are only
counted (no Python object per entry). It prints a JSON line whenever its counters changed (checked every
--interval seconds), stamped with CLOCK_MONOTONIC; a push is counted just before its 204 goes out:

    {"listening": 41234, "counts_in_c": true}
    {"t": 1234.567, "records": 1000000, "requests": 37, "protocol_errors": 0}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from tests.support.loki import LokiReceiver, counts_in_c


async def serve(port: int, interval: float) -> None:
    receiver = LokiReceiver(count_only=True)
    await receiver.start(port)
    print(json.dumps({"listening": int(receiver.url.split(":")[2].split("/")[0]), "counts_in_c": counts_in_c()}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    last = None
    while not stop.is_set():
        stats = {"records": receiver.counted, "requests": receiver.pushes,
                 "protocol_errors": sum(1 for s in receiver.statuses if s >= 300)}
        if stats != last:
            last = stats
            print(json.dumps({"t": time.monotonic(), **stats}), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    await receiver.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loki_receiver", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="on 127.0.0.1")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between counter checks")
    args = p.parse_args(argv)
    asyncio.run(serve(args.port, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
