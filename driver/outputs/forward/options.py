"""The forward output's log-opts: Docker's fluentd driver options (same meaning where they still apply) and
logbridge's own ``forward-*``. Forwarding is off without ``fluentd-address``."""

from __future__ import annotations

from driver.options import (
    BOOL,
    COUNT,
    DURATION,
    RAM_SIZE,
    RECONNECT,
    RETRY_COUNT,
    SECRET,
    SIZE,
    TEXT,
    Kind,
    Option,
    OptionError,
    Options,
)

MAX_WINDOW = 16  # batches: 4 MiB of journal, ~19 MB of frames of short lines in memory per container at most


def _fluentd(name: str, kind: Kind, default: str | None, help: str) -> Option:
    # Docker's fluentd driver reads an empty value of its keys as not given.
    return Option(name, kind, default, help, "forward", blank_is_default=True)


OPTIONS: tuple[Option, ...] = (
    _fluentd("fluentd-address", TEXT, None,
             "forward destination: tcp://host:port, tls://host:port, tcp+tls://host:port, unix:///path"),
    _fluentd("fluentd-async", BOOL, None, "accepted for compatibility: logbridge never blocks a container"),
    _fluentd("fluentd-async-connect", BOOL, None, "deprecated alias of fluentd-async"),
    _fluentd("fluentd-buffer-limit", RAM_SIZE, None, "accepted for compatibility: the journal is the buffer"),
    _fluentd("fluentd-retry-wait", DURATION, "1s", "first wait before reconnecting; doubles up to 60s"),
    _fluentd("fluentd-max-retries", RETRY_COUNT, None, "accepted for compatibility: logbridge retries until the "
             "journal cap drops frames"),
    _fluentd("fluentd-sub-second-precision", BOOL, "true", "send EventTime (nanoseconds) instead of whole seconds"),
    _fluentd("fluentd-request-ack", BOOL, "true", "ask the receiver to acknowledge each batch (at-least-once)"),
    _fluentd("fluentd-write-timeout", DURATION, "10s", "give up a connection when a write takes longer"),
    _fluentd("fluentd-async-reconnect-interval", RECONNECT, None, "accepted for compatibility"),
    Option("forward-window", COUNT, "4", "batches (256 KiB of journal each) sent before the oldest one's ack came, "
           f"1 to {MAX_WINDOW}; a kill or a reconnect sends at most these again", "forward"),
    Option("forward-compress", BOOL, "false", "send CompressedPackedForward (gzip) frames", "forward"),
    Option("forward-record-id", BOOL, "false", "add record_id (container, journal offset of the line): the same "
           "on every resend, usable as Elasticsearch's _id to drop duplicates", "forward"),
    Option("forward-merge-partials", BOOL, "false", "join the 16 KiB chunks of long lines into one record "
           "(json.log keeps them split, as json-file does)", "forward"),
    Option("forward-merge-max-size", SIZE, "1m", "longest line forward-merge-partials joins; longer ones go as "
           "chunks with partial_* fields", "forward"),
    Option("forward-shared-key", SECRET, None, "shared_key for the forward handshake (prefer a profile: log-opts "
           "are visible to docker inspect)", "forward", secret=True),
    Option("forward-username", TEXT, None, "username for the forward handshake", "forward"),
    Option("forward-password", SECRET, None, "password for the forward handshake (prefer a profile)", "forward",
           secret=True),
    Option("forward-tls-ca-file", TEXT, None, "CA bundle to verify the aggregator (path inside the plugin)",
           "forward"),
    Option("forward-tls-cert-file", TEXT, None, "client certificate for mutual TLS (path inside the plugin)",
           "forward"),
    Option("forward-tls-key-file", TEXT, None, "client key for mutual TLS (path inside the plugin)", "forward"),
    Option("forward-tls-server-name", TEXT, None, "name to verify in the aggregator's certificate", "forward"),
    Option("forward-tls-insecure-skip-verify", BOOL, "false", "do not verify the aggregator's certificate",
           "forward"),
)


def turned_on(opts: Options) -> bool:
    return bool(opts["fluentd-address"])


def check(opts: Options) -> None:
    if opts["forward-window"] > MAX_WINDOW:
        raise OptionError(f"logbridge: invalid log-opt forward-window={opts['forward-window']}: at most {MAX_WINDOW} "
                          "batches may wait for their acks (each holds up to 256 KiB of journal in memory)")
    if "fluentd-async" in opts.given and "fluentd-async-connect" in opts.given:
        raise OptionError("logbridge: log-opts fluentd-async and fluentd-async-connect conflict: use fluentd-async")
