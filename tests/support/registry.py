"""A throwaway local registry (Debian's `docker-registry`, distribution 2.8) for `docker plugin push` and
`docker plugin upgrade`: no auth, storage in its own directory, on 127.0.0.1 (which dockerd treats as an insecure
registry by default, so no TLS and no daemon.json change are needed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .cli import find_binary
from .procs import SupportError, stop_pid, wait_for

CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """`LocalRegistry().start()`; `.address` is `127.0.0.1:PORT` for references like `ADDRESS/name:tag`."""

    def __init__(self, base: Path | str | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="lbreg."))
        self.port = _free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "registry.log"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 20) -> LocalRegistry:
        try:
            binary = find_binary("docker-registry")
        except SupportError:
            raise SupportError(
                "docker-registry not found: run scripts/install-deps.sh (Debian package docker-registry)"
            ) from None
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        config = self.base / "config.yml"
        config.write_text(CONFIG.format(root=self.base / "data", port=self.port))
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise SupportError(f"docker-registry exited with {self._proc.returncode}: {self.log_path.read_text()}")
            return self.answers()

        try:
            wait_for(f"the registry on {self.address}", ready, timeout)
        except SupportError:
            self.stop()
            raise
        return self

    def stop(self, purge: bool = True) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_pid(self._proc.pid, 10, self._proc)
        self._proc = None
        if purge:
            shutil.rmtree(self.base, ignore_errors=True)
