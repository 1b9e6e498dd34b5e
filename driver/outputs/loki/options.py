"""The Loki output's log-opts, as rows of driver/options.py's table, and the settings one container's options
make. Names, meanings and defaults are Grafana's Loki driver's (``clients/cmd/docker-driver/config.go``, the
promtail client defaults in ``clients/pkg/util/config.go``), so switching is changing the driver name; the
``loki-max-*`` rows are logbridge's, for a Loki whose limits are not the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from driver.options import BOOL, COUNT, DURATION, RETRY_COUNT, SECRET, SIZE, TEXT, Kind, Option, OptionError
from driver.outputs.loki import relabel
from driver.outputs.loki.limits import NS, Limits

GROUP = "loki"
URL = "loki-url"
PIPELINE_STAGES = ("loki-pipeline-stages", "loki-pipeline-stage-file")
EXTERNAL_LABELS_FORM = Kind(str, "name=template pairs separated by commas, like job=docker,name={{.Name}}")
RELABEL_FORM = Kind(str, "a YAML list of Prometheus relabel rules")

OPTION_ROWS: tuple[Option, ...] = (
    Option(URL, SECRET, None, "Loki push URL (turns the Loki output on); basic auth may go in it: "
           "https://user:pass@host/loki/api/v1/push", GROUP, secret=True),
    Option("loki-tenant-id", SECRET, None, "tenant sent as X-Scope-OrgID", GROUP, secret=True),
    Option("loki-external-labels", EXTERNAL_LABELS_FORM, None, "labels with Docker tag templates; setting it "
           "replaces the container_name={{.Name}} default", GROUP),
    Option("loki-batch-size", COUNT, "1048576", "bytes of lines (and structured metadata) per push", GROUP),
    Option("loki-batch-wait", DURATION, "1s", "longest wait for a push to fill; a stopped container's lines go "
           "at once", GROUP),
    Option("loki-timeout", DURATION, "10s", "give up a push that takes longer (then retry it)", GROUP),
    Option("loki-min-backoff", DURATION, "500ms", "first wait before retrying a failed push; doubles", GROUP),
    Option("loki-max-backoff", DURATION, "5m", "longest wait between retries (also the retry period while Loki "
           "answers 401, 403 or 404)", GROUP),
    Option("loki-retries", RETRY_COUNT, "10", "accepted for compatibility: logbridge keeps retrying until the "
           "journal cap drops frames", GROUP),
    Option("loki-tls-ca-file", TEXT, None, "CA bundle to verify Loki (path inside the plugin)", GROUP),
    Option("loki-tls-cert-file", TEXT, None, "client certificate for mutual TLS (path inside the plugin)", GROUP),
    Option("loki-tls-key-file", TEXT, None, "client key for mutual TLS (path inside the plugin)", GROUP),
    Option("loki-tls-server-name", TEXT, None, "name to verify in Loki's certificate", GROUP),
    Option("loki-tls-insecure-skip-verify", BOOL, "false", "do not verify Loki's certificate", GROUP),
    Option("loki-proxy-url", TEXT, None, "HTTP proxy for the pushes", GROUP),
    Option("loki-relabel-config", RELABEL_FORM, None, "Prometheus relabel rules applied to the labels once; drop "
           "or a failed keep: this container is not sent to Loki (counted as filtered)", GROUP),
    Option("loki-structured-metadata", BOOL, "false", "send container_id and partial ids as structured metadata "
           "(Loki 3 with schema v13)", GROUP),
    Option("loki-pipeline-stages", TEXT, None, "not supported yet: refused", GROUP),
    Option("loki-pipeline-stage-file", TEXT, None, "not supported yet: refused", GROUP),
    Option("no-file", BOOL, "false", "accepted for compatibility: logbridge keeps json.log, which docker logs "
           "and restarts read", GROUP),
    Option("keep-file", BOOL, "false", "accepted for compatibility: json.log stays after stop under "
           "logbridge's retention rules", GROUP),
    Option("loki-max-line-size", SIZE, "256kb", "Loki's max_line_size: longer lines are dropped and counted "
           "(16 KiB chunks are joined up to it)", GROUP),
    Option("loki-max-age", DURATION, "168h", "Loki's reject_old_samples_max_age (0: old lines are sent)", GROUP),
    Option("loki-creation-grace-period", DURATION, "10m", "Loki's creation_grace_period: lines further ahead "
           "are dropped and counted", GROUP),
    Option("loki-max-label-names", COUNT, "15", "Loki's max_label_names_per_series (source included)", GROUP),
    Option("loki-max-label-value-length", COUNT, "2048", "Loki's max_label_value_length", GROUP),
)


def enabled(opts: Mapping) -> bool:
    """Whether a container's options turn the Loki output on."""
    return bool(opts.get(URL))


@dataclass(frozen=True)
class LokiSettings:
    url: str
    tenant: str | None
    batch_bytes: int
    batch_wait: float
    timeout: float
    min_backoff: float
    max_backoff: float
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_server_name: str | None
    tls_insecure_skip_verify: bool
    proxy_url: str | None
    relabel_rules: tuple[relabel.Rule, ...]
    structured_metadata: bool
    limits: Limits

    @property
    def batcher_key(self) -> tuple[str, str | None]:
        """Containers with the same key share one batcher and one keep-alive client."""
        return (self.url, self.tenant)


def settings_from(opts: Mapping) -> LokiSettings:
    """The Loki settings of one container's parsed options; OptionError for what parse_options cannot see."""
    for name in PIPELINE_STAGES:
        if opts.get(name):
            raise OptionError(f"logbridge: log-opt {name}: pipeline stages are not supported yet")
    url = opts[URL]
    if not url.startswith(("http://", "https://")):
        raise OptionError(f"logbridge: invalid log-opt {URL}: expected an http:// or https:// URL")
    try:
        rules = tuple(relabel.parse_config(opts.get("loki-relabel-config") or ""))
    except relabel.RelabelError as exc:
        raise OptionError(f"logbridge: invalid log-opt loki-relabel-config: {exc}") from None
    if bool(opts.get("loki-tls-cert-file")) != bool(opts.get("loki-tls-key-file")):
        raise OptionError("logbridge: log-opts loki-tls-cert-file and loki-tls-key-file go together")
    if opts["loki-min-backoff"] > opts["loki-max-backoff"]:
        raise OptionError("logbridge: log-opt loki-min-backoff is longer than loki-max-backoff")
    return LokiSettings(
        url=url, tenant=opts.get("loki-tenant-id") or None, batch_bytes=opts["loki-batch-size"],
        batch_wait=opts["loki-batch-wait"], timeout=opts["loki-timeout"] or 10.0,
        min_backoff=opts["loki-min-backoff"], max_backoff=opts["loki-max-backoff"],
        tls_ca_file=opts.get("loki-tls-ca-file"), tls_cert_file=opts.get("loki-tls-cert-file"),
        tls_key_file=opts.get("loki-tls-key-file"), tls_server_name=opts.get("loki-tls-server-name"),
        tls_insecure_skip_verify=bool(opts.get("loki-tls-insecure-skip-verify")),
        proxy_url=opts.get("loki-proxy-url") or None, relabel_rules=rules,
        structured_metadata=bool(opts.get("loki-structured-metadata")),
        limits=Limits(max_line_size=opts["loki-max-line-size"], max_age_ns=int(opts["loki-max-age"] * NS),
                      creation_grace_ns=int(opts["loki-creation-grace-period"] * NS),
                      max_label_names=opts["loki-max-label-names"],
                      max_label_value_length=opts["loki-max-label-value-length"]),
    )
