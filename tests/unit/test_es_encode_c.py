"""The C document encoder (driver/outputs/elasticsearch/_encode.c) against its Python reference
(DocumentTemplate.documents_pure): the same bytes for every batch, whatever part of it C takes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import speedups
from driver.outputs.elasticsearch import codec, formats

pytestmark = pytest.mark.skipif(speedups.encode_es_documents is None,
                                reason="driver/outputs/elasticsearch/_encode.c not built")
HOUR = 3600 * 10**9
T0 = 1_764_633_600 * 10**9 - 2 * HOUR


def template(ids: bool, index: str = "logs-%{+yyyy.MM.dd.HH}", pipeline: str | None = "p%") -> codec.DocumentTemplate:
    f = codec.container_fields(container_id="c" * 64, container_name="/w", image="app:1", labels={"a.b": "%s"},
                               host_name="h", agent_name="h", agent_version="0.1.0")
    values = codec.format_fields(f)
    return codec.DocumentTemplate(formats.parse(index).render(values, lower=True),
                                  formats.parse(pipeline).render(values) if pipeline else None, f,
                                  "0123456789abcdef-" + "c" * 64 + "-" if ids else None)


line = st.one_of(st.binary(max_size=200), st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7f),
                                                   max_size=200).map(str.encode))
entry = st.tuples(st.sampled_from(["stdout", "stderr", "we\"ird"]), st.integers(0, 6 * HOUR).map(lambda t: T0 + t),
                  line, st.booleans(), st.booleans(), st.just(""), st.just(0))


@given(st.lists(entry, max_size=40), st.booleans(), st.integers(0, 1 << 40))
def test_c_matches_the_reference(entries, ids, base):
    t = template(ids)
    offsets = [base + 17 * i for i in range(len(entries))]
    assert t.documents(entries, offsets) == t.documents_pure(entries, offsets)


def test_c_takes_plain_lines_and_the_documents_decode():
    t = template(True, index="logs-docker-default", pipeline=None)
    entries = [("stdout", T0 + i, b"line %d" % i, False, False, "", 0) for i in range(1000)]
    docs, taken = speedups.encode_es_documents(entries, list(range(1000)), 0, *t._parts(T0, "stdout")[:1], True,
                                               t._parts(T0, "stdout")[1], "stdout", T0 // 10**9 // 3600 * 3600,
                                               T0 // 10**9 // 3600 * 3600 + 3600)
    assert taken == 1000 and docs == t.documents_pure(entries, list(range(1000)))
    action, source = docs[7].split(b"\n")[:2]
    assert json.loads(action)["create"]["_id"].endswith("-7") and json.loads(source)["message"] == "line 7"


@pytest.mark.parametrize("bad", [
    [["stdout", 1, b"list, not tuple"]], [("stdout", -1, b"negative time")], [("stdout", 2**64, b"huge time")],
    [("stdout", 1, "str line")], [("stdout", 1)], [(b"stdout", 1, b"bytes source")],
])
def test_entries_the_decoder_would_not_make_are_left_to_python(bad):
    docs, taken = speedups.encode_es_documents(bad, [0] * len(bad), 0, b"{", True, b"}\n", "stdout", 0, 1 << 40)
    assert (docs, taken) == ([], 0)
