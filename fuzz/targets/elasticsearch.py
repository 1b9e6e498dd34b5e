"""Reserved for the Elasticsearch output's targets (issue 10, being written on the `elastic` branch).

When driver/outputs/elasticsearch/ lands, add here, in the shape of loki_encode.py and loki_response.py:
- ``fuzz_one`` over its bulk-request encoder (the NDJSON action and document lines), checked by decoding each line
  with json.loads (and against the C encoder, if it gets one: differential, whole outputs);
- its bulk-response parser (``errors``, per-item ``status``/``error``, 429 and version conflicts): any bytes give a
  result or the documented error, never another exception, and the items it retries are the ones that failed;
then add "elasticsearch" to TARGETS in fuzz/targets/__init__.py and seeds from real responses to fuzz/corpus/.
"""
