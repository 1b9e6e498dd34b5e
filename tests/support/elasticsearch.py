"""A protocol-faithful Elasticsearch `_bulk` receiver for tests (aiohttp). Each rule names what it models in
elastic/elasticsearch (source path, or the docs) so a test that passes here fails on a real cluster for the
same reasons only.

Two layers, as in tests/support/loki.py: `Cluster` is the indices and their rules, pure code over bytes (no I/O:
`Cluster.bulk(body, ...)` returns the response a real cluster would give); `BulkReceiver` is the HTTP side
(routes, auth, gzip, Content-Type, filter_path, size limit, injected faults, hangs, closed connections).
`ReceiverThread` runs one in a thread of its own, for the end-to-end tests (down and up again on the same port,
its indices kept). What tests read: `cluster.docs(target)`, `count(target)`, `ids(target)` (a Counter: 2 means
the same `_id` twice, which only a rollover allows), `item_statuses`, `duplicates` (409s answered).

Not modelled: update/delete actions (answered per item as not modelled), ingest pipelines' processors (a
pipeline is only checked to exist and recorded), shards and replicas (one primary shard per index), refresh
(every document is searchable at once), index templates other than the data-stream patterns given.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import gzip
import json
import re
import secrets
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# x-pack/plugin/core/template-resources/.../logs@template.json: the built-in `logs` template (priority 100,
# "index_patterns": ["logs-*-*"], "data_stream": {}), so on Elasticsearch a create to any such name makes a data
# stream. OpenSearch ships no such template: there the same name is a plain index.
ES_DATA_STREAM_PATTERNS = ("logs-*-*", "metrics-*-*", "traces-*-*", "synthetics-*-*")
# logs@mappings.json: data_stream.type is constant_keyword with value "logs"; dataset and namespace are
# constant_keyword without a value, so the first document of a backing index fixes theirs.
CONSTANT_FIELDS = ("data_stream.type", "data_stream.dataset", "data_stream.namespace")
MAX_ID_BYTES = 512  # IndexRequest.validate: "id [..] is too long, must be no longer than 512 bytes but was: N"
MAX_CONTENT_LENGTH = 100 << 20  # http.max_content_length default 100mb, checked on the decompressed body
BULK_ACTIONS = ("create", "delete", "index", "update")
# BulkRequestParser: the keys an action line may carry (8.x; `_type` was removed and is an unknown parameter).
ACTION_KEYS = {"_index", "_id", "routing", "op_type", "version", "version_type", "if_seq_no", "if_primary_term",
               "retry_on_conflict", "pipeline", "_source", "require_alias", "require_data_stream",
               "dynamic_templates", "list_executed_pipelines"}
NDJSON_TYPES = {"application/x-ndjson", "application/json", "application/vnd.elasticsearch+x-ndjson",
                "application/vnd.elasticsearch+json"}
# MetadataCreateIndexService.validateIndexOrAliasName: characters an index name must not contain.
INVALID_NAME_CHARS = set('\\/*?"<>| ,#:')
# strict_date_optional_time||epoch_millis, the default format of a `date`/`date_nanos` field.
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?)?)?")


class BulkError(Exception):
    """A whole-request failure: the HTTP status and the `error` object ES answers with."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(f"{status} {error_type}: {reason}")
        self.status, self.error_type, self.reason = status, error_type, reason

    def body(self) -> dict:
        # ElasticsearchException.generateFailureXContent: {"error": {"root_cause": [...], "type", "reason"}, "status"}
        cause = {"type": self.error_type, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


class ItemError(Exception):
    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error_type, self.reason = status, error_type, reason


@dataclass
class ItemFault:
    """Answer matching items with `status` (429 es_rejected_execution_exception, 5xx, 400 ...) `times` times
    (None: for ever). `match` sees the parsed source (a dict) and the action's `_id`."""

    status: int
    error_type: str = ""
    reason: str = "fault injected"
    times: int | None = 1
    match: Callable[[dict, str | None], bool] = lambda source, _id: True

    def __post_init__(self) -> None:
        if not self.error_type:
            self.error_type = {429: "es_rejected_execution_exception", 400: "document_parsing_exception",
                               503: "unavailable_shards_exception"}.get(self.status, "exception")


@dataclass
class Doc:
    id: str
    source: dict
    seq_no: int
    pipeline: str | None
    version: int = 1


@dataclass
class Index:
    """One concrete index (a plain index or a data stream's backing index): one primary shard."""

    name: str
    data_stream: str | None = None
    docs: dict[str, Doc] = field(default_factory=dict)
    uuid: str = field(default_factory=lambda: base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22])
    seq_no: int = 0
    block: str | None = None  # "write" or "read_only_allow_delete"
    mapping: dict[str, str] = field(default_factory=dict)  # dynamic mapping: field path -> "object" or a type
    constants: dict[str, str] = field(default_factory=dict)


