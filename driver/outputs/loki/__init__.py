"""The direct Loki output: a drop-in for Grafana's Loki driver that never blocks a container and never forgets.

Pure parts: ``codec`` (PushRequest protobuf, snappy block), ``labels`` (the driver's labels), ``relabel``
(Prometheus relabel rules), ``limits`` (Loki's validation limits). I/O: ``client`` (HTTP), ``batcher`` (one per
(loki-url, tenant), shared by containers), ``sink`` (one container's journal consumer). ``options`` holds the
rows for the one options table; ``output`` is what the outputs registry calls (OPTION_ROWS, enabled, build).

Nothing is imported here: driver.speedups imports this package's C module, so an import here that reaches
driver.speedups would find it half-initialised and switch the C encoder off.
"""
