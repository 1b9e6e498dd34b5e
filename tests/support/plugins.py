"""logbridge as a managed (v2) plugin on a private dockerd, and as a legacy (v1) plugin process on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .cli import DockerError
from .dockerd import Dockerd
from .procs import (
    REPO,
    SupportError,
    activates_as_log_driver,
    alive,
    all_pids,
    children,
    cmdline,
    stop_pid,
    unix_http,
    wait_for,
)

LOG_ROOT_MOUNT = "log-root"  # mount names in config.json
STATE_DIR_MOUNT = "state-dir"
PLUGIN_SOCKET_DIR = Path("/run/docker/plugins")


def json_log_path(log_root: Path, container_id: str) -> Path:
    """The documented location of a container's current log under a log root."""
    return log_root / container_id / f"{container_id}-json.log"


# ---------------------------------------------------------------------------------------------------------
@dataclass
class ManagedPlugin:
    dockerd: Dockerd
    name: str
    id: str
    log_root: Path
    state_dir: Path

    @property
    def driver(self) -> str:
        """The value for --log-driver."""
        return self.name

    def json_log(self, container_id: str) -> Path:
        return json_log_path(self.log_root, container_id)

    def inspect(self) -> dict:
        return json.loads(self.dockerd.docker("plugin", "inspect", self.name).stdout)[0]

    @property
    def rootfs(self) -> Path:
        return self.dockerd.data_root / "plugins" / self.id / "rootfs"

    def pid(self) -> int | None:
        """The plugin's process: the child of the containerd-shim that runs task `id` for our daemon."""
        ours = str(self.dockerd.exec_root / "containerd" / "containerd.sock")
        for pid in list(all_pids()):
            argv = cmdline(pid)
            if argv and "containerd-shim" in os.path.basename(argv[0]) and ours in argv and self.id in argv:
                kids = [k for k in children(pid) if alive(k)]
                if kids:
                    return kids[0]
        return None

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Signal the plugin process; returns the pid signalled."""
        pid = wait_for(f"plugin {self.name} process", self.pid, 10)
        os.kill(pid, sig)
        return pid

    @property
    def socket(self) -> Path:
        """The plugin's socket as the host sees it (dockerd dials it there)."""
        return PLUGIN_SOCKET_DIR / self.id / self.inspect()["Config"]["Interface"]["Socket"]

    def answers(self) -> bool:
        """True if the plugin answers POST /LogDriver.Capabilities on its socket."""
        try:
            status, _ = unix_http(str(self.socket), "POST", "/LogDriver.Capabilities")
        except OSError:
            return False
        return status == 200

    def wait_running(self, old_pid: int | None = None, timeout: float = 30) -> int:
        """Wait until a plugin process other than `old_pid` runs and answers on its socket (dockerd restarts
        a managed plugin that died); returns its pid."""

        def new_pid() -> int | None:
            pid = self.pid()
            return pid if pid and pid != old_pid and self.answers() else None

        return wait_for(f"plugin {self.name} to run again", new_pid, timeout)

    def disable(self, force: bool = False) -> None:
        self.dockerd.docker("plugin", "disable", *(["-f"] if force else []), self.name)

    def enable(self, timeout: int = 0) -> None:
        try:
            self.dockerd.docker("plugin", "enable", "--timeout", str(timeout), self.name)
        except DockerError as e:
            raise SupportError(
                f"{e}\n--- dockerd log for plugin {self.id}:\n{self.dockerd.plugin_log(self.id)}"
            ) from None

    def log(self) -> str:
        """The plugin's stdout and stderr as dockerd logged them."""
        return self.dockerd.plugin_log(self.id, lines=10_000)

    def remove(self) -> None:
        """Remove the containers that log to it, then the plugin."""
        self.dockerd.remove_containers(log_driver=self.name)
        self.dockerd.docker("plugin", "rm", "-f", self.name, check=False)


