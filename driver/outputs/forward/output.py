"""The forward output as the pipeline sees it: its options turned into a client and a sink per container."""

from __future__ import annotations

from driver.info import extra_attributes, render_tag
from driver.options import OptionError, Options
from driver.outputs import Container, Output
from driver.outputs.forward import options
from driver.outputs.forward.client import ForwardClient, TlsSettings
from driver.outputs.forward.sink import NAME, ForwardSink


def make_forward_client(opts: Options) -> ForwardClient:
    """The forward destination the log-opts describe; OptionError names the option that is wrong."""
    tls = None
    if any(opts[k] for k in ("forward-tls-ca-file", "forward-tls-cert-file", "forward-tls-server-name",
                             "forward-tls-insecure-skip-verify")):
        tls = TlsSettings(ca_file=opts["forward-tls-ca-file"], cert_file=opts["forward-tls-cert-file"],
                          key_file=opts["forward-tls-key-file"], server_name=opts["forward-tls-server-name"],
                          insecure_skip_verify=opts["forward-tls-insecure-skip-verify"])
    try:
        return ForwardClient(opts["fluentd-address"], tls=tls, shared_key=opts["forward-shared-key"],
                             username=opts["forward-username"], password=opts["forward-password"],
                             require_ack=opts["fluentd-request-ack"], write_timeout=opts["fluentd-write-timeout"],
                             retry_wait=opts["fluentd-retry-wait"] or 1.0)
    except ValueError as exc:
        raise OptionError(f"logbridge: invalid log-opt fluentd-address={opts['fluentd-address']!r}: {exc}; "
                          "expected tcp://host:port, tls://host:port or unix:///path") from None


def build_sink(container: Container, shared: None) -> ForwardSink:
    """One container's forward sink: its own client (one connection per container, as Docker's fluentd driver)."""
    info, opts = container.info, container.opts
    client = make_forward_client(opts)
    static = {"container_id": info.container_id, "container_name": info.container_name}
    static.update(extra_attributes(info, opts))
    tag = render_tag(opts["tag"] if opts["tag"] is not None else "{{.ID}}", info)
    return ForwardSink(container.journal, container.store, client, tag, static,
                       event_time=opts["fluentd-sub-second-precision"], compress=opts["forward-compress"],
                       container_id=info.container_id,
                       merge_max=opts["forward-merge-max-size"] if opts["forward-merge-partials"] else None,
                       record_ids=opts["forward-record-id"], window=opts["forward-window"])


OUTPUT = Output(name=NAME, options=options.OPTIONS, turned_on=options.turned_on, build=build_sink,
                check=options.check)
