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
        )
