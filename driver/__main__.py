"""``python -m driver``: check the directories, listen on the plugin socket at once, then start the service.

dockerd dials a managed plugin's socket 0.5 s after starting it and then only every 3 s. Binding before the heavy
imports (aiohttp alone takes ~0.4 s) lets the kernel queue that first connection, so `docker plugin enable` and
a crash restart take half a second instead of three and a half.

A plugin that cannot start must say why in one JSON line (dockerd's log is the only place an operator sees it)
and leave no socket behind: dockerd would keep dialing a dead one, and `docker run` would take 30 s to fail.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys

from driver import logsetup
from driver.settings import Settings, StartupError, socket_path

log = logging.getLogger("driver")


def listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # left by a killed predecessor
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)  # dockerd runs as root; nobody else talks to a log driver
    sock.listen(128)
    return sock


# What to tell the operator, per directory: (what it is, its managed-plugin mount, its legacy-plugin variable).
_DIRS = (("log root", "log-root.source", "LOGBRIDGE_LOG_ROOT"),
         ("state dir", "state-dir.source", "LOGBRIDGE_STATE_DIR"))


def prepare_dirs(settings: Settings) -> None:
    """Create the log root and the state dir and prove each takes a new file, before anything else uses them.

    A full disk is no reason to refuse starting (the plugin drains FIFOs and counts drops while it is full); a
    read-only or foreign mount, a file where the directory should be, or missing rights are."""
    for path, mode, (what, mount, variable) in ((settings.log_root, 0o755, _DIRS[0]),
                                                 (settings.state_dir, 0o700, _DIRS[1])):
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
            probe = os.path.join(path, f".logbridge-probe-{os.getpid()}")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                continue
            raise StartupError(
                f"cannot write to the {what} {path}: {exc.strerror}. Make it a writable directory (a read-write "
                f"mount), or point logbridge elsewhere: `docker plugin set logbridge {mount}=/host/dir` for the "
                f"managed plugin, {variable} for a legacy one") from None


def _fail(message: str, exc_info: bool = False) -> None:
    log.error(message, exc_info=exc_info)
    try:
        os.unlink(socket_path(os.environ))  # ours, or a dead predecessor's
    except OSError:
        pass
    sys.exit(1)


def main() -> None:
    if sys.argv[1:2] == ["status"]:  # the status view, not the plugin (stdlib only: runs from a checkout)
        from driver.status import main as status_main

        sys.exit(status_main(sys.argv[2:]))
    logsetup.setup(os.environ.get("LOG_LEVEL") or "info")
    try:
        settings = Settings.from_env()
        prepare_dirs(settings)
        listener = listen(settings.socket)
        from driver.server import run  # the heavy imports, after the socket accepts connections

        run(settings, listener)
    except StartupError as exc:
        _fail(f"logbridge cannot start: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything else at startup: still one JSON line, still no socket
        _fail(f"logbridge stopped on an unexpected error: {exc}", exc_info=True)


if __name__ == "__main__":
    main()
