"""Process-level settings, from the environment (plugin `env` entries in config.json for a managed plugin)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DAY = 86400.0


class StartupError(Exception):
    """The plugin cannot start as configured; the message says what to fix (one log line, then exit 1)."""


@dataclass(frozen=True)
class Settings:
    socket: str = "/run/docker/plugins/logbridge.sock"
    log_root: str = "/var/log/logbridge"
    state_dir: str = "/var/lib/logbridge"
    log_level: str = "info"
    metrics_addr: str = ""  # host:port for /metrics and /healthz; off when empty
    profiles: str = "/etc/logbridge/profiles.json"
    # Stopped containers' logs whose last line is older than this go; 0 keeps them. Finite by default: dockerd
    # tells a plugin nothing at `docker rm`, so outside Docker's own folder nothing else ever removes them.
    retention_seconds: float = 7 * DAY
    max_bytes: int = 0  # cap on the whole log root; 0: none
    retention_interval: float = 60.0
    output_modules: tuple[str, ...] = ()  # extra outputs: modules with an OUTPUT (driver.outputs)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            socket=socket_path(env),
            log_root=env.get("LOGBRIDGE_LOG_ROOT") or d.log_root,
            state_dir=env.get("LOGBRIDGE_STATE_DIR") or d.state_dir,
            log_level=(env.get("LOG_LEVEL") or d.log_level).lower(),
            metrics_addr=env.get("METRICS_ADDR") or d.metrics_addr,
            profiles=env.get("LOGBRIDGE_PROFILES") or d.profiles,
            retention_seconds=_number(env, "RETENTION_SECONDS", d.retention_seconds, "seconds, 0 to keep"),
            max_bytes=int(_number(env, "MAX_BYTES", d.max_bytes, "bytes, 0 for no cap")),
            retention_interval=_number(env, "RETENTION_INTERVAL", d.retention_interval, "seconds") or 60.0,
            output_modules=tuple(m.strip() for m in env.get("LOGBRIDGE_OUTPUT_MODULES", "").split(",") if m.strip()),
        )


def socket_path(env) -> str:
    """The plugin socket, known even when another setting is wrong (a failed start must remove it)."""
    return env.get("LOGBRIDGE_SOCKET") or Settings.socket


def _number(env, name: str, default: float, unit: str) -> float:
    text = env.get(name) or ""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not text.isascii() or not 0 <= value < float("inf"):
        raise StartupError(f"setting {name}={text!r} is not a number of 0 or more ({unit}): "
                           f"fix it with `docker plugin set logbridge {name}=...` (or the environment)")
    return value
