"""Elasticsearch ``_bulk`` bodies and answers, as bytes. Pure: no I/O.

A container's documents differ only in four fields, so a ``DocumentTemplate`` is made once per container (its
metadata as JSON, the action line per target name) and each entry fills in ``@timestamp``, ``event.sequence``,
``message`` and ``stream``: no dict and no ``json.dumps`` per line. The message is escaped by json-file's escaper
(``driver/jsonfile.py``: valid JSON, invalid UTF-8 as U+FFFD).

A document is one action line and one source line (NDJSON, each ending in ``\\n``, wire-protocols.md C.1).
Writes are ``create`` (data streams take nothing else, and ``create`` with an id makes a resend answer 409),
with ``_id`` = ``<journal incarnation>-<container id>-<journal offset of the entry's first frame>``: the same
on every resend whatever the batch, new when the journal starts again at offset 0.

Bulk answers are requested with ``filter_path=errors,items.*.status,items.*.error``; the items are parsed only
when ``errors`` is true (wire-protocols.md C.3, C.4).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from driver import speedups
from driver.jsonfile import _COPY_AS_IS, _second_prefix, escape_log
from driver.outputs.elasticsearch.formats import DatedName

_encode_documents = speedups.encode_es_documents  # None: not built, or LOGBRIDGE_PURE
_encode_frames = speedups.encode_es_frames

CONTENT_TYPE = "application/x-ndjson"
FILTER_PATH = "errors,items.*.status,items.*.error"
# Item errors that are about the document itself: resending it can never succeed (issue 10 point 5).
DOCUMENT_ERRORS = frozenset({"document_parsing_exception", "mapper_parsing_exception", "illegal_argument_exception",
                             "strict_dynamic_mapping_exception"})
TOO_LARGE = "too_large"  # a single document over the cluster's request limit (413)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference: the tag follows the last ``:`` after the last ``/`` (a
    registry's port is not a tag), the digest the ``@``. Elastic's plugin splits at the first ``:``."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag or None, digest or None


def dedot(labels: Mapping[str, str]) -> dict[str, str]:
    """Beats' ``labels.dedot``: dots in keys become ``_``, so ``com.docker.compose.project`` stays one keyword
    field instead of objects that clash with a label named ``com``."""
    return {k.replace(".", "_"): v for k, v in labels.items()}


def data_stream_fields(target: str) -> dict[str, str] | None:
    """``data_stream.*`` for a target named ``<type>-<dataset>-<namespace>`` (ECS: no ``-`` in dataset or
    namespace), else None: the fields are constant_keyword, so a wrong guess would fail every document."""
    parts = target.split("-")
    if len(parts) != 3 or parts[0] not in ("logs", "metrics", "traces", "synthetics") or not all(parts):
        return None
    return {"type": parts[0], "dataset": parts[1], "namespace": parts[2]}


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


SCATTERED_RUNS = 16  # runs of documents a request's body keeps as views of their part's body


def _consecutive(indexes: Sequence[int], at: int = 0) -> bool:
    """Whether ``indexes[at:]`` (ascending, distinct, not empty) is one run of consecutive documents."""
    return indexes[-1] - indexes[at] + 1 == len(indexes) - at


class Documents(Sequence[bytes]):
    """Documents as one ``_bulk`` body and each one's end in it: a whole part is sent as it is (no join, no bytes
    object per line), and one document or a run of them can still be cut out (a retry of some items, a 413)."""

    __slots__ = ("body", "ends")

    def __init__(self, body: bytes, ends: Sequence[int]) -> None:
        self.body = body
        self.ends = ends  # ends[i]: where document i ends in body

    @classmethod
    def of(cls, docs: Iterable[bytes]) -> Documents:
        docs = list(docs)
        return cls(b"".join(docs), list(accumulate(map(len, docs))))

    def __len__(self) -> int:
        return len(self.ends)

    def _span(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self.ends)
        if not 0 <= i < len(self.ends):
            raise IndexError(i)
        return (self.ends[i - 1] if i else 0), self.ends[i]

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]  # no slices: nothing asks for them
        start, end = self._span(i)
        return self.body[start:end]

    def size(self, i: int) -> int:
        start, end = self._span(i)
        return end - start

    def fitting(self, indexes: Sequence[int], at: int, room: int) -> int:
        """How many of ``indexes[at:]`` (ascending) fit in ``room`` bytes, taken in order: a bisection of ``ends`` when
        they are consecutive (a part cut at a request's end), else one by one (a retry of some items)."""
        first = indexes[at]
        if _consecutive(indexes, at):
            base = self.ends[first - 1] if first else 0
            return bisect_right(self.ends, base + room, first, first + len(indexes) - at) - first
        taken = 0
        for i in indexes[at:]:
            room -= self.size(i)
            if room < 0:
                break
            taken += 1
        return taken

    def span_size(self, indexes: Sequence[int]) -> int:
        """The bytes of these documents (ascending indexes)."""
        if indexes and _consecutive(indexes):
            return self.ends[indexes[-1]] - (self.ends[indexes[0] - 1] if indexes[0] else 0)
        return sum(map(self.size, indexes))

    def pieces(self, indexes: Sequence[int]) -> list[bytes | memoryview]:
        """The body of these documents (ascending indexes) as views of ``body``, one per run of consecutive ones:
        the whole body itself for all of them, no copy for any."""
        if len(indexes) == len(self.ends):
            return [self.body]
        view = memoryview(self.body)
        if indexes and _consecutive(indexes):  # one run: no loop per document
            return [view[self.ends[indexes[0] - 1] if indexes[0] else 0:self.ends[indexes[-1]]]]
        pieces: list[bytes | memoryview] = []
        run_start = run_end = -1
        for i in indexes:
            start, end = self._span(i)
            if start != run_end:
                if run_end >= 0:
                    pieces.append(view[run_start:run_end])
                run_start = start
            run_end = end
        if run_end >= 0:
            pieces.append(view[run_start:run_end])
        # Scattered retries: each piece is a write of its own on the way out, a join of small ones costs less.
        return pieces if len(pieces) <= SCATTERED_RUNS else [b"".join(pieces)]

    def joined(self, indexes: Sequence[int]) -> bytes:
        """The body of these documents (ascending indexes) as one bytes object."""
        return b"".join(self.pieces(indexes))


@dataclass
class DocumentTemplate:
    """One container's documents: the static fields once, the action line per target."""

    index: DatedName
    pipeline: DatedName | None
    fields: dict  # the source's static part (container, host, agent, labels), as a JSON object
    id_prefix: str | None  # "<incarnation>-<container id>-", None: Elasticsearch picks the ids
    _parts_by_key: dict[tuple, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)

    def _parts(self, time_nano: int, source: str) -> tuple[bytes, bytes]:
        """(head, tail) of the documents of entries of this time and source: the action line up to the id's
        offset (or up to its end), and what follows the message."""
        index = self.index.at(time_nano)
        pipeline = self.pipeline.at(time_nano) if self.pipeline is not None else None
        key = (index, pipeline, source)
        got = self._parts_by_key.get(key)
        if got is None:
            meta = {"_index": index}
            if pipeline:
                meta["pipeline"] = pipeline
            head = b'{"create":' + _json(meta)[:-1]
            if self.id_prefix is not None:
                head += b',"_id":"' + self.id_prefix.encode()
            fields = dict(self.fields)
            ds = data_stream_fields(index)
            if ds is not None:
                fields["data_stream"] = ds
            stream = escape_log(source.encode("utf-8", "surrogateescape"))
            tail = b'","stream":"' + stream + b'"' + (b"," + _json(fields)[1:] if fields else b"}") + b"\n"
            if len(self._parts_by_key) > 64:
                self._parts_by_key.clear()
            got = self._parts_by_key[key] = (head, tail)
        return got

    def documents(self, entries: list[tuple], offsets: list[int]) -> list[bytes]:
        """One document (action + source line) per entry; ``offsets`` are the entries' journal offsets. In C
        for runs of plain lines of one source and hour (driver/outputs/elasticsearch/_encode.c), otherwise
        ``documents_pure``."""
        if _encode_documents is None or type(entries) is not list or type(offsets) is not list:
            return self.documents_pure(entries, offsets)
        out: list[bytes] = []
        ids = self.id_prefix is not None
        i, n = 0, len(entries)
        while i < n:
            source, time_nano = entries[i][0], entries[i][1]
            if type(source) is str and type(time_nano) is int and time_nano >= 0:
                head, tail = self._parts(time_nano, source)
                hour = time_nano // 1_000_000_000 // 3600 * 3600  # targets change at most hourly
                docs, j = _encode_documents(entries, offsets, i, head, ids, tail, source, hour, hour + 3600)
                out += docs
                if j > i:
                    i = j
                    continue
            out += self.documents_pure(entries[i:i + 1], offsets[i:i + 1])  # one the C encoder leaves to Python
            i += 1
        return out

    def frames_documents(self, frames: bytes, base: int) -> tuple[int, Documents] | None:
        """``documents`` straight from journal frames (``base``: the journal offset of ``frames[0]``), in C:
        (bytes used, the documents of the frames in them), for the ordinary frames at the start of ``frames``
        (_encode.c's encode_frames: it leaves garbage, chunks to join and times before 1970 to the decoded way,
        and stops at an incomplete frame). None without the C module: the caller decodes the frames and calls
        ``documents``, the reference this is tested against."""
        if _encode_frames is None:
            return None
        ids = self.id_prefix is not None
        view = memoryview(frames)
        used, next_time = 0, -1
        pieces: list[tuple[bytes, memoryview]] = []
        while True:
            if next_time < 0:  # an empty window: only finds the first frame's time
                head_out = tail_out = head_err = tail_err = b""
                lo = hi = 0
            else:  # one hour: every target and format is the same within it
                head_out, tail_out = self._parts(next_time, "stdout")
                head_err, tail_err = self._parts(next_time, "stderr")
                lo = next_time // 1_000_000_000 // 3600 * 3600
                hi = lo + 3600
            took, body, ends, _declined, next_time = _encode_frames(view[used:], base + used, head_out, tail_out,
                                                                     head_err, tail_err, ids, lo, hi)
            if took:
                pieces.append((body, memoryview(ends).cast("Q")))
                used += took
            if next_time < 0:
                break
        if len(pieces) == 1:
            return used, Documents(*pieces[0])
        # Across an hour (or nothing): the rare case, joined once.
        ends_all: list[int] = []
        at = 0
        for body, ends in pieces:
            ends_all += [at + e for e in ends]
            at += len(body)
        return used, Documents(b"".join(body for body, _ in pieces), ends_all)

    def documents_pure(self, entries: list[tuple], offsets: list[int]) -> list[bytes]:
        """``documents`` in Python: the reference for the C encoder, and what runs without it. Each (target,
        source) makes one %-format whose only directives are the per-line fields."""
        out: list[bytes] = []
        append = out.append
        copy_as_is = _COPY_AS_IS.fullmatch
        ids = self.id_prefix is not None
        prev_sec = prev_hour = None
        second = b""
        formats: dict[str, bytes] = {}
        for (source, time_nano, line, *_rest), at in zip(entries, offsets, strict=True):
            sec, ns = divmod(time_nano, 1_000_000_000)
            if sec != prev_sec:
                prev_sec = sec
                second = _second_prefix(sec)
                if sec // 3600 != prev_hour:  # targets change at most hourly
                    prev_hour = sec // 3600
                    formats.clear()
            fmt = formats.get(source)
            if fmt is None:
                head, tail = self._parts(time_nano, source)
                fmt = formats[source] = (head.replace(b"%", b"%%") + (b'%d"' if ids else b"")
                                         + b'}}\n{"@timestamp":"%b.%09dZ","event":{"sequence":%d},"message":"%b'
                                         + tail.replace(b"%", b"%%"))
            if copy_as_is(line) is None:
                line = escape_log(line)
            append(fmt % (at, second, ns, at, line) if ids else fmt % (second, ns, at, line))
        return out


def container_fields(*, container_id: str, container_name: str, image: str, labels: Mapping[str, str],
                     host_name: str, agent_name: str, agent_version: str,
                     attrs: Mapping[str, str] | None = None) -> dict:
    """The static part of a container's documents (ECS names; Elastic's plugin's fields plus ``stream``,
    which is per line, and the ``labels``/``env`` attributes as ECS ``labels``)."""
    name, tag, digest = split_image(image)
    image_fields: dict = {"name": name}
    if tag:
        image_fields["tag"] = tag
    if digest:
        image_fields["hash"] = {"all": [digest]}
    container: dict = {"id": container_id, "name": container_name.lstrip("/"), "image": image_fields}
    if labels:
        container["labels"] = dedot(labels)
    fields = {"container": container, "host": {"name": host_name},
              "agent": {"name": agent_name, "type": "logbridge", "version": agent_version}}
    if attrs:
        fields["labels"] = dedot(attrs)
    return fields


def format_fields(fields: dict) -> dict[str, str]:
    """The values ``%{[field]}`` can name in index and pipeline (driver/outputs/elasticsearch/formats.py)."""
    c = fields["container"]
    return {"agent.name": fields["agent"]["name"], "agent.version": fields["agent"]["version"],
            "host.name": fields["host"]["name"], "container.id": c["id"], "container.name": c["name"],
            "container.image.name": c["image"]["name"], "container.image.tag": c["image"].get("tag", "")}


# ---- answers ------------------------------------------------------------------------------------------------
INDEXED, DUPLICATE, RETRY, FINAL = "indexed", "duplicate", "retry", "final"
_NO_ERRORS = re.compile(rb'\s*\{\s*"errors"\s*:\s*false\s*[,}]')


class BadResponse(ValueError):
    """A 2xx answer that is not a bulk response for this request (a proxy's page, a truncated body)."""


@dataclass(frozen=True)
class ItemResult:
    verdict: str  # INDEXED, DUPLICATE, RETRY or FINAL
    status: int
    error_type: str = ""
    reason: str = ""


OK_ITEM = ItemResult(INDEXED, 201)


def item_verdict(status: int, error: Mapping | None) -> ItemResult:
    """One item's fate: 2xx indexed; 409 on ``create``: already there (a resend), a duplicate, not an error; 400
    with a document error: final, dropped by ``error.type``; anything else is retried (429 pressure, 5xx shard
    failures, 403 ``cluster_block_exception`` of a read-only index, 404 of a missing index...)."""
    error_type = str(error.get("type", "")) if isinstance(error, Mapping) else ""
    reason = str(error.get("reason", "")) if isinstance(error, Mapping) else ""
    if 200 <= status < 300:
        return ItemResult(INDEXED, status)
    if status == 409:
        return ItemResult(DUPLICATE, status, error_type, reason)
    if status == 400 and error_type in DOCUMENT_ERRORS:
        return ItemResult(FINAL, status, error_type, reason)
    return ItemResult(RETRY, status, error_type or f"status_{status}", reason)


def parse_bulk_response(body: bytes, items: int) -> list[ItemResult] | None:
    """The result of each of the ``items`` documents sent, in order; None when ``errors`` is false (every item
    was indexed: the items are not even parsed). BadResponse when the body does not answer this request."""
    if _NO_ERRORS.match(body):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the stack (make fuzz)
        raise BadResponse(f"not JSON: {body[:80]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), bool):
        raise BadResponse(f"no errors flag: {body[:80]!r}")
    if not doc["errors"]:
        return None
    got = doc.get("items")
    if not isinstance(got, list) or len(got) != items:
        raise BadResponse(f"{len(got) if isinstance(got, list) else 'no'} items for {items} documents")
    out = []
    for item in got:
        if not isinstance(item, dict) or len(item) != 1:
            raise BadResponse(f"an item is not a one-key object: {str(item)[:80]}")
        (result,) = item.values()
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            raise BadResponse(f"an item has no status: {str(item)[:80]}")
        out.append(item_verdict(result["status"], result.get("error")))
    return out
