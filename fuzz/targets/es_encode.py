"""The Elasticsearch document encoder: driver/outputs/elasticsearch/_encode.c, differential and byte-exact.

Three ways in, picked by the first byte (modulo 3):
- 0: a container's ``DocumentTemplate`` (fuzzed index and pipeline formats, fields, ids on or off) over a
  batch of entries: ``documents`` (C for runs of plain lines, Python for the rest) equals ``documents_pure`` as a
  whole; then every document is one action line and one source line, each parsed by json.loads (a repeated key is
  a finding: Elasticsearch's parser refuses one), holding exactly the entry's target, pipeline, ``_id``,
  ``@timestamp`` (all nine digits), ``event.sequence``, message (invalid UTF-8 as one U+FFFD per byte, as dockerd
  writes it), stream and the container's fields;
- 1: ``encode_documents`` called directly with any arguments (start out of range, offsets of another length,
  any head and tail, any second range) against the rule its comment states, written here again in Python: the
  same documents and the same stop, or the same kind of error;
- 2: ``DocumentTemplate.frames_documents`` (``encode_frames``: C straight from a journal's frames, without the
  GIL) over journal bytes with garbage, chunks, any times and a torn tail: it takes a prefix of whole frames, every
  ordinary frame up to the first one the decoded way must take, and its body, cut at each document's end, is what
  FrameDecoder, merge_partials_at and ``documents_pure`` make of that prefix.
"""

from __future__ import annotations

import codecs
import datetime
import json

import atheris

from driver.frames import MAX_FRAME, FrameDecoder, encode_entry
from driver.outputs.elasticsearch import codec, formats
from driver.partials import merge_partials_at
from driver.speedups import encode_es_documents

from .. import inputs
from .common import Finding, outcome, same

MAX_LEN = 1 << 14
NS = inputs.NS
HOUR = 3600 * NS
INT64_MAX = inputs.INT64_MAX
# Around an hour and a day boundary (2025-12-02T00:00:00Z), the epoch and the end of int64.
BASES = [1_764_633_600 * NS, 1_764_633_600 * NS - 1, 0, INT64_MAX - HOUR, 1_750_000_000 * NS + 1_800 * NS]
INDEXES = ["logs-docker-default", "logs-%{+yyyy.MM.dd}", "logs-app-%{+yyyy.MM.dd.HH}", "metrics-x-y",
           "docker-%{[container.name]}-%{+yy_MM-dd}", "%{[agent.name]}-%{[agent.version]}-%{+HH}",
           "logs-%{[container.image.tag]}-prod", "100%-%{[host.name]}"]
PIPELINES = [None, None, "p", "p-%{+yyyy.MM}", "%{[container.image.name]}", "%H%%"]
IMAGES = ["app:1", "registry:5000/team/app:2.1@sha256:" + "ab" * 32, "busybox", "a@b", ""]
ERRORS = (TypeError, ValueError, IndexError, AttributeError, OverflowError, UnicodeError)
# json-file's escaper copies these bytes as they are (driver/jsonfile.py _COPY_AS_IS): the lines C takes.
PLAIN = bytes(b for b in range(0x20, 0x80) if b not in b'"&<>\\')
MID, SEQ, MSG = b'}}\n{"@timestamp":"', b'Z","event":{"sequence":', b'},"message":"'


def _one_rune_error_per_byte(exc: UnicodeError) -> tuple[str, int]:
    # Go's utf8 decoder, which dockerd's json-file escaping follows: each invalid byte is one U+FFFD.
    return "\ufffd", exc.start + 1


codecs.register_error("fuzz.es-rune-error", _one_rune_error_per_byte)


def es_time(fdp, odd: bool) -> int:
    """Mostly times within hours of each other (runs C takes whole), sometimes any the decoder can make."""
    if fdp.ConsumeIntInRange(0, 3):
        return fdp.PickValueInList(BASES) + fdp.ConsumeIntInRange(-2 * HOUR, 2 * HOUR)
    return inputs.time_nano(fdp, odd)


