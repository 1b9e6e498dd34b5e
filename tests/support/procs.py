"""Small process and polling helpers shared by the support modules (stdlib only)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from driver.status import UnixHTTPConnection

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SupportError(RuntimeError):
    """A fixture could not do its job; the message says what and where to look."""


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (kill -0 succeeds on zombies)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return True


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; raise SupportError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise SupportError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def all_pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/*/stat."""
    out = []
    for p in all_pids():
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(p)
    return out


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Reaps `proc` if it is our child."""
    signal_pid(pid, signal.SIGTERM)

    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        return not alive(pid)

    try:
        wait_for(f"pid {pid} to exit", gone, timeout, interval=0.05)
    except SupportError:
        signal_pid(pid, signal.SIGKILL)
        wait_for(f"pid {pid} to die after SIGKILL", gone, 10)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    base = str(prefix).rstrip("/")
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split()[1].encode().decode("unicode_escape")  # \040 etc.
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_all(prefix: Path) -> list[str]:
    """Lazily unmount everything at or below `prefix`; returns what is still mounted."""
    for point in mounts_under(prefix):
        subprocess.run(
            ["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": SBIN_PATH}
        )
    return mounts_under(prefix)


def unix_http(path: str, method: str, url: str, body: bytes = b"", timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP request over a unix socket; raises OSError if nobody answers."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, url, body=body, headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def activates_as_log_driver(sock: str) -> bool:
    """True once POST /Plugin.Activate on `sock` answers with LogDriver in Implements."""
    try:
        status, body = unix_http(sock, "POST", "/Plugin.Activate")
        return status == 200 and "LogDriver" in json.loads(body or b"{}").get("Implements", [])
    except (OSError, ValueError, http.client.HTTPException):
        return False
