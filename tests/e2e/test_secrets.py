"""Secrets stay secret (issue 11 point 8): after containers run with each kind of secret log-opt on the real
dockerd, valid ones against destinations that refuse them or are down (so that failures are logged) and malformed
ones that `docker run` refuses, no secret appears in the plugin's log (at debug level), in dockerd's log, in the
metrics exposition or in `docker run`'s error, and the error names the option.

One row per secret option: a new output's secrets (Elasticsearch's password, api_key, cloud_auth) are one row
each. Every secret holds a unique token (after the control character in a malformed one, so that an escaped
echo of the value shows it too); the check looks for the tokens.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import pytest

from tests.support import wait_for
from tests.support.receiver import ReceiverProcess, free_port

pytestmark = pytest.mark.e2e

RECEIVER_KEY = "SECRETrecvkey0"  # the aggregator's own key: the forward-password row must send it too
RECEIVER_PASSWORD = "SECRETrecvpw0"


@dataclass(frozen=True)
class Ctx:
    forward: str  # a forward receiver that wants another shared key
    forward_users: str  # one that wants RECEIVER_KEY and a user whose password is not ours
    loki_down: int  # a port nothing listens on


@dataclass(frozen=True)
class Row:
    option: str
    valid: str  # accepted at docker run; the destination refuses it or is down
    malformed: str  # refused at docker run
    opts: object  # (ctx, value) -> the container's log-opts

    def tokens(self) -> list[str]:
        return [t for t in (self.valid + " " + self.malformed).replace("\x07", " ").replace("@", " ").replace(
            ":", " ").split() if t.startswith("SECRET")]


ROWS = [
    Row("forward-shared-key", "SECRETfsk1", "x\x07SECRETfsk2",
        lambda c, v: {"fluentd-address": c.forward, "forward-shared-key": v}),
    Row("forward-password", "SECRETfpw1", "x\x07SECRETfpw2",
        lambda c, v: {"fluentd-address": c.forward_users, "forward-shared-key": RECEIVER_KEY,
                      "forward-username": "lb", "forward-password": v}),
    Row("loki-url", "http://lb:SECRETlurl1@127.0.0.1:{port}/loki/api/v1/push", "ftp://lb:SECRETlurl2@127.0.0.1/x",
        lambda c, v: {"loki-url": v.format(port=c.loki_down)}),
    Row("loki-tenant-id", "SECRETten1", "x\x07SECRETten2",
        lambda c, v: {"loki-url": f"http://127.0.0.1:{c.loki_down}/loki/api/v1/push", "loki-tenant-id": v}),
]
SECRETS = sorted({t for row in ROWS for t in row.tokens()} | {RECEIVER_KEY, RECEIVER_PASSWORD})


@pytest.fixture
def receivers(tmp_path):
    started = [ReceiverProcess(tmp_path / "fwd", "--shared-key", "the-receivers-key").start(),
               ReceiverProcess(tmp_path / "users", "--shared-key", RECEIVER_KEY,
                               "--user", f"lb:{RECEIVER_PASSWORD}").start()]
    yield started
    for r in started:
        r.stop()


def test_no_secret_shows_in_logs_metrics_or_errors(dockerd, bb_image, legacy_plugin, receivers):
    addr = f"127.0.0.1:{free_port()}"
    plugin = legacy_plugin(env={"LOG_LEVEL": "debug", "METRICS_ADDR": addr})
    ctx = Ctx(receivers[0].address, receivers[1].address, free_port())
    dockerd_log_start = dockerd.log_path.stat().st_size
    errors = {}
    for row in ROWS:
        opts = row.opts(ctx, row.valid)
        run = dockerd.run(bb_image, "sh", "-c", "seq 1 20; sleep 60", log_driver=plugin.driver, log_opts=opts,
                          extra_args=["-d"])
        assert run.rc == 0, run.stderr.decode(errors="replace")
        bad = dockerd.run(bb_image, "true", log_driver=plugin.driver, log_opts=row.opts(ctx, row.malformed))
        assert bad.rc != 0, f"{row.option}: the malformed value was accepted"
        errors[row.option] = bad.stderr.decode(errors="replace")
        assert f"log-opt {row.option}" in errors[row.option], errors[row.option]  # the error names the option

    def failures_logged() -> bool:  # every destination has refused or failed, so the failure paths have logged
        text = plugin.output.read_text(errors="replace")
        return text.count('"sink": "forward"') >= 2 and '"sink": "loki"' in text

    wait_for("each destination's failure in the plugin's log", failures_logged, 60)
    metrics = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    assert "logbridge_sink_failures_total" in metrics
    places = {
        "the plugin's log": plugin.output.read_text(errors="replace"),
        "dockerd's log": dockerd.log_path.read_bytes()[dockerd_log_start:].decode(errors="replace"),
        "the metrics": metrics,
        **{f"docker run's error for {k}": v for k, v in errors.items()},
    }
    leaks = [(secret, where) for secret in SECRETS for where, text in places.items() if secret in text]
    assert not leaks, f"secrets shown: {leaks}"
    assert "invalid log-opt forward-shared-key" in places["dockerd's log"]  # dockerd logged the refusals
