"""`python -m bench.receiver`: driver.receiver's forward server with no output, reporting its counters live.

The same Receiver as `python -m driver.receiver --count-only` (acks on, Fluent Bit's strictness), but instead of
one summary at exit it prints a JSON line on stdout whenever its counters changed (checked every --interval
seconds), stamped with CLOCK_MONOTONIC, so the benchmark can tell when the last record of a run was acked:

    {"listening": 41234}
    {"t": 1234.567, "records": 1000000, "acks": 37, "requests": 37, "protocol_errors": 0, "connections": 1}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import asdict

from driver.outputs.forward import codec
from driver.receiver import Receiver, ReceiverConfig


async def serve(listen: str, interval: float) -> None:
    receiver = Receiver(ReceiverConfig(listen=listen), sink=None)
    await receiver.start()
    print(json.dumps({"listening": receiver.address.port, "counts_in_c": codec.COUNT_SPEEDUPS}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    last = None
    while not stop.is_set():
        stats = asdict(receiver.stats)
        if stats != last:
            last = stats
            print(json.dumps({"t": time.monotonic(), **stats}), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    await receiver.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="tcp://127.0.0.1:0")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between counter checks")
    args = p.parse_args(argv)
    asyncio.run(serve(args.listen, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