@dataclass
class DataStream:
    name: str
    indices: list[Index] = field(default_factory=list)

    @property
    def write_index(self) -> Index:
        return self.indices[-1]  # DataStream.getWriteIndex: the last backing index


def backing_index_name(stream: str, generation: int, epoch_ms: int) -> str:
    """DataStream.getDefaultBackingIndexName: `.ds-<stream>-<uuuu.MM.dd of the creation time, UTC>-<%06d gen>`."""
    day = time.strftime("%Y.%m.%d", time.gmtime(epoch_ms / 1000))
    return f".ds-{stream}-{day}-{generation:06d}"


def invalid_index_name(name: str) -> str | None:
    """MetadataCreateIndexService.validateIndexOrAliasName's reasons, or None."""
    if name != name.lower():
        return "must be lowercase"
    if name in (".", ".."):
        return 'must not be "." or ".."'
    if name[:1] in ("_", "-", "+"):
        return "must not start with '_', '-', or '+'"
    if INVALID_NAME_CHARS & set(name):
        return 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?, #, :]'
    if len(name.encode()) > 255:
        return "index name is too long"
    return None


def _strict_object(pairs: list[tuple[str, Any]]) -> dict:
    # ES parses JSON with Jackson's STRICT_DUPLICATE_DETECTION (XContent json factory): a repeated key is an error.
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"Duplicate field '{key}'")
        out[key] = value
    return out


def parse_json(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_object)


def _value_type(value: Any) -> str:
    # Dynamic mapping (DocumentParser / DynamicFieldsBuilder): long, float (double), boolean, keyword for strings.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    return "keyword"


def _walk(obj: dict, prefix: str, out: dict[str, Any]) -> None:
    """Field paths of a source, dotted names expanded to objects as DocumentParser does (`a.b` is `a: {b}`)."""
    for key, value in obj.items():
        path = f"{prefix}{key}"
        parts = path.split(".")
        for i in range(1, len(parts)):  # every dotted prefix is an object
            parent = ".".join(parts[:i])
            if not isinstance(out.setdefault(parent, {}), dict):
                raise ItemError(400, "document_parsing_exception",
                                f"Could not dynamically add mapping for field [{path}]. Existing mapping for "
                                f"[{parent}] must be of type object but found [{_value_type(out[parent])}].")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, dict):
                out.setdefault(path, {})
                if not isinstance(out[path], dict):
                    raise ItemError(400, "document_parsing_exception",
                                    f"object mapping for [{path}] tried to parse field [{path}] as object, "
                                    "but found a concrete value")
                _walk(v, path + ".", out)
            elif v is not None:
                if isinstance(out.get(path), dict):
                    raise ItemError(400, "document_parsing_exception",
                                    f"Could not dynamically add mapping for field [{path}]. Existing mapping for "
                                    f"[{path}] must be of type object but found [{_value_type(v)}].")
                out.setdefault(path, v)


