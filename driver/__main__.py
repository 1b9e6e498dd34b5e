"""``python -m driver``: listen on the plugin socket at once, then start the service.

dockerd dials a managed plugin's socket 0.5 s after starting it and then only every 3 s. Binding before the heavy
imports (aiohttp alone takes ~0.4 s) lets the kernel queue that first connection, so `docker plugin enable` and
a crash restart take half a second instead of three and a half.
"""

from __future__ import annotations

import os
import socket
import sys

from driver.settings import Settings


def listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # left by a killed predecessor
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)  # dockerd runs as root; nobody else talks to a log driver
    sock.listen(128)
    return sock


def main() -> None:
    if sys.argv[1:2] == ["status"]:  # the status view, not the plugin (stdlib only: runs from a checkout)
        from driver.status import main as status_main

        sys.exit(status_main(sys.argv[2:]))
    settings = Settings.from_env()
    listener = listen(settings.socket)
    from driver.server import run  # the heavy imports, after the socket accepts connections

    run(settings, listener)


if __name__ == "__main__":
    main()
