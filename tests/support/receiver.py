"""`python -m driver.receiver` as a test aggregator: started on a port of its own, paused (SIGSTOP), killed
(SIGKILL) and started again on the same port; the records it printed read back as dicts.

Stdlib only (the receiver itself runs in `python`, which must have the project installed)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .procs import REPO, SupportError, stop_pid, wait_for

_LISTENING = re.compile(r"listening on (\S+)")
_SUMMARY = re.compile(r'receiver: (\{"summary": .*\})')


def free_port() -> int:
    """A TCP port nobody listens on now (for "aggregator down" runs, where nothing may answer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReceiverProcess:
    """One receiver on 127.0.0.1. Every start (also after kill()) appends to the same output file, so
    records() is everything every incarnation accepted, in arrival order."""

    def __init__(
        self, workdir: Path, *args: str, scheme: str = "tcp", port: int = 0, python: str = sys.executable
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.scheme = scheme
        self.port = port
        self.python = python
        self.output = self.workdir / "records.jsonl"
        self.stderr_path = self.workdir / "receiver.err"
        self._proc: subprocess.Popen | None = None
        self.summaries: list[dict] = []  # one per incarnation that exited on SIGTERM
        self._records: list[dict] = []
        self._read_pos = 0

    @property
    def address(self) -> str:
        """The fluentd-address a client uses (the scheme as given, 127.0.0.1, the bound port)."""
        if not self.port:
            raise SupportError("receiver has no port yet: start() it first")
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self, timeout: float = 15) -> ReceiverProcess:
        if self.pid:
            return self
        offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        listen = f"{self.scheme}://127.0.0.1:{self.port}"
        with open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [self.python, "-m", "driver.receiver", "--listen", listen, "--output", str(self.output), *self.args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                start_new_session=True,
            )

        def bound() -> int | None:
            if self._proc.poll() is not None:
                raise SupportError(f"receiver exited with {self._proc.returncode}:\n{self.log(offset)}")
            m = _LISTENING.search(self.log(offset))
            return int(m.group(1).rsplit(":", 1)[1]) if m else None

        self.port = wait_for("the receiver to listen", bound, timeout)
        return self

    def stop(self, timeout: float = 10) -> dict | None:
        """SIGTERM; returns the summary (stats) it logged on the way out."""
        if self._proc is None:
            return None
        offset = self.stderr_path.stat().st_size
        if self._proc.poll() is None:
            self.resume()  # a stopped process cannot handle SIGTERM
            stop_pid(self._proc.pid, timeout, self._proc)
        m = _SUMMARY.search(self.log(offset))
        summary = json.loads(m.group(1))["summary"] if m else None
        if summary:
            self.summaries.append(summary)
        return summary

    def kill(self) -> None:
        """SIGKILL: whatever it read but did not ack yet is the client's to resend."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections and buffers bytes, nothing is read or acked."""
        if self.pid:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGCONT)

    def restart(self) -> ReceiverProcess:
        """Start again on the same port (after kill() or stop())."""
        self.kill()
        return self.start()

    # ---- what arrived ------------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Every record line printed so far: {"tag", "time", "time_ns", "record"} (read incrementally: the
        output file only grows)."""
        try:
            with open(self.output, "rb") as f:
                f.seek(self._read_pos)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1  # a torn last line is read again next time
        self._records += [json.loads(line) for line in data[:complete].split(b"\n")[:-1]]
        self._read_pos += complete
        return list(self._records)

    def logs(self) -> list[str]:
        return [r["record"].get("log", "") for r in self.records()]

    def wait_records(self, count: int, timeout: float = 30) -> list[dict]:
        """Poll until at least `count` records arrived; returns them all."""

        def enough() -> list[dict] | None:
            records = self.records()
            return records if len(records) >= count else None

        try:
            return wait_for(f"{count} records at the receiver", enough, timeout, interval=0.1)
        except SupportError as e:
            raise SupportError(f"{e} (got {len(self.records())}); receiver log:\n{self.log(lines=20)}") from None

    def wait_numbers(self, n: int, timeout: float = 30) -> Counter[int]:
        """Poll until every number 1..n arrived as a `log` at least once; returns how often each arrived."""

        def complete() -> Counter[int] | None:
            seen = numbers(self.logs())
            return seen if all(seen[i] for i in range(1, n + 1)) else None

        try:
            return wait_for(f"lines 1..{n} at the receiver", complete, timeout, interval=0.2)
        except SupportError as e:
            seen = numbers(self.logs())
            missing = [i for i in range(1, n + 1) if not seen[i]]
            raise SupportError(
                f"{e}: {len(missing)} missing (first {missing[:5]}); receiver log:\n{self.log(lines=20)}"
            ) from None

    def log(self, offset: int = 0, lines: int = 200) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def count_in_log(self, needle: str) -> int:
        return self.log(lines=10**9).count(needle)


def numbers(logs: Sequence[str]) -> Counter[int]:
    """How often each numbered line (`log` = decimal number) arrived."""
    return Counter(int(line) for line in logs if line.isdigit())


def wait_quiet(receiver: ReceiverProcess, seconds: float) -> int:
    """Sleep `seconds` and return how many records arrived meanwhile (for "nothing may arrive" checks)."""
    before = len(receiver.records())
    time.sleep(seconds)
    return len(receiver.records()) - before