def _fits(mapped: str, value: Any) -> bool:
    """Whether a value parses into a mapped field (NumberFieldMapper coerces numeric strings; keyword takes all)."""
    if mapped in ("keyword", "date", "object"):
        return mapped != "object"  # a date is checked where it matters (the data stream's @timestamp)
    if mapped == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class Cluster:
    """The indices and the bulk rules; no I/O. `now_ms` gives the clock for backing index names."""

    def __init__(self, *, data_stream_patterns: tuple[str, ...] = ES_DATA_STREAM_PATTERNS,
                 pipelines: set[str] | None = None, now_ms: Callable[[], int] | None = None) -> None:
        self.data_stream_patterns = data_stream_patterns
        self.pipelines = pipelines  # None: any pipeline exists
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.indices: dict[str, Index] = {}
        self.data_streams: dict[str, DataStream] = {}
        self.item_faults: list[ItemFault] = []
        self.item_statuses: Counter[int] = Counter()
        self.duplicates = 0  # 409 version conflicts answered to `create`
        self.read_only = False  # cluster.blocks.read_only: every write refused for the whole request

    # ---- what tests read ---------------------------------------------------------------------------------
    def resolve(self, target: str | None) -> list[Index]:
        """The indices a name or wildcard pattern means (IndexNameExpressionResolver): data streams' backing
        indices, and plain indices; hidden (`.`) ones only for a pattern that starts with `.`. None: all."""
        if target is None:
            return list(self.indices.values())
        out = [i for name, ds in self.data_streams.items() if fnmatch.fnmatchcase(name, target) for i in ds.indices]
        streams = {i.name for i in out}
        out += [i for name, i in self.indices.items() if fnmatch.fnmatchcase(name, target) and name not in streams
                and (not name.startswith(".") or target.startswith("."))]
        return out

    def docs(self, target: str | None = None) -> list[Doc]:
        """Documents in the target's indices, each index in seq_no (arrival) order, oldest backing index first."""
        return [d for i in self.resolve(target) for d in sorted(i.docs.values(), key=lambda d: d.seq_no)]

    def sources(self, target: str | None = None) -> list[dict]:
        return [d.source for d in self.docs(target)]

    def count(self, target: str | None = None) -> int:
        return sum(len(i.docs) for i in self.resolve(target))

    def ids(self, target: str | None = None) -> Counter[str]:
        return Counter(d.id for d in self.docs(target))

    # ---- admin -------------------------------------------------------------------------------------------
    def rollover(self, name: str) -> dict:
        """POST /<data stream>/_rollover (MetadataRolloverService.rolloverDataStream): a new backing index with the
        next generation becomes the write index; `_id`s are unique per backing index only."""
        stream = self.data_streams.get(name)
        if stream is None:
            if name in self.indices:
                raise BulkError(400, "illegal_argument_exception",
                                f"rollover target [{name}] does not point to an alias or data stream")
            raise BulkError(404, "index_not_found_exception", f"no such index [{name}]")
        old = stream.write_index
        new = self._backing_index(stream, len(stream.indices) + 1)
        return {"acknowledged": True, "shards_acknowledged": True, "old_index": old.name, "new_index": new.name,
                "rolled_over": True, "dry_run": False, "lazy": False, "conditions": {}}

    def block_writes(self, target: str, kind: str | None = "write") -> None:
        """PUT /<target>/_block/write (kind "write") or the disk flood stage's read_only_allow_delete block;
        None lifts it. On a data stream, its write index."""
        stream = self.data_streams.get(target)
        for index in [stream.write_index] if stream else self.resolve(target):
            index.block = kind

    def data_stream_info(self, name: str) -> dict:
        stream = self.data_streams[name]
        return {"name": name, "timestamp_field": {"name": "@timestamp"}, "generation": len(stream.indices),
                "indices": [{"index_name": i.name, "index_uuid": i.uuid} for i in stream.indices]}

    # ---- the bulk request --------------------------------------------------------------------------------
    def bulk(self, body: bytes, default_index: str | None = None, default_pipeline: str | None = None) -> dict:
        """One `_bulk` body (decompressed) -> the full response, or BulkError for a whole-request failure."""
        actions = self._parse(body, default_index, default_pipeline)
        if self.read_only:
            # ClusterBlocks.globalBlockedException(WRITE) in BulkOperation: the whole request fails.
            raise BulkError(403, "cluster_block_exception", "blocked by: [FORBIDDEN/6/cluster read-only (api)];")
        started = time.monotonic()
        items = [self._item(*a) for a in actions]
        errors = any("error" in next(iter(i.values())) for i in items)
        for i in items:
            self.item_statuses[next(iter(i.values()))["status"]] += 1
        return {"errors": errors, "took": int((time.monotonic() - started) * 1000), "items": items}

    def _parse(self, body: bytes, default_index, default_pipeline) -> list[tuple]:
        """BulkRequestParser.parse: NDJSON, action line then source line (none for delete); blank lines skipped;
        a trailing \\r before the \\n dropped; the body must end with \\n."""
        if not body:
            raise BulkError(400, "parse_exception", "request body is required")  # RestRequest.content()
        if not body.endswith(b"\n"):
            raise BulkError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
        lines = body.split(b"\n")[:-1]
        actions, i = [], 0
        while i < len(lines):
            raw = lines[i].rstrip(b"\r")
            i += 1
            if not raw.strip():
                continue  # `token == null`: an empty line is skipped
            line_no = i
            try:
                action_line = parse_json(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BulkError(400, "x_content_parse_exception", f"[{line_no}:1] {exc}") from None
            if not isinstance(action_line, dict) or len(action_line) != 1:
                raise BulkError(400, "illegal_argument_exception",
                                f"Malformed action/metadata line [{line_no}], expected a single action")
            action, params = next(iter(action_line.items()))
            if action not in BULK_ACTIONS:
                raise BulkError(400, "illegal_argument_exception",
                                f"Malformed action/metadata line [{line_no}], expected field [create], [delete], "
                                f"[index] or [update] but found [{action}]")
            if not isinstance(params, dict):
                raise BulkError(400, "illegal_argument_exception",
                                f"Malformed action/metadata line [{line_no}], expected START_OBJECT or END_OBJECT")
            for key, value in params.items():
                if key not in ACTION_KEYS:
                    raise BulkError(400, "illegal_argument_exception",
                                    f"Action/metadata line [{line_no}] contains an unknown parameter [{key}]")
                if isinstance(value, (list, dict)) and key not in ("_source", "dynamic_templates"):
                    raise BulkError(400, "illegal_argument_exception",
                                    f"Malformed action/metadata line [{line_no}], expected a simple value for "
                                    f"field [{key}] but found [START_ARRAY]")
            source = None
            if action != "delete":
                if i >= len(lines):
                    # Older parsers dropped such an action silently; a client must never send it, so say so.
                    raise BulkError(400, "illegal_argument_exception",
                                    f"action line [{line_no}] has no source line")
                source = lines[i].rstrip(b"\r")
                i += 1
            index = params.get("_index", default_index)
            _id = params.get("_id")
            if index is None:
                raise BulkError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
            if _id is not None:  # IndexRequest.validate, run for every item by BulkRequest.validate
                _id = str(_id)
                if not _id:
                    raise BulkError(400, "action_request_validation_exception",
                                    "Validation Failed: 1: if _id is specified it must not be empty;")
                if len(_id.encode()) > MAX_ID_BYTES:
                    raise BulkError(400, "action_request_validation_exception",
                                    f"Validation Failed: 1: id [{_id}] is too long, must be no longer than "
                                    f"{MAX_ID_BYTES} bytes but was: {len(_id.encode())};")
            op = "create" if action == "create" or params.get("op_type") == "create" else action
            actions.append((action, op, str(index), _id, params.get("pipeline", default_pipeline), source))
        if not actions:
            raise BulkError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        return actions

    def _item(self, action: str, op: str, target: str, _id: str | None, pipeline: str | None,
              raw: bytes | None) -> dict:
        result: dict[str, Any] = {"_index": target, "_id": _id}
        try:
            if action in ("update", "delete"):
                raise ItemError(400, "illegal_argument_exception", f"the test receiver does not model [{action}]")
            index = self._write_index(target, op)
            result["_index"] = index.name
            result.update(self._write(index, op, _id, pipeline, raw))
        except ItemError as exc:
            result["status"] = exc.status
            result["error"] = {"type": exc.error_type, "reason": exc.reason}
            if exc.status == 409:
                self.duplicates += 1
                result["error"].update(index_uuid=self.indices[result["_index"]].uuid, shard="0",
                                       index=result["_index"])
        return {action: result}

    def _write_index(self, target: str, op: str) -> Index:
        """IndexAbstraction resolution in TransportBulkAction/BulkOperation: a data stream takes `create` only and
        writes to its write index; a missing name matching a data-stream template makes the stream (auto-create);
        any other missing name makes a plain index."""
        stream = self.data_streams.get(target)
        if stream is not None or (target not in self.indices and self._is_data_stream_name(target)):
            if op != "create":
                raise ItemError(400, "illegal_argument_exception",
                                "only write ops with an op_type of create are allowed in data streams")
            if stream is None:
                problem = invalid_index_name(target)
                if problem:
                    raise ItemError(400, "invalid_index_name_exception", f"Invalid index name [{target}], {problem}")
                stream = self.data_streams[target] = DataStream(target)
                self._backing_index(stream, 1)
            return stream.write_index
        index = self.indices.get(target)
        if index is None:
            problem = invalid_index_name(target)
            if problem:
                raise ItemError(400, "invalid_index_name_exception", f"Invalid index name [{target}], {problem}")
            index = self.indices[target] = Index(target)
        elif index.data_stream and op == "create":
            raise ItemError(400, "illegal_argument_exception",
                            f"index request with op_type=create targeting backing indices is disallowed, "
                            f"target corresponding data stream [{index.data_stream}] instead")
        return index

    def _is_data_stream_name(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.data_stream_patterns)

    def _backing_index(self, stream: DataStream, generation: int) -> Index:
        index = Index(backing_index_name(stream.name, generation, self._now_ms()), data_stream=stream.name,
                      mapping={"@timestamp": "date"})
        stream.indices.append(index)
        self.indices[index.name] = index
        return index

    def _write(self, index: Index, op: str, _id: str | None, pipeline: str | None, raw: bytes) -> dict:
        if index.block == "write":  # IndexMetadata.INDEX_WRITE_BLOCK, per item through the shard request
            raise ItemError(403, "cluster_block_exception",
                            f"index [{index.name}] blocked by: [FORBIDDEN/8/index write (api)];")
        if index.block == "read_only_allow_delete":  # IndexMetadata.INDEX_READ_ONLY_ALLOW_DELETE_BLOCK
            raise ItemError(429, "cluster_block_exception",
                            f"index [{index.name}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded "
                            "flood-stage watermark, index has read-only-allow-delete block];")
        if pipeline is not None and pipeline != "_none" and self.pipelines is not None \
                and pipeline not in self.pipelines:
            raise ItemError(400, "illegal_argument_exception", f"pipeline with id [{pipeline}] does not exist")
        try:  # the source is parsed on the shard: a bad one fails its item only
            source = parse_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ItemError(400, "document_parsing_exception", f"[1:1] failed to parse: {exc}") from None
        if not isinstance(source, dict):
            raise ItemError(400, "document_parsing_exception", "[1:1] failed to parse: source is not an object")
        for fault in self.item_faults:
            if fault.match(source, _id):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.item_faults.remove(fault)
                raise ItemError(fault.status, fault.error_type, fault.reason)
        paths: dict[str, Any] = {}
        _walk(source, "", paths)
        if index.data_stream:
            self._check_data_stream_doc(index, paths, _id)
        self._map(index, paths)
        if _id is None:  # UUIDs.base64UUID: 20 url-safe characters
            _id = base64.urlsafe_b64encode(secrets.token_bytes(15)).decode()
        existing = index.docs.get(_id)
        if existing is not None and op == "create":
            # InternalEngine.planIndexingAsPrimary -> VersionConflictEngineException
            raise ItemError(409, "version_conflict_engine_exception",
                            f"[{_id}]: version conflict, document already exists (current version "
                            f"[{existing.version}])")
        version = existing.version + 1 if existing else 1
        index.docs[_id] = Doc(_id, source, index.seq_no, pipeline, version)
        index.seq_no += 1
        status, result = (200, "updated") if existing else (201, "created")
        return {"_id": _id, "_version": version, "result": result,
                "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": index.seq_no - 1,
                "_primary_term": 1, "status": status}

    def _check_data_stream_doc(self, index: Index, paths: dict[str, Any], _id: str | None) -> None:
        # DataStreamTimestampFieldMapper: exactly one @timestamp, a date.
        stamp = paths.get("@timestamp")
        if stamp is None or isinstance(stamp, dict):
            raise ItemError(400, "document_parsing_exception",
                            "[1:1] failed to parse: data stream timestamp field [@timestamp] is missing")
        if not (isinstance(stamp, int) and not isinstance(stamp, bool)) and not (
                isinstance(stamp, str) and _DATE.fullmatch(stamp)):
            raise ItemError(400, "document_parsing_exception",
                            f"[1:1] failed to parse field [@timestamp] of type [date_nanos] in document with id "
                            f"'{_id}'. Preview of field's value: '{stamp}'")
        # ConstantKeywordFieldMapper: a value other than the mapped one fails; an unset one is set by the first.
        for name in CONSTANT_FIELDS:
            if name not in paths:
                continue
            value = paths[name]
            fixed = index.constants.get(name, "logs" if name == "data_stream.type" else None)
            if fixed is not None and value != fixed:
                raise ItemError(400, "document_parsing_exception",
                                f"[1:1] failed to parse: [constant_keyword] field [{name}] only accepts values "
                                f"that are equal to the value defined in the mappings [{fixed}], but got [{value}]")
            index.constants[name] = value

    def _map(self, index: Index, paths: dict[str, Any]) -> None:
        # Dynamic mapping: the first document fixes each field's type in this index; later ones must fit it.
        updates = {}
        for path, value in paths.items():
            kind = "object" if isinstance(value, dict) else _value_type(value)
            mapped = index.mapping.get(path)
            if mapped is None:
                updates[path] = kind
            elif (mapped == "object") != (kind == "object"):
                raise ItemError(400, "document_parsing_exception",
                                f"[1:1] object mapping for [{path}] tried to parse field [{path}] as "
                                f"{'object' if kind == 'object' else 'a concrete value'}, but it is mapped as "
                                f"[{mapped}]")
            elif kind != "object" and not _fits(mapped, value):
                raise ItemError(400, "document_parsing_exception",
                                f"[1:1] failed to parse field [{path}] of type [{mapped}]")
        index.mapping.update(updates)


# ---- filter_path --------------------------------------------------------------------------------------------
def filter_path(obj: Any, spec: str) -> Any:
    """The `filter_path` response filter (XContent FilterPath, inclusions only): dotted paths, `*` matches one
    name, `**` any depth; arrays are looked through; objects left empty are dropped, and the top level is then
    `{}`. So `errors,items.*.status,items.*.error` gives {"errors", "items": [{"create": {"status"[, "error"]}}]}."""
    patterns = [p.split(".") for p in spec.split(",") if p]
    if any(p[0].startswith("-") for p in patterns):
        raise BulkError(400, "illegal_argument_exception", "exclusions in filter_path are not modelled here")
    kept = _filter(obj, patterns)
    return {} if kept is _DROP else kept


_DROP = object()


def _filter(obj: Any, patterns: list[list[str]]) -> Any:
    if any(not p for p in patterns):
        return obj  # a pattern ended here: the whole value is kept
    if isinstance(obj, list):
        kept = [k for k in (_filter(v, patterns) for v in obj) if k is not _DROP]
        return kept if kept else _DROP
    if not isinstance(obj, dict):
        return _DROP
    out = {}
    for key, value in obj.items():
        nxt = []
        for p in patterns:
            if p[0] == "**":
                nxt += [p, p[1:]]
                if len(p) > 1 and fnmatch.fnmatchcase(key, p[1]):
                    nxt.append(p[2:])
            elif fnmatch.fnmatchcase(key, p[0]):
                nxt.append(p[1:])
        if nxt:
            kept = _filter(value, nxt)
            if kept is not _DROP:
                out[key] = kept
    return out if out else _DROP


# ---- HTTP ---------------------------------------------------------------------------------------------------
@dataclass
class Fault:
    """Answer the next `times` requests with `status` and ES's error body (429 es_rejected_execution_exception,
    503, 401 ...); 413 comes with no body, as Netty's aggregator sends it."""

    status: int
    times: int = 1
    error_type: str = ""
    reason: str = "fault injected"


@dataclass
class Credentials:
    """Security on: users (basic) and API keys (id -> key), as the security realm checks them."""

    users: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)


