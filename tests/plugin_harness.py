"""Drive a real logbridge process the way dockerd's plugin adapter does, without dockerd.

``PluginProcess`` runs ``python -m driver`` with its own socket, log root and state dir. ``FakeLogger`` plays the
adapter: it creates the FIFO, holds it O_RDWR like dockerd, calls StartLogging, writes frames, calls StopLogging,
closes and unlinks. Used by the tests that need many runs or kills, which a real dockerd would make slow.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests_unixsocket

from driver.frames import encode_entry

ROOT = Path(__file__).resolve().parent.parent


def info_for(container_id: str, config: dict[str, str] | None = None, name: str = "/test") -> dict:
    return {
        "Config": config or {},
        "ContainerID": container_id,
        "ContainerName": name,
        "ContainerEntrypoint": "sh",
        "ContainerArgs": ["-c", "true"],
        "ContainerImageID": "sha256:" + "d" * 64,
        "ContainerImageName": "bb:latest",
        "ContainerCreated": "2026-11-26T14:11:13.367552088Z",
        "ContainerEnv": ["PATH=/bin"],
        "ContainerLabels": {},
        "LogPath": "",
        "DaemonName": "docker",
    }


class PluginProcess:
    def __init__(self, base: Path, env: dict[str, str] | None = None, stdout: Path | None = None) -> None:
        self.base = base
        self.socket = str(base / "p.sock")
        self.log_root = base / "logs"
        self.state_dir = base / "state"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.session = requests_unixsocket.Session()
        self.stdout = stdout or base / "plugin.out"
        self.preexec_fn = None  # run in the child before the plugin starts (e.g. lower a limit)

    def start(self) -> PluginProcess:
        env = dict(os.environ, LOGBRIDGE_SOCKET=self.socket, LOGBRIDGE_LOG_ROOT=str(self.log_root),
                   LOGBRIDGE_STATE_DIR=str(self.state_dir), PYTHONPATH=str(ROOT), **self.env)
        out = open(self.stdout, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([sys.executable, "-m", "driver"], env=env, stdout=out, stderr=out, cwd=ROOT,
                                     preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited: {self.stdout.read_text()[-2000:]}")
            try:
                if self.call("/LogDriver.Capabilities") is not None:
                    return self
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
        raise RuntimeError("plugin did not start listening")

    def url(self, path: str) -> str:
        return "http+unix://" + urllib.parse.quote(self.socket, safe="") + path

    def call(self, path: str, body: dict | None = None) -> dict:
        data = b"" if body is None else json.dumps(body).encode() + b"\n"
        r = self.session.post(self.url(path), data=data, timeout=30)
        r.raise_for_status()
        return r.json()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 10) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_file(self, container_id: str) -> Path:
        return self.log_root / container_id / f"{container_id}-json.log"


class FakeLogger:
    """One dockerd logger instance: a fresh FIFO per StartLogging, held open read-write as dockerd holds it."""

    def __init__(self, plugin: PluginProcess, container_id: str | None = None,
                 config: dict[str, str] | None = None, fifo_dir: Path | None = None) -> None:
        self.plugin = plugin
        self.container_id = container_id or secrets.token_hex(32)
        self.config = config or {}
        fifo_dir = fifo_dir or plugin.base / "fifos"
        fifo_dir.mkdir(exist_ok=True)
        self.path = str(fifo_dir / secrets.token_hex(32))
        self.fd = -1

    def start(self) -> dict:
        os.mkfifo(self.path, 0o700)
        self.fd = os.open(self.path, os.O_RDWR)
        return self.plugin.call("/LogDriver.StartLogging",
                                {"File": self.path, "Info": info_for(self.container_id, self.config)})

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def log(self, line: bytes, source: str = "stdout", time_nano: int | None = None) -> None:
        self.write(encode_entry((source, time_nano or time.time_ns(), line, False, False, "", 0)))

    def stop(self) -> dict:
        reply = self.plugin.call("/LogDriver.StopLogging", {"File": self.path})
        self.close()
        return reply

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if os.path.exists(self.path):
            os.unlink(self.path)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
