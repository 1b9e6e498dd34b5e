"""The Elasticsearch output's log-opts, as rows of driver/options.py's table, and the settings one container's
options make. The unprefixed names, meanings and defaults are Elastic's logging plugin's
(``x-pack/dockerlogbeat/pipelinemanager/config.go``, its configuration docs), so switching is changing the driver
name; the ``es-*`` rows are logbridge's own. Unlike Elastic's plugin, a malformed value fails ``docker run``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import yarl

from driver.options import BOOL, DURATION, SECRET, SIZE, TEXT, Kind, Option, OptionError, parse_duration
from driver.outputs.elasticsearch import formats

GROUP = "elasticsearch"
HOSTS, CLOUD_ID = "hosts", "cloud_id"
DEFAULT_INDEX = "logs-docker-%{[agent.version]}-%{+yyyy.MM.dd}"  # Elastic's plugin: IndexPrefix "logs-docker"
DEFAULT_PORT = 9200


def _seconds(text: str) -> float:
    # Elastic's plugin hands these strings to libbeat's config (pipelinemanager/config.go) and documents timeout
    # in whole seconds ("90"); a Go duration ("90s") is taken too. (That go-ucfg reads "90" as seconds for the
    # backoff options as well is likely, not confirmed.)
    if text.isascii() and text.isdigit():
        return float(text)
    return parse_duration(text)


def _format(text: str) -> formats.Format:
    try:
        return formats.parse(text)
    except formats.FormatError:
        raise ValueError from None


def _hosts(text: str) -> tuple[str, ...]:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError
    hosts = tuple(normalise_host(h.strip()) for h in text.split(",") if h.strip())
    if not hosts:
        raise ValueError
    return hosts


def normalise_host(text: str) -> str:
    """Beats' host form: ``[scheme://][user:pass@]host[:port][/path]``, http and port 9200 by default."""
    url = yarl.URL(text if "://" in text else f"http://{text}")
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ValueError
    if url.explicit_port is None:
        url = url.with_port(DEFAULT_PORT)
    return str(url).rstrip("/")


SECONDS = Kind(_seconds, "whole seconds like 90, or a duration like 1m30s")
HOSTS_FORM = Kind(_hosts, "comma-separated URLs like https://es1:9200,https://es2:9200 (scheme http and port "
                          "9200 when left out; user:password@ may go in them)")
FORMAT = Kind(_format, formats.FORM)

OPTION_ROWS: tuple[Option, ...] = (
    Option(HOSTS, HOSTS_FORM, None, "Elasticsearch or OpenSearch URLs (turns the output on); the next one is "
           "tried when one fails", GROUP, secret=True),
    Option("user", SECRET, None, "basic auth user", GROUP, secret=True),
    Option("password", SECRET, None, "basic auth password", GROUP, secret=True),
    Option("api_key", SECRET, None, "Elasticsearch API key, id:api_key or its base64 encoding (not OpenSearch)",
           GROUP, secret=True),
    Option(CLOUD_ID, SECRET, None, "Elastic Cloud deployment id (instead of hosts; turns the output on)", GROUP,
           secret=True),
    Option("cloud_auth", SECRET, None, "Elastic Cloud user:password", GROUP, secret=True),
    Option("index", FORMAT, DEFAULT_INDEX, "target index or data stream (Beats format string; names matching "
           "logs-*-* are data streams on Elasticsearch 8+)", GROUP),
    Option("pipeline", FORMAT, None, "ingest pipeline (Beats format string)", GROUP),
    Option("name", SECRET, None, "agent.name of the documents (default: the host name)", GROUP),
    Option("backoff_init", SECONDS, "1s", "first wait before retrying; doubles", GROUP),
    Option("backoff_max", SECONDS, "60s", "longest wait between retries", GROUP),
    Option("timeout", SECONDS, "90", "give up a bulk request that takes longer (then retry it)", GROUP),
    Option("proxy_url", TEXT, None, "HTTP proxy for the bulk requests", GROUP),
    Option("es-compress", BOOL, "false", "gzip the bulk requests (Content-Encoding: gzip)", GROUP),
    Option("es-document-ids", BOOL, "true", "send document ids so a resend is a 409 duplicate, not a second copy; "
           "false: Elasticsearch picks ids (faster, at least once)", GROUP),
    Option("es-bulk-size", SIZE, "5m", "bytes per bulk request before compression (halved on 413)", GROUP),
    Option("es-batch-wait", DURATION, "1s", "longest wait for a bulk request to fill; a stopped container's "
           "lines go at once", GROUP),
    Option("es-max-message-size", SIZE, "1m", "16 KiB chunks are joined into one message up to this size; "
           "longer lines go as their chunks", GROUP),
    Option("es-tls-ca-file", TEXT, None, "CA bundle to verify Elasticsearch (path inside the plugin)", GROUP),
    Option("es-tls-cert-file", TEXT, None, "client certificate for mutual TLS (path inside the plugin)", GROUP),
    Option("es-tls-key-file", TEXT, None, "client key for mutual TLS (path inside the plugin)", GROUP),
    Option("es-tls-server-name", TEXT, None, "name to verify in Elasticsearch's certificate", GROUP),
    Option("es-tls-insecure-skip-verify", BOOL, "false", "do not verify Elasticsearch's certificate", GROUP),
)


def enabled(opts: Mapping) -> bool:
    """Whether a container's options turn the Elasticsearch output on."""
    return bool(opts.get(HOSTS) or opts.get(CLOUD_ID))