class BulkReceiver:
    def __init__(self, *, cluster: Cluster | None = None, flavor: str = "elasticsearch",
                 credentials: Credentials | None = None, max_content_length: int = MAX_CONTENT_LENGTH,
                 version: str = "8.17.0", ssl_context=None) -> None:
        self.flavor = flavor
        if cluster is None:
            patterns = ES_DATA_STREAM_PATTERNS if flavor == "elasticsearch" else ()
            cluster = Cluster(data_stream_patterns=patterns)
        self.cluster = cluster
        self.credentials = credentials
        self.max_content_length = max_content_length
        self.version = version
        self.ssl_context = ssl_context
        self.faults: list[Fault] = []
        self.hang = False
        self.close_connections = 0  # this many bulk requests get their connection closed without an answer
        # this many bulk requests are indexed, then their connection is closed unanswered: the client cannot
        # know what went in (a node that died after writing, a proxy timeout); on_lost_answer runs after each
        self.lose_answers = 0
        self.on_lost_answer: Callable[[BulkReceiver], None] | None = None
        self.hang_after_indexing = False  # index, then never answer (until release() or stop())
        self.answers_lost = 0
        self.requests = 0  # bulk requests that reached the handler
        self.statuses: list[int] = []
        self.auth_headers: list[str | None] = []
        self.encodings: list[str | None] = []
        self.queries: list[dict[str, str]] = []
        self.body_bytes = 0  # as sent (compressed)
        self.got_request = asyncio.Event()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.url = ""

    async def start(self, port: int | None = None) -> str:
        app = web.Application(client_max_size=self.max_content_length * 4 + (1 << 20))
        app.router.add_route("*", "/", self._root)
        app.router.add_route("POST", "/_bulk", self._bulk)
        app.router.add_route("PUT", "/_bulk", self._bulk)
        app.router.add_route("POST", "/{index}/_bulk", self._bulk)
        app.router.add_route("PUT", "/{index}/_bulk", self._bulk)
        app.router.add_route("POST", "/{index}/_rollover", self._rollover)
        app.router.add_route("GET", "/_data_stream/{name}", self._data_stream)
        app.router.add_route("GET", "/{index}/_count", self._count)
        # auto_decompress off: the body is decompressed here, so its sent and decompressed sizes are both known
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port if port is None else port,
                           ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"
        self._released = asyncio.Event()
        return self.url

    def release(self) -> None:
        """Let hung requests go on (and be answered)."""
        self.hang = self.hang_after_indexing = False
        self._released.set()
        self._released = asyncio.Event()

    async def stop(self) -> None:
        """Stop listening and drop connections; the indices stay (start() again serves them)."""
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- responses -----------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        # RestController (7.14+): every response carries X-Elastic-Product; Elastic's clients check it.
        return {"X-Elastic-Product": "Elasticsearch"} if self.flavor == "elasticsearch" else {}

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> web.Response:
        return web.Response(status=status, body=json.dumps(obj, separators=(",", ":")).encode(),
                            content_type="application/json", headers={**self._headers(), **(headers or {})})

    def _error(self, exc: BulkError, headers: dict | None = None) -> web.Response:
        return self._json(exc.status, exc.body(), headers)

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        """The security realms (x-pack security, DefaultAuthenticationFailureHandler): 401 with the challenges."""
        if self.credentials is None:
            return None
        path = request.path_qs
        header = request.headers.get("Authorization")
        challenges = ['Basic realm="security" charset="UTF-8"']
        if self.flavor == "elasticsearch":
            challenges.append("ApiKey")
        headers = {"WWW-Authenticate": ", ".join(challenges)}
        scheme, _, value = (header or "").partition(" ")
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if scheme == "Basic" and decoded and ":" in decoded:
            user, _, password = decoded.partition(":")
            if self.credentials.users.get(user) == password:
                return None
            return self._error(BulkError(401, "security_exception",
                                         f"unable to authenticate user [{user}] for REST request [{path}]"), headers)
        if scheme == "ApiKey" and self.flavor == "elasticsearch" and decoded and ":" in decoded:
            key_id, _, key = decoded.partition(":")
            if self.credentials.api_keys.get(key_id) == key:
                return None
            return self._error(BulkError(401, "security_exception",
                                         "unable to authenticate with provided credentials and anonymous access "
                                         "is not allowed for this request"), headers)
        return self._error(BulkError(401, "security_exception",
                                     f"missing authentication credentials for REST request [{path}]"), headers)

    async def _root(self, request: web.Request) -> web.Response:
        problem = self._auth_problem(request)
        if problem:
            return problem
        version = {"number": self.version, "build_flavor": "default"}
        if self.flavor == "opensearch":
            version = {"distribution": "opensearch", "number": self.version}
        return self._json(200, {"name": "test-receiver", "cluster_name": "logbridge-tests", "version": version,
                                "tagline": "You Know, for Search"})

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.auth_headers.append(request.headers.get("Authorization"))
        self.encodings.append(request.headers.get("Content-Encoding"))
        self.queries.append(dict(request.query))
        self.got_request.set()
        if self.close_connections > 0:
            self.close_connections -= 1
            request.transport.close()
            raise asyncio.CancelledError  # no answer at all
        if self.hang:
            await self._released.wait()  # until stop(): a cluster that took the connection and went silent
        resp = await self._answer(request)
        if resp.status == 200 and self.lose_answers > 0:
            self.lose_answers -= 1
            self.answers_lost += 1
            if self.on_lost_answer is not None:
                self.on_lost_answer(self)
            request.transport.close()
            raise asyncio.CancelledError
        if resp.status == 200 and self.hang_after_indexing:
            self.answers_lost += 1
            await self._released.wait()
        self.statuses.append(resp.status)
        return resp

    async def _answer(self, request: web.Request) -> web.Response:
        problem = self._auth_problem(request)
        if problem:
            return problem
        if self.faults:
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.pop(0)
            if fault.status == 413:
                return web.Response(status=413, headers=self._headers())
            error_type = fault.error_type or {429: "es_rejected_execution_exception",
                                              503: "unavailable_shards_exception"}.get(fault.status, "exception")
            return self._error(BulkError(fault.status, error_type, fault.reason))
        # RestController: a body needs a Content-Type the bulk handler reads (NDJSON or JSON), else 406.
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in NDJSON_TYPES:
            return self._json(406, {"error": f"Content-Type header [{ctype}] is not supported", "status": 406})
        raw = await request.read()
        self.body_bytes += len(raw)
        # Netty4HttpServerTransport: an HttpContentDecompressor (gzip, deflate) before the aggregator, so
        # http.max_content_length applies to the decompressed body.
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding in ("gzip", "x-gzip"):
                raw = gzip.decompress(raw)
            elif encoding in ("deflate", "x-deflate"):
                raw = zlib.decompress(raw)
            elif encoding not in ("", "identity"):
                raise BulkError(400, "illegal_argument_exception", f"unsupported Content-Encoding [{encoding}]")
        except (OSError, EOFError, zlib.error) as exc:
            return self._error(BulkError(400, "illegal_argument_exception", f"bad {encoding} body: {exc}"))
        except BulkError as exc:
            return self._error(exc)
        if len(raw) > self.max_content_length:
            return web.Response(status=413, headers=self._headers())  # Netty's aggregator: no body
        try:
            response = self.cluster.bulk(raw, request.match_info.get("index"), request.query.get("pipeline"))
            if "filter_path" in request.query:
                response = filter_path(response, request.query["filter_path"])
        except BulkError as exc:
            return self._error(exc)
        return self._json(200, response)

    async def _rollover(self, request: web.Request) -> web.Response:
        try:
            return self._json(200, self.cluster.rollover(request.match_info["index"]))
        except BulkError as exc:
            return self._error(exc)

    async def _data_stream(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.cluster.data_streams:
            return self._error(BulkError(404, "index_not_found_exception", f"no such index [{name}]"))
        return self._json(200, {"data_streams": [self.cluster.data_stream_info(name)]})

    async def _count(self, request: web.Request) -> web.Response:
        return self._json(200, {"count": self.cluster.count(request.match_info["index"])})


@contextlib.asynccontextmanager
async def bulk_receiver(**kwargs) -> AsyncIterator[BulkReceiver]:
    receiver = BulkReceiver(**kwargs)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class ReceiverThread:
    """A BulkReceiver on a loop in its own thread, for tests that drive docker synchronously: `down()` stops
    listening (connections refused), `up()` listens again on the same port with the same indices, `call(fn)`
    runs fn(receiver) on the loop (the only safe way to touch its state while requests arrive)."""

    def __init__(self, port: int = 0, **kwargs) -> None:
        self._port = port
        self._kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="es-receiver", daemon=True)
        self.receiver: BulkReceiver | None = None

    def _run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ReceiverThread:
        self._thread.start()

        async def make():
            self.receiver = BulkReceiver(**self._kwargs)
            await self.receiver.start(self._port)

        self._run(make())
        return self

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def cluster(self) -> Cluster:
        return self.receiver.cluster

    def call(self, fn: Callable[[BulkReceiver], Any]) -> Any:
        async def run():
            return fn(self.receiver)

        return self._run(run())

    def down(self) -> None:
        self._run(self.receiver.stop())

    def up(self) -> None:
        self._run(self.receiver.start())

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self.receiver.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()
