"""`python3 -m tests.support COMMAND`: the fixtures' helpers for scripts (plugin/demo.sh uses them).

  dockerd-up STATE_DIR          start a private dockerd (STATE_DIR <= 60 chars); prints export DOCKER_HOST=...
  dockerd-down STATE_DIR [--purge]
                                stop it and clean up what a forced shutdown leaks; --purge deletes STATE_DIR
  busybox-image [TAG]           import bb:latest (or TAG) into the daemon at DOCKER_HOST, without a registry
"""

from __future__ import annotations

import argparse
import sys

from .cli import DockerCLI
from .dockerd import Dockerd
from .image import import_busybox
from .procs import SupportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.support", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("dockerd-up")
    up.add_argument("state_dir")
    up.add_argument("--timeout", type=float, default=60)
    down = sub.add_parser("dockerd-down")
    down.add_argument("state_dir")
    down.add_argument("--purge", action="store_true")
    image = sub.add_parser("busybox-image")
    image.add_argument("tag", nargs="?", default="bb:latest")
    args = parser.parse_args(argv)
    try:
        if args.command == "dockerd-up":
            daemon = Dockerd(args.state_dir).start(args.timeout)
            print(f"export DOCKER_HOST={daemon.host}")
        elif args.command == "dockerd-down":
            Dockerd(args.state_dir).stop(purge=args.purge)
        else:
            print(import_busybox(DockerCLI(), args.tag))
    except SupportError as e:
        print(f"tests.support {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
