"""A real Prometheus (Debian's `prometheus` package) for the tests: its own temp storage, a short scrape
interval, a free loopback port; stopped (SIGTERM, then SIGKILL) and its storage removed afterwards.

Tests ask it PromQL over its HTTP API. `query_fresh` is how they wait: it polls until Prometheus holds a scrape
of the target that is newer than a given moment (the sample's own timestamp, via `timestamp(up)`), so a figure
read afterwards cannot come from before that moment. Stdlib only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .procs import SupportError, stop_pid, wait_for
from .receiver import free_port

JOB = "logbridge"


class PromQLError(SupportError):
    """Prometheus refused a query (bad syntax, unknown function): its own message."""


class Prometheus:
    def __init__(self, targets: Sequence[str], *, rule_files: Sequence[Path] = (), scrape_interval: str = "1s",
                 job: str = JOB) -> None:
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.job = job
        self.dir = Path(tempfile.mkdtemp(prefix="lbprom."))
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        # JSON is YAML: no YAML library needed to write Prometheus's config
        return json.dumps({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        })

    def start(self, timeout: float = 30) -> Prometheus:
        config = self.dir / "prometheus.yml"
        config.write_text(self._config())
        binary = shutil.which("prometheus")
        if not binary:
            raise SupportError("prometheus not found: run scripts/install-deps.sh (Debian package prometheus)")
        self.port = free_port()
        self._proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=open(self.dir / "prometheus.log", "ab"),  # noqa: SIM115 - the child's
            stderr=subprocess.STDOUT, start_new_session=True,
        )

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise SupportError(f"prometheus exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_for("prometheus to be ready", ready, timeout)
        except SupportError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_pid(self._proc.pid, 10, self._proc)
        self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / "prometheus.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- the HTTP API -----------------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> dict | list:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # 400/422: a bad query; the body says why
            body = json.load(e)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query now: the vector's elements, each {"metric": {...}, "value": [ts, "v"]}."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr` (None if the vector is empty)."""
        result = self.query(expr)
        if len(result) > 1:
            raise SupportError(f"{expr} gave {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1]) if result else None

    def last_scrape(self) -> float:
        """Timestamp (s) of the newest scrape of the job Prometheus holds; 0 before the first."""
        return self.value(f'max(timestamp(up{{job="{self.job}"}}))') or 0.0

    def wait_scrape_after(self, moment: float, timeout: float = 30) -> float:
        """Poll until a scrape newer than `moment` (time.time()) is stored; returns its timestamp."""
        try:
            return wait_for(f"a scrape after {moment:.3f}", lambda: (lambda t: t if t > moment else 0)(
                self.last_scrape()), timeout, interval=0.2)
        except SupportError as e:
            raise SupportError(f"{e}; targets: {self.api('targets')}\n{self.log()}") from None

    def query_fresh(self, expr: str, timeout: float = 30) -> float | None:
        """`value(expr)` once a scrape newer than now is stored."""
        self.wait_scrape_after(time.time(), timeout)
        return self.value(expr)

    def stored_names(self) -> set[str]:
        """The metric names Prometheus stored for the job (as it stored them: _total suffixes and all)."""
        return {r["metric"]["__name__"] for r in self.query(f'count by (__name__) ({{job="{self.job}"}})')}
