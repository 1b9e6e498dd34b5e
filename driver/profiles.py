"""Named profiles: sets of log-opts kept in a plugin-level file instead of each container's config.

Log-opts are visible to anyone who can ``docker inspect``, and they are frozen into the container. A profile keeps
secrets (shared keys, passwords, certificate paths) out of containers and lets a destination change without
recreating them: ``--log-opt logbridge-profile=prod`` selects it, the file is read again whenever it changed.
The container's own log-opts win over the profile's.
"""

from __future__ import annotations

import json
import os
import threading

from driver.options import OptionError

PROFILE_KEY = "logbridge-profile"


class Profiles:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._profiles: dict[str, dict[str, str]] = {}

    def _load(self) -> dict[str, dict[str, str]]:
        with self._lock:
            try:
                mtime = os.stat(self.path).st_mtime
            except FileNotFoundError:
                self._mtime, self._profiles = None, {}
                return self._profiles
            if mtime != self._mtime:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                    raise OptionError(f"logbridge: {self.path} must map profile names to objects of log-opts")
                self._profiles = {name: {str(k): str(v) for k, v in opts.items()} for name, opts in data.items()}
                self._mtime = mtime
            return self._profiles

    def check(self) -> None:
        """Read the file now; OptionError names it and what is wrong."""
        try:
            self._load()
        except (OSError, ValueError) as exc:
            raise OptionError(f"logbridge: cannot read profiles file {self.path}: {_reason(exc)}") from None

    def apply(self, config: dict[str, str]) -> dict[str, str]:
        """The container's log-opts with its profile's underneath; unchanged without ``logbridge-profile``."""
        name = config.get(PROFILE_KEY)
        if not name:
            return dict(config)
        try:
            profiles = self._load()
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested past the stack
            raise OptionError(f"logbridge: cannot read profiles file {self.path}: {_reason(exc)}") from None
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise OptionError(f"logbridge: invalid log-opt {PROFILE_KEY}={name!r}: no such profile in {self.path} "
                              f"(defined: {known})")
        return {**profiles[name], **config}


def _reason(exc: Exception) -> str:
    """What is wrong with the file, without its content: the file holds secrets, and a JSON error's message
    stays clear of them only while it names a position and not the text there."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (at byte {exc.start})"
    return str(exc)
