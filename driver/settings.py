"""Process-level settings, from the environment (plugin `env` entries in config.json for a managed plugin)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    socket: str = "/run/docker/plugins/logbridge.sock"
    log_root: str = "/var/log/logbridge"
    state_dir: str = "/var/lib/logbridge"
    log_level: str = "info"
    metrics_addr: str = ""  # host:port for /metrics and /healthz; off when empty
    profiles: str = "/etc/logbridge/profiles.json"
    retention_seconds: float = 0.0  # stopped containers' logs older than this go; 0 keeps them
    max_bytes: int = 0  # cap on the whole log root; 0: none
    retention_interval: float = 60.0
    output_modules: tuple[str, ...] = ()  # extra outputs: modules with an OUTPUT (driver.outputs)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            socket=env.get("LOGBRIDGE_SOCKET") or d.socket,
            log_root=env.get("LOGBRIDGE_LOG_ROOT") or d.log_root,
            state_dir=env.get("LOGBRIDGE_STATE_DIR") or d.state_dir,
            log_level=(env.get("LOG_LEVEL") or d.log_level).lower(),
            metrics_addr=env.get("METRICS_ADDR") or d.metrics_addr,
            profiles=env.get("LOGBRIDGE_PROFILES") or d.profiles,
            retention_seconds=float(env.get("RETENTION_SECONDS") or d.retention_seconds),
            max_bytes=int(float(env.get("MAX_BYTES") or d.max_bytes)),
            retention_interval=float(env.get("RETENTION_INTERVAL") or d.retention_interval),
            output_modules=tuple(m.strip() for m in env.get("LOGBRIDGE_OUTPUT_MODULES", "").split(",") if m.strip()),
        )