def es_line(fdp, max_line: int) -> bytes:
    """Any bytes, or a plain line (what C copies) with now and then one byte it leaves to Python."""
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, max_line))
    if fdp.ConsumeIntInRange(0, 2) == 0:
        return raw
    plain = bytes(PLAIN[b % len(PLAIN)] for b in raw)
    if plain and fdp.ConsumeIntInRange(0, 3) == 0:
        at = fdp.ConsumeIntInRange(0, len(plain) - 1)
        plain = plain[:at] + fdp.PickValueInList([b'"', b"\\", b"<", b"\n", b"\x00", b"\xe2\x80\xa8", b"\xff",
                                                  "é".encode()]) + plain[at + 1:]
    return plain


def offsets_for(fdp, n: int, odd: bool) -> list:
    at = fdp.PickValueInList([0, 1, 1 << 40, INT64_MAX - 1_000_000])
    out = []
    for _ in range(n):
        at += fdp.ConsumeIntInRange(0, 20_000)
        out.append(at)
    if odd and out and fdp.ConsumeIntInRange(0, 7) == 0:  # offsets the journal never gives: C declines them
        out[fdp.ConsumeIntInRange(0, n - 1)] = fdp.PickValueInList([-1, -(2**63), 2**63, 2**64 + 5, True, 1.5])
    return out


def text(fdp, n: int = 12) -> str:
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, n))


def fmt(fdp, choices: list) -> str | None:
    return fdp.PickValueInList(choices) if fdp.ConsumeIntInRange(0, 5) else text(fdp, 24)


def template(fdp) -> tuple[codec.DocumentTemplate, tuple]:
    """A container's template, and what makes it (to build a second, independent one)."""
    container_id = fdp.ConsumeBytes(32).hex().ljust(64, "0")
    fields = codec.container_fields(
        container_id=container_id, container_name="/" + text(fdp), image=fmt(fdp, IMAGES),
        labels={text(fdp): text(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))}, host_name=text(fdp) or "h",
        agent_name=text(fdp) or "a", agent_version="0.1.0",
        attrs={text(fdp): text(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2))})
    values = codec.format_fields(fields)
    try:
        index = formats.parse(fmt(fdp, INDEXES)).render(values, lower=True)
    except formats.FormatError:
        index = formats.parse("logs-docker-default").render(values, lower=True)
    try:
        pipeline_text = fmt(fdp, PIPELINES)
        pipeline = formats.parse(pipeline_text).render(values) if pipeline_text is not None else None
    except formats.FormatError:
        pipeline = None
    prefix = f"{fdp.ConsumeBytes(8).hex():0>16}-{container_id}-" if fdp.ConsumeBool() else None
    made = (index.pattern, index.hourly, pipeline.pattern if pipeline else None,
            pipeline.hourly if pipeline else False, fields, prefix)
    return make(made), made


def make(made: tuple) -> codec.DocumentTemplate:
    index, hourly, pipeline, p_hourly, fields, prefix = made
    return codec.DocumentTemplate(formats.DatedName(index, hourly),
                                  formats.DatedName(pipeline, p_hourly) if pipeline is not None else None,
                                  json.loads(json.dumps(fields)), prefix)


def strict_json(raw: bytes) -> object:
    def no_repeats(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise Finding(f"a repeated key (Elasticsearch refuses the document): {raw[:300]!r}")
        return dict(pairs)

    try:
        return json.loads(raw, object_pairs_hook=no_repeats)
    except ValueError as exc:
        raise Finding(f"not JSON ({exc}): {raw[:300]!r}") from None


def rfc3339_nano(time_nano: int) -> str:
    sec, ns = divmod(time_nano, NS)
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=sec)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}."
            f"{ns:09d}Z")


