"""The floor: a logging plugin that does nothing with the lines (issue 13.5), for `make bench`'s path `floor`.

It answers the log-driver endpoints and splices each container's FIFO to /dev/null, so what a sitting measures for
it is what dockerd's plugin adapter costs by itself (encoding every line as a protobuf frame, the FIFO writes):
the limit no plugin can beat. Two things make it measure the adapter and nothing else:

* it reads the FIFO as driver/fifo.py does: a 1 MiB pipe, and after a wake-up that moved little a 2 ms pause so
  that the pipe gathers a batch (woken per frame, a reader costs more than the adapter and makes dockerd retry
  writes into a full pipe);
* it claims ReadLogs (answered with no entries): without it dockerd keeps its dual-logging cache, a json-file copy
  of every line, which is dockerd's work and not the adapter's.

Standard library only: it runs with the plugin rootfs's Python (bench/run.py puts it there next to logbridge).
"""

from __future__ import annotations

import fcntl
import json
import os
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

SOCKET = "/run/docker/plugins/floor.sock"
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
COALESCE_BYTES = 256 << 10  # driver/fifo.py's figures
COALESCE_SECONDS = 0.002


def drain(path: str) -> None:
    """Splice the FIFO to /dev/null until dockerd closes its end."""
    fd = os.open(path, os.O_RDONLY)  # blocks until dockerd's writer opens: this thread only
    try:
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default pipe
        null = os.open("/dev/null", os.O_WRONLY)
        try:
            while moved := os.splice(fd, null, PIPE_SIZE):
                if moved < COALESCE_BYTES:
                    time.sleep(COALESCE_SECONDS)
        finally:
            os.close(null)
    finally:
        os.close(fd)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = json.loads(body) if body.strip() else {}
        if self.path == "/Plugin.Activate":
            self.reply({"Implements": ["LogDriver"]})
        elif self.path == "/LogDriver.Capabilities":
            self.reply({"Cap": {"ReadLogs": True}})
        elif self.path == "/LogDriver.StartLogging":
            threading.Thread(target=drain, args=(request["File"],), daemon=True).start()
            self.reply({"Err": ""})
        elif self.path == "/LogDriver.StopLogging":
            self.reply({"Err": ""})  # the drain ends when dockerd closes the FIFO, right after this answer
        elif self.path == "/LogDriver.ReadLogs":
            self.reply(None, content_type="application/x-json-stream")  # no entries
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def reply(self, obj: object, content_type: str = "application/vnd.docker.plugins.v1+json") -> None:
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass  # nothing per request: the floor does no work of its own


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else SOCKET
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    with Server(path, Handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