@dataclass(frozen=True)
class EsSettings:
    hosts: tuple[str, ...]
    authorization: str | None  # the Authorization header
    index: formats.Format
    pipeline: formats.Format | None
    agent_name: str | None
    backoff_init: float
    backoff_max: float
    timeout: float
    proxy_url: str | None
    compress: bool
    document_ids: bool
    bulk_bytes: int
    batch_wait: float
    max_message: int
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_server_name: str | None
    tls_insecure_skip_verify: bool

    @property
    def batcher_key(self) -> tuple:
        """Containers with the same destination share a batcher and its keep-alive connections."""
        return (self.hosts, self.authorization, self.index.text, self.pipeline.text if self.pipeline else None,
                self.proxy_url, self.compress, self.tls_ca_file, self.tls_cert_file, self.tls_key_file,
                self.tls_server_name, self.tls_insecure_skip_verify)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cloud_host(cloud_id: str) -> str:
    """The Elasticsearch URL of an Elastic Cloud id: ``<label>:base64(<domain[:port]>$<es id[:port]>$<kibana>)``
    (libbeat's cloudid package). ValueError when it is not one."""
    _, _, encoded = cloud_id.rpartition(":")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError from None
    parts = decoded.split("$")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError
    domain, _, domain_port = parts[0].partition(":")
    es_id, _, es_port = parts[1].partition(":")
    port = es_port or domain_port or "443"
    if not port.isdigit():
        raise ValueError
    return f"https://{es_id}.{domain}:{port}"


def _authorization(opts: Mapping) -> str | None:
    user, password, api_key, cloud_auth = (opts.get(k) for k in ("user", "password", "api_key", "cloud_auth"))
    given = [k for k, v in (("user", user or password), ("api_key", api_key), ("cloud_auth", cloud_auth)) if v]
    if len(given) > 1:
        raise OptionError(f"logbridge: log-opts {' and '.join(given)} exclude each other: choose one way to "
                          "authenticate")
    if user or password:
        if not (user and password):
            raise OptionError("logbridge: log-opts user and password go together")
        return _basic(user, password)
    if api_key:
        # Beats takes id:api_key and encodes it; Kibana shows the encoded form, taken as it is.
        return "ApiKey " + (base64.b64encode(api_key.encode()).decode() if ":" in api_key else api_key)
    if cloud_auth:
        name, sep, secret = cloud_auth.partition(":")
        if not (sep and name):
            raise OptionError("logbridge: invalid log-opt cloud_auth (value not shown: it is a secret): expected "
                              "user:password")
        return _basic(name, secret)
    return None


def _hosts_of(opts: Mapping) -> tuple[tuple[str, ...], str | None]:
    """The hosts without their user:password (kept out of logs), and the basic auth those make."""
    if opts.get(CLOUD_ID):
        # cloud_id wins over hosts, as in Beats (libbeat/cloudid): Elastic's plugin requires hosts even with
        # cloud_id, so its users have both, and switching must not make them drop one.
        try:
            return (cloud_host(opts[CLOUD_ID]),), None
        except ValueError:
            raise OptionError("logbridge: invalid log-opt cloud_id (value not shown: it is a secret): expected "
                              "<name>:<base64 of host$elasticsearch id$kibana id>, as Elastic Cloud shows it") from None
    hosts, auth = [], None
    for host in opts[HOSTS]:
        url = yarl.URL(host)
        if url.user is not None:
            auth = auth or _basic(url.user, url.password or "")
            url = url.with_user(None)
        hosts.append(str(url))
    return tuple(hosts), auth


def settings_from(opts: Mapping) -> EsSettings:
    """The Elasticsearch settings of one container's parsed options; OptionError for what parse_options cannot
    see (combinations)."""
    hosts, url_auth = _hosts_of(opts)
    auth = _authorization(opts)
    if auth and url_auth:
        raise OptionError("logbridge: log-opt hosts has user:password in a URL and another way to authenticate "
                          "is given: choose one")
    if bool(opts.get("es-tls-cert-file")) != bool(opts.get("es-tls-key-file")):
        raise OptionError("logbridge: log-opts es-tls-cert-file and es-tls-key-file go together")
    if opts["backoff_init"] > opts["backoff_max"]:
        raise OptionError("logbridge: log-opt backoff_init is longer than backoff_max")
    proxy = opts.get("proxy_url") or None
    if proxy and not proxy.startswith(("http://", "https://")):
        raise OptionError(f"logbridge: invalid log-opt proxy_url={proxy!r}: expected an http:// or https:// URL")
    index = opts["index"]
    sample = index.render({name: "x" for name in formats.FIELDS}, lower=True).at(0)
    why = formats.index_name_error(sample)
    if why:
        raise OptionError(f"logbridge: invalid log-opt index={index.text!r}: Elasticsearch would refuse the name "
                          f"({why})")
    return EsSettings(
        hosts=hosts, authorization=auth or url_auth, index=index, pipeline=opts.get("pipeline"),
        agent_name=opts.get("name") or None, backoff_init=opts["backoff_init"], backoff_max=opts["backoff_max"],
        timeout=opts["timeout"] or 90.0, proxy_url=proxy, compress=bool(opts["es-compress"]),
        document_ids=bool(opts["es-document-ids"]), bulk_bytes=opts["es-bulk-size"],
        batch_wait=opts["es-batch-wait"], max_message=opts["es-max-message-size"],
        tls_ca_file=opts.get("es-tls-ca-file"), tls_cert_file=opts.get("es-tls-cert-file"),
        tls_key_file=opts.get("es-tls-key-file"), tls_server_name=opts.get("es-tls-server-name"),
        tls_insecure_skip_verify=bool(opts.get("es-tls-insecure-skip-verify")),
    )
