"""The direct Elasticsearch/OpenSearch output: a drop-in for Elastic's logging plugin that never blocks a
container, never forgets, and resends without duplicates (document ids made of the journal's incarnation and
offsets).

Pure parts: ``formats`` (Beats format strings for index and pipeline), ``codec`` (the per-container document
template, bulk bodies, bulk responses). I/O: ``client`` (HTTP, hosts, auth, status rules), ``batcher`` (one per
destination, shared by containers), ``sink`` (one container's journal consumer). ``options`` holds the rows for
the one options table; ``output`` is what the outputs registry calls.
"""
