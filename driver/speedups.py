"""The optional C functions, looked up once for every module that uses them.

``driver/_speedups.c`` (frame decoding, json-file encoding, forward record packing),
``driver/outputs/forward/_entries.c`` (the entry counter of a count-only receiver), ``driver/outputs/loki/_encode.c``
(Loki push entries) and ``driver/outputs/elasticsearch/_encode.c`` (Elasticsearch documents) are built by setup.py
when a compiler is there. The Python code each function stands in for stays the reference and the fallback.
``LOGBRIDGE_PURE=1`` switches all of them off (tests, comparisons). A name is None when its function is not
available: not built, switched off, or an older build.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

PURE = os.environ.get("LOGBRIDGE_PURE", "") not in ("", "0")


def _function(module: str, name: str) -> Callable[..., Any] | None:
    if PURE:
        return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


decode_frames = _function("driver._speedups", "decode_frames")
encode_lines = _function("driver._speedups", "encode_lines")
encode_frame_lines = _function("driver._speedups", "encode_frame_lines")
encode_records = _function("driver._speedups", "encode_records")
encode_record_frames = _function("driver._speedups", "encode_record_frames")
count_entries = _function("driver.outputs.forward._entries", "count_entries")
encode_loki_stream = _function("driver.outputs.loki._encode", "encode_stream")
encode_loki_frames = _function("driver.outputs.loki._encode", "encode_frames")
encode_es_documents = _function("driver.outputs.elasticsearch._encode", "encode_documents")
encode_es_frames = _function("driver.outputs.elasticsearch._encode", "encode_frames")
