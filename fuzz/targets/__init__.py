"""The fuzz targets: one module per input surface, each with ``fuzz_one(data: bytes)`` (raises on a finding),
``MAX_LEN`` (the longest input worth trying) and ``seeds()`` (the inputs fuzz/corpus/<target>/ is made from,
``python -m fuzz.seeds``).

``TARGETS`` is the order ``make fuzz`` runs them in.
"""

TARGETS = [
    "frames",  # FIFO frame decode: driver/_speedups.c decode_frames vs FrameDecoder(pure=True)
    "jsonfile",  # json-file encode: _speedups.c encode_lines vs encode_entries_pure, byte-exact; decode_line
    "forward_records",  # forward record packing: _speedups.c encode_records vs RecordEncoder(pure=True)
    "forward_entries",  # the receiver's C entry counter (_entries.c) vs the Python decoder, and both servers
    "forward_replies",  # the forward client's reply parser (acks, HELO, PONG) and handshake
    "loki_encode",  # Loki: _encode.c encode_stream vs encode_stream_reference, decoded with protobuf; snappy
    "loki_response",  # Loki: what an HTTP answer (status, body, Retry-After) means to the batcher
    "es_encode",  # Elasticsearch: _encode.c encode_documents vs documents_pure, byte-exact; each line json.loads
    "es_response",  # Elasticsearch: bulk answers (status, body, Retry-After) through EsClient.bulk to the batcher
]

# The Python modules whose branches guide each target besides its own (atheris instruments them). The C
# extensions always count. Instrumented Python runs ~6x slower: a target whose subject is C keeps the Python
# reference uninstrumented and spends the time on executions.
PYTHON_COVERAGE: dict[str, list[str]] = {
    "frames": [],
    "jsonfile": ["driver.jsonfile"],
    "forward_records": [],
    "forward_entries": [],
    "forward_replies": ["driver.outputs.forward.codec"],
    "loki_encode": [],
    "loki_response": ["driver.outputs.loki.client"],
    "es_encode": [],
    "es_response": ["driver.outputs.elasticsearch.codec", "driver.outputs.elasticsearch.client",
                    "driver.outputs.elasticsearch.batcher"],
}