def create_managed_plugin(
    dockerd: Dockerd,
    plugin_dir: Path,
    name: str,
    *,
    log_root: Path,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    enable_timeout: int = 0,
) -> ManagedPlugin:
    """`docker plugin create` from `plugin_dir` (config.json + rootfs/), point the log-root and state-dir
    mounts at the given host dirs, set env, `docker plugin enable --timeout enable_timeout` (0: no request
    timeout, as `make install` does). Raises SupportError with the plugin's log lines if it won't enable."""
    log_root.mkdir(parents=True, exist_ok=True)  # dockerd does not create bind sources
    state_dir.mkdir(parents=True, exist_ok=True)
    for mount in json.loads((plugin_dir / "config.json").read_text()).get("mounts", []):
        if mount.get("type") == "bind" and mount["name"] not in (LOG_ROOT_MOUNT, STATE_DIR_MOUNT):
            Path(mount["source"]).mkdir(parents=True, exist_ok=True)  # e.g. /etc/logbridge (profiles, certs)
    if dockerd.docker("plugin", "inspect", name, check=False).returncode == 0:
        dockerd.docker("plugin", "rm", "-f", name)
    # dockerd refuses a second plugin whose rootfs layer is byte-identical to an installed one
    (plugin_dir / "rootfs" / ".docker-plugin-name").write_text(name + "\n")
    dockerd.docker("plugin", "create", name, str(plugin_dir), timeout=300)
    plugin_id = dockerd.docker("plugin", "inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
    settings = [f"{LOG_ROOT_MOUNT}.source={log_root}", f"{STATE_DIR_MOUNT}.source={state_dir}"]
    settings += [f"{k}={v}" for k, v in (env or {}).items()]
    dockerd.docker("plugin", "set", name, *settings)
    plugin = ManagedPlugin(dockerd, name, plugin_id, log_root, state_dir)
    plugin.enable(enable_timeout)
    if not plugin.inspect().get("Enabled"):
        raise SupportError(f"plugin {name} is not enabled after enable:\n{dockerd.plugin_log(plugin_id)}")
    return plugin


# ---------------------------------------------------------------------------------------------------------
@dataclass
class LegacyPlugin:
    """`python -m driver` from this checkout as a host process, discovered by dockerd through
    /run/docker/plugins/<name>.sock. dockerd activates a legacy plugin once per daemon lifetime and caches
    it by name: restarting it on the same socket is transparent, so use a fresh name per plugin."""

    name: str
    log_root: Path
    state_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def driver(self) -> str:
        return self.name

    @property
    def socket(self) -> Path:
        return PLUGIN_SOCKET_DIR / f"{self.name}.sock"

    @property
    def output(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.state_dir.parent / f"{self.state_dir.name}.out"

    def json_log(self, container_id: str) -> Path:
        return json_log_path(self.log_root, container_id)

    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self, timeout: float = 20) -> LegacyPlugin:
        if self.pid():
            return self
        PLUGIN_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)  # so that readiness means THIS process answers
        env = dict(
            os.environ,
            LOGBRIDGE_SOCKET=str(self.socket),
            LOGBRIDGE_LOG_ROOT=str(self.log_root),
            LOGBRIDGE_STATE_DIR=str(self.state_dir),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **self.env,
        )
        offset = self.output.stat().st_size if self.output.exists() else 0
        with open(self.output, "ab") as out:
            self._proc = subprocess.Popen(
                [self.python, "-m", "driver"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise SupportError(
                    f"legacy plugin {self.name} exited with {self._proc.returncode}:\n{self.output_tail(offset)}"
                )
            return activates_as_log_driver(str(self.socket))

        try:
            wait_for(f"{self.socket} to answer /Plugin.Activate with LogDriver", ready, timeout)
        except SupportError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM (SIGKILL after `timeout`), remove the socket; returns the exit code."""
        rc = None
        if self._proc is not None:
            if self._proc.poll() is None:
                stop_pid(self._proc.pid, timeout, self._proc)
            rc = self._proc.returncode
        self.socket.unlink(missing_ok=True)
        return rc

    def kill(self) -> None:
        """SIGKILL, as a crash: the socket file stays, as it would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self, timeout: float = 20) -> LegacyPlugin:
        """Stop (if still running) and start again on the same socket, log root and state dir."""
        self.stop()
        return self.start(timeout)

    def output_tail(self, offset: int = 0, lines: int = 40) -> str:
        try:
            with open(self.output, "rb") as f:
                f.seek(offset)
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"
