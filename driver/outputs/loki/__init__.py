"""The direct Loki output: pure codec, labels, relabeling and limit checks; the HTTP client, the batcher shared
per (loki-url, tenant) and the per-container journal consumer; and its option rows (``options.OPTION_ROWS``)."""