def decoder_made(e: object, at: object) -> bool:
    """An entry and offset of the shapes the frame decoder and the journal give (the JSON check's domain)."""
    return (type(e) is tuple and len(e) >= 3 and type(e[0]) is str and type(e[1]) is int and type(e[2]) is bytes
            and inputs.INT64_MIN <= e[1] <= INT64_MAX and type(at) is int)


def check_document(doc: bytes, e: tuple, at: int, made: tuple) -> None:
    index_pattern, hourly, pipeline_pattern, p_hourly, fields, prefix = made
    lines = doc.split(b"\n")
    if len(lines) != 3 or lines[2]:
        raise Finding(f"not an action line and a source line, each ending in \\n: {doc[:300]!r}")
    action, source = strict_json(lines[0]), strict_json(lines[1])
    index = formats.DatedName(index_pattern, hourly).at(e[1])
    meta = {"_index": index}
    pipeline = formats.DatedName(pipeline_pattern, p_hourly).at(e[1]) if pipeline_pattern is not None else None
    if pipeline:
        meta["pipeline"] = pipeline
    if prefix is not None:
        meta["_id"] = f"{prefix}{at}"
    same("action", action, {"create": meta})
    want = {"@timestamp": rfc3339_nano(e[1]), "event": {"sequence": at},
            "message": e[2].decode("utf-8", "fuzz.es-rune-error"), "stream": e[0], **fields}
    ds = codec.data_stream_fields(index)
    if ds is not None:
        want["data_stream"] = ds
    same("source", source, want)


def check_template(fdp) -> None:
    t, made = template(fdp)
    odd = fdp.ConsumeIntInRange(0, 3) == 0
    batch = inputs.entries(fdp, odd=odd, max_entries=32, time_of=es_time, line_of=es_line)
    offsets = offsets_for(fdp, len(batch), odd)
    if odd and batch and fdp.ConsumeIntInRange(0, 7) == 0:
        offsets = offsets[:-1]  # one short (an empty batch has nothing to mismatch)
    want = outcome(make(made).documents_pure, batch, offsets)
    got = outcome(t.documents, batch, offsets)
    if want[0] == "raised":
        if got[0] != "raised" or not issubclass(got[1], ERRORS) or not issubclass(want[1], ERRORS):
            raise Finding(f"the reference raised {want!r}, the dispatcher gave {got!r:.300}")
        return  # an entry or offsets the sink never hands over: neither path may make documents of them
    same("documents", got, want)
    for doc, e, at in zip(want[1], batch, offsets, strict=True):
        if decoder_made(e, at):
            check_document(doc, e, at, made)


def reference_run(entries, offsets, start, head, with_ids, tail, source, sec_lo, sec_hi):
    """encode_documents as its comment states it (driver/outputs/elasticsearch/_encode.c), in Python."""
    if type(entries) is not list or type(offsets) is not list:
        raise TypeError("entries and offsets must be lists")
    if len(offsets) != len(entries) or not 0 <= start <= len(entries):
        raise ValueError("offsets must match entries and start must be within them")
    docs = []
    i = start
    for i in range(start, len(entries) + 1):
        if i == len(entries):
            break
        e, at = entries[i], offsets[i]
        if not (isinstance(e, tuple) and len(e) >= 3 and isinstance(e[0], str) and e[0] == source
                and isinstance(e[1], int) and isinstance(e[2], bytes) and 0 <= e[1] <= INT64_MAX):
            break
        sec, ns = divmod(e[1], NS)
        if not (sec_lo <= sec < sec_hi and isinstance(at, int) and 0 <= at <= INT64_MAX
                and all(b in PLAIN for b in e[2])):
            break
        docs.append(head + (b'%d"' % at if with_ids else b"") + MID + rfc3339_nano(e[1])[:-1].encode() + SEQ
                    + b"%d" % at + MSG + e[2] + tail)
    return docs, i


