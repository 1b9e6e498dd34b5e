"""The docker CLI as a Python call: output captured, errors as exceptions with dockerd's message."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from .procs import SBIN_PATH, SupportError


class DockerError(SupportError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess) -> None:
        err = proc.stderr.decode(errors="replace").strip() if proc.stderr else ""
        super().__init__(f"docker {' '.join(args)} failed (exit {proc.returncode}): {err}")
        self.returncode = proc.returncode
        self.stderr = err


class RunResult(NamedTuple):
    """What `docker run` gave: its exit code, the attached output and the container it created."""

    rc: int
    stdout: bytes
    stderr: bytes
    container_id: str


def find_binary(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)
    if not path:
        raise SupportError(f"{name} not found: run scripts/install-deps.sh (Debian package docker.io)")
    return path


class DockerCLI:
    """`docker ...` against `host` (None: whatever DOCKER_HOST or the CLI's default says)."""

    def __init__(self, host: str | None = None) -> None:
        self._host = host

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, DOCKER_BUILDKIT="0", PATH=os.environ.get("PATH", "") + ":" + SBIN_PATH)
        if self._host:
            env["DOCKER_HOST"] = self._host
        return env

    def docker(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [find_binary("docker"), *args],
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise DockerError(args, proc)
        return proc

    def run(
        self,
        image: str,
        *cmd: str,
        log_driver: str | None = None,
        log_opts: Mapping[str, str] | None = None,
        name: str | None = None,
        rm: bool = False,
        network: str | None = "none",
        extra_args: Iterable[str] = (),
        timeout: float = 120,
    ) -> RunResult:
        """`docker run` (attached) and return its exit code, output and container id. The container is
        kept unless `rm`; `network` defaults to none (no warning on a --bridge=none daemon)."""
        cid_dir = tempfile.mkdtemp(prefix="lbcid.")
        cidfile = Path(cid_dir) / "cid"  # docker run refuses an existing cidfile
        args = ["run", "--cidfile", str(cidfile)]
        if rm:
            args.append("--rm")
        if name:
            args += ["--name", name]
        if network:
            args += ["--network", network]
        if log_driver:
            args += ["--log-driver", log_driver]
        for key, value in (log_opts or {}).items():
            args += ["--log-opt", f"{key}={value}"]
        args += [*extra_args, image, *cmd]
        proc = self.docker(*args, check=False, timeout=timeout)
        try:
            cid = cidfile.read_text().strip()
        except OSError:
            cid = ""
        shutil.rmtree(cid_dir, ignore_errors=True)
        return RunResult(proc.returncode, proc.stdout, proc.stderr, cid)

    def remove_containers(self, log_driver: str | None = None) -> None:
        """docker rm -f every container (or those logging to `log_driver`, with or without :latest)."""
        ids = self.docker("ps", "-aq", "--no-trunc").stdout.decode().split()
        if not ids:
            return
        if log_driver is not None:
            fmt = "{{.Id}} {{.HostConfig.LogConfig.Type}}"
            rows = self.docker("inspect", "-f", fmt, *ids, check=False).stdout.decode().splitlines()
            wanted = {log_driver, log_driver.removesuffix(":latest"), log_driver + ":latest"}
            ids = [row.split()[0] for row in rows if len(row.split()) == 2 and row.split()[1] in wanted]
        if ids:
            self.docker("rm", "-f", *ids, check=False)
