"""A private dockerd: own state dir, sockets, containerd namespaces, no bridge and no iptables.

Everything of the daemon lives under one SHORT state dir (<= 60 chars: dockerd and containerd put unix
sockets below it, and those are limited to 107 bytes):

    docker.sock  dockerd.pid  dockerd.log  daemon.json  data/  exec/  cli/

Host-global and shared with every other daemon on the machine (dockerd 20.10 hard-codes them): managed
plugin sockets in /run/docker/plugins/<plugin id>/, legacy plugin discovery in /run/docker/plugins and
/etc/docker/plugins, legacy log FIFOs in /run/docker/logging. Hence unique plugin names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .cli import DockerCLI, find_binary
from .procs import (
    SBIN_PATH,
    SupportError,
    alive,
    all_pids,
    children,
    cmdline,
    signal_pid,
    stop_pid,
    unix_http,
    unmount_all,
    wait_for,
)

MAX_STATE_LEN = 60


class Dockerd(DockerCLI):
    """Control of one private dockerd (and its docker CLI). `start()` and `stop()` may be called from
    different processes: the pidfile and the command line identify the daemon."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        config: Mapping | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="lbd.", dir="/tmp")
        self.state = Path(os.path.realpath(state_dir))
        if len(str(self.state)) > MAX_STATE_LEN:
            raise SupportError(
                f"dockerd state dir {self.state} is {len(str(self.state))} chars; it must be"
                f" <= {MAX_STATE_LEN} (unix socket paths below it are limited to 107 bytes)"
            )
        self.config = dict(config or {})
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.namespace = "lb-" + hashlib.sha1(str(self.state).encode()).hexdigest()[:10]
        self._proc: subprocess.Popen | None = None
        super().__init__(self.host)

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.state / "data"

    @property
    def exec_root(self) -> Path:
        return self.state / "exec"

    @property
    def pidfile(self) -> Path:
        return self.state / "dockerd.pid"

    @property
    def log_path(self) -> Path:
        return self.state / "dockerd.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker CLI calls against this daemon (own CLI config dir too)."""
        return dict(super().env, DOCKER_CONFIG=str(self.state / "cli"))

    # ---- lifecycle ---------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of OUR running dockerd (checked against its command line), else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if alive(pid) and str(self.pidfile) in cmdline(pid):
            return pid
        return None

    def is_up(self) -> bool:
        try:
            status, _ = unix_http(str(self.socket), "GET", "/_ping", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def args(self) -> list[str]:
        options = {
            "-H": self.host,
            "--data-root": str(self.data_root),
            "--exec-root": str(self.exec_root),
            "--pidfile": str(self.pidfile),  # the default /var/run/docker.pid is shared
            "--config-file": str(self.state / "daemon.json"),  # not /etc/docker/daemon.json
            # dockerd 20.10 reuses a system containerd if /run/containerd/containerd.sock exists:
            # own namespaces keep two daemons from seeing each other's tasks
            "--containerd-namespace": self.namespace,
            "--containerd-plugins-namespace": self.namespace + "-plugins",
        }
        args = [find_binary("dockerd")]
        for name, value in options.items():
            args += [name, value]
        # no docker0, no iptables rules: nothing to clash with another daemon (use --network none/host)
        return [*args, "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false", *self.extra_args]

    def start(self, timeout: float = 60) -> Dockerd:
        """Start the daemon (idempotent) and wait until it answers /_ping."""
        pid = self.pid()
        if pid:  # already running (maybe started by another process): just wait for it

            def up() -> bool:
                if not alive(pid):
                    raise SupportError(f"dockerd {pid} died:\n{self.log_tail()}")
                return self.is_up()

            wait_for("dockerd to answer /_ping", up, timeout)
            return self
        self.state.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(exist_ok=True)
        self.exec_root.mkdir(exist_ok=True)
        (self.state / "daemon.json").write_text(json.dumps(self.config))
        self.pidfile.unlink(missing_ok=True)
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":" + SBIN_PATH, **self.extra_env)
        env.pop("DOCKER_HOST", None)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
            )

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise SupportError(f"dockerd exited with {self._proc.returncode}")
            return self.is_up()

        try:
            wait_for("dockerd to answer /_ping", ready, timeout)
        except SupportError as e:
            if self._proc.poll() is None:
                self.stop()
            raise SupportError(f"{e}\n--- {self.log_path}:\n{self.log_tail(offset)}") from None
        return self

    def stop(self, timeout: float = 40, purge: bool = False) -> None:
        """SIGTERM the daemon (SIGKILL after `timeout`), then remove what a forced shutdown leaks:
        containerd shims of our containerd and their processes, mounts under the state dir, and our
        managed plugins' socket dirs in /run/docker/plugins. `purge` also deletes the state dir."""
        pid = self.pid()
        if pid:
            proc = self._proc if self._proc and self._proc.pid == pid else None
            stop_pid(pid, timeout, proc)
        elif self._proc is not None:
            self._proc.poll()
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        self._kill_leftover_shims()
        left = unmount_all(self.state)
        for plugin_dir in self.data_root.glob("plugins/*"):
            if len(plugin_dir.name) == 64:
                shutil.rmtree(f"/run/docker/plugins/{plugin_dir.name}", ignore_errors=True)
        if purge:
            if left:
                raise SupportError(f"not purging {self.state}: still mounted: {left}")
            shutil.rmtree(self.state, ignore_errors=True)

    def crash(self, timeout: float = 30) -> None:
        """SIGKILL the daemon, as a crash. Its containerd dies with it (dockerd starts it with a parent-death
        signal); a containerd left a zombie would pass dockerd's "still running" check at the next start and
        keep it waiting for a socket that never answers, so its pidfile goes too. Containers and their shims
        stay, as after a real crash."""
        pid = self.pid()
        if pid is None:
            raise SupportError("dockerd is not running")
        signal_pid(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait(timeout)  # our child: reaped, not left a zombie
        self.wait_gone(timeout)
        self._proc = None
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        try:
            containerd = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        wait_for("dockerd's containerd to die with it", lambda: not alive(containerd), timeout)
        pidfile.unlink(missing_ok=True)

    def restart(self, timeout: float = 60) -> Dockerd:
        self.stop()
        return self.start(timeout)

    def _kill_leftover_shims(self) -> None:
        # a plugin or container whose PID 1 ignores SIGTERM outlives a forced daemon shutdown together
        # with its containerd-shim; shims of OUR containerd name its socket in their argv
        ours = str(self.exec_root / "containerd" / "containerd.sock")
        for pid in list(all_pids()):
            argv = cmdline(pid)
            if argv and "containerd-shim" in os.path.basename(argv[0]) and ours in argv:
                for child in children(pid):
                    signal_pid(child, signal.SIGKILL)
                signal_pid(pid, signal.SIGKILL)

    # ---- diagnostics -------------------------------------------------------------------------------
    def log_tail(self, offset: int = 0, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    def plugin_log(self, plugin_id: str, lines: int = 40) -> str:
        """dockerd's log lines about a managed plugin: its stdout (level=info) and stderr (level=error)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        hits = [line for line in text.splitlines() if plugin_id in line]
        return "\n".join(hits[-lines:])

    def json_file_log(self, container_id: str) -> Path:
        """Where dockerd's own json-file driver writes a container's log."""
        return self.data_root / "containers" / container_id / f"{container_id}-json.log"

    def wait_gone(self, timeout: float = 10) -> None:
        """Wait until the daemon process is gone (after an external kill, for example)."""
        wait_for("dockerd to exit", lambda: not self.pid(), timeout)

    def __repr__(self) -> str:
        return f"Dockerd({self.state})"