def check_direct(fdp) -> None:
    batch = inputs.entries(fdp, odd=fdp.ConsumeBool(), time_of=es_time, line_of=es_line)
    offsets = offsets_for(fdp, len(batch), True)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        offsets = offsets + [0] if fdp.ConsumeBool() or not offsets else offsets[:-1]
    start = fdp.ConsumeIntInRange(-2, len(batch) + 2)
    head, tail = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80)), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
    with_ids, source = fdp.ConsumeBool(), fdp.PickValueInList(inputs.SOURCES)
    first = batch[0] if batch and type(batch[0]) is tuple and len(batch[0]) > 1 else None
    if first is not None and type(first[0]) is str and fdp.ConsumeIntInRange(0, 3):
        source = first[0]  # as the dispatcher passes it
    if first is not None and type(first[1]) is int and fdp.ConsumeIntInRange(0, 3):
        hour = first[1] // NS // 3600 * 3600  # the dispatcher's range: the first entry's hour
        sec_lo, sec_hi = hour, hour + 3600
    else:
        sec_lo, sec_hi = sorted(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1) for _ in range(2))
    args = (batch, offsets, start, head, with_ids, tail, source, sec_lo, sec_hi)
    got, want = outcome(encode_es_documents, *args), outcome(reference_run, *args)
    if got[0] == want[0] == "raised":
        same("error", got[1], want[1])
    else:
        same("encode_documents", got, want)


def ordinary_frames(stream: bytes) -> list[tuple[int, bool]]:
    """(start, canonical) of each frame before the first torn, garbled, chunked or pre-1970 one; canonical: the
    bytes encode_entry writes for its entry (what dockerd writes), which C must take; a frame written another way
    that the decoder still reads (a garbage piece that happens to parse) C may leave to the decoded way."""
    out, at = [], 0
    while at + 4 <= len(stream):
        length = int.from_bytes(stream[at:at + 4], "big")
        if not 0 < length <= MAX_FRAME or at + 4 + length > len(stream):
            break
        frame = stream[at:at + 4 + length]
        entries, _ = FrameDecoder(pure=True).decode(frame, final=True)
        if len(entries) != 1 or entries[0][3] or entries[0][1] < 0:
            break
        out.append((at, encode_entry(entries[0]) == frame))
        at += 4 + length
    out.append((at, False))  # the end of the ordinary frames
    return out


def check_frames(fdp) -> None:
    t, made = template(fdp)
    def frame_time(f, odd: bool) -> int:  # a frame holds an int64 time
        return max(min(es_time(f, odd), INT64_MAX), -INT64_MAX - 1)

    stream = inputs.journal(fdp, lambda f: inputs.entry(f, odd=False, time_of=frame_time, line_of=es_line))
    base = fdp.PickValueInList([0, 1, 1 << 40, INT64_MAX - (1 << 20)])
    got = outcome(t.frames_documents, stream, base)
    if got[0] == "raised":
        raise Finding(f"frames_documents raised {got!r:.300} on journal bytes")
    if got[1] is None:
        return  # no C module: the sink decodes
    used, docs = got[1]
    frames = ordinary_frames(stream)
    stops = [at for at, _ in frames]
    if used not in stops:
        raise Finding(f"frames_documents took {used} of {len(stream)} bytes: not a boundary of its ordinary "
                      f"frames {stops[:20]}")
    if frames[stops.index(used)][1]:
        raise Finding(f"frames_documents stopped at {used}, before a frame dockerd writes that it must take")
    offsets: list[int] = []
    entries, _ = FrameDecoder(pure=True).decode(stream[:used], final=True, offsets=offsets)
    entries, offsets = merge_partials_at(entries, [base + at for at in offsets], 1 << 20)
    want = make(made).documents_pure(entries, offsets)
    same("frames_documents body", docs.body, b"".join(want))
    same("frames_documents documents", list(docs), want)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    (check_template, check_direct, check_frames)[data[0] % 3](fdp)


def seeds() -> dict[str, bytes]:
    return {}
