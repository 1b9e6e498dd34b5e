"""The Elasticsearch codec on bytes: documents decoded with json, format strings, ids, bulk answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver.outputs.elasticsearch import codec, formats
from driver.outputs.elasticsearch.codec import DocumentTemplate, container_fields, parse_bulk_response, split_image

T0 = 1_764_633_600_123_456_789  # 2025-12-02T00:00:00.123456789Z
DAY = 86_400 * 10**9
CID = "c" * 64


def fields(**kw) -> dict:
    args = dict(container_id=CID, container_name="/web", image="registry:5000/team/app:1.2", labels={"a.b": "1"},
                host_name="node1", agent_name="node1", agent_version="0.1.0")
    args.update(kw)
    return container_fields(**args)


def template(index: str = "logs-docker-%{[agent.version]}-%{+yyyy.MM.dd}", pipeline: str | None = None,
             ids: bool = True, **kw) -> DocumentTemplate:
    f = fields(**kw)
    values = codec.format_fields(f)
    return DocumentTemplate(formats.parse(index).render(values, lower=True),
                            formats.parse(pipeline).render(values) if pipeline else None, f,
                            f"0123456789abcdef-{CID}-" if ids else None)


def decode(doc: bytes) -> tuple[dict, dict]:
    assert doc.endswith(b"\n") and doc.count(b"\n") == 2
    action, source = doc.split(b"\n")[:2]
    return json.loads(action), json.loads(source)


def test_a_document_is_an_action_line_and_a_source_line_with_the_ecs_fields():
    (doc,) = template().documents([("stdout", T0, b"hello world", False, False, "", 0)], [4096])
    action, source = decode(doc)
    assert action == {"create": {"_index": "logs-docker-0.1.0-2025.12.02",
                                 "_id": f"0123456789abcdef-{CID}-4096"}}
    assert source == {
        "@timestamp": "2025-12-02T00:00:00.123456789Z", "event": {"sequence": 4096}, "message": "hello world",
        "stream": "stdout",
        "container": {"id": CID, "name": "web", "image": {"name": "registry:5000/team/app", "tag": "1.2"},
                      "labels": {"a_b": "1"}},
        "host": {"name": "node1"}, "agent": {"name": "node1", "type": "logbridge", "version": "0.1.0"},
    }


def test_messages_are_escaped_as_valid_json_and_kept_as_written():
    lines = [b'say "hi"\\ <b>&', b"tab\there\r", b"\x00\x1f", "caf\u00e9 \u2028".encode(), b"bad \xff\xfe utf8",
             b"  padded  ", b""]
    docs = template().documents([("stderr", T0 + i, line, False, False, "", 0) for i, line in enumerate(lines)],
                                list(range(len(lines))))
    got = [decode(d)[1] for d in docs]
    assert [g["message"] for g in got] == ['say "hi"\\ <b>&', "tab\there\r", "\x00\x1f", "caf\u00e9 \u2028",
                                           "bad \ufffd\ufffd utf8", "  padded  ", ""]  # not trimmed
    assert {g["stream"] for g in got} == {"stderr"}


def test_ids_depend_only_on_the_entry_offset_and_can_be_left_to_elasticsearch():
    entries = [("stdout", T0, b"x", False, False, "", 0)]
    a, b = template().documents(entries, [77])[0], template().documents(entries * 2, [77, 99])[0]
    assert a == b  # the same entry in another batch: the same document, the same id
    (doc,) = template(ids=False).documents(entries, [77])
    action, source = decode(doc)
    assert action == {"create": {"_index": "logs-docker-0.1.0-2025.12.02"}} and source["event"]["sequence"] == 77


def test_the_target_follows_each_entrys_utc_date_and_the_pipeline_goes_in_the_action():
    t = template(index="app-%{[container.name]}-%{+yyyy.MM.dd}", pipeline="p-%{[agent.version]}")
    docs = t.documents([("stdout", T0, b"a", False, False, "", 0), ("stdout", T0 + DAY, b"b", False, False, "", 0),
                        ("stdout", T0 - 10**9, b"c", False, False, "", 0)], [0, 10, 20])
    assert [decode(d)[0]["create"]["_index"] for d in docs] == ["app-web-2025.12.02", "app-web-2025.12.03",
                                                               "app-web-2025.12.01"]
    assert {decode(d)[0]["create"]["pipeline"] for d in docs} == {"p-0.1.0"}


def test_data_stream_fields_only_for_a_type_dataset_namespace_name():
    (doc,) = template(index="logs-docker-default").documents([("stdout", T0, b"a", False, False, "", 0)], [0])
    assert decode(doc)[1]["data_stream"] == {"type": "logs", "dataset": "docker", "namespace": "default"}
    (doc,) = template().documents([("stdout", T0, b"a", False, False, "", 0)], [0])  # the default: 5 parts
    assert "data_stream" not in decode(doc)[1]


@pytest.mark.parametrize("image, expected", [
    ("nginx", ("nginx", None, None)),
    ("nginx:1.25", ("nginx", "1.25", None)),
    ("registry:5000/team/app", ("registry:5000/team/app", None, None)),  # Elastic's plugin: name "registry"
    ("registry:5000/team/app:2", ("registry:5000/team/app", "2", None)),
    ("app@sha256:abc", ("app", None, "sha256:abc")),
    ("r:1/app:3@sha256:abc", ("r:1/app", "3", "sha256:abc")),
])
def test_image_name_and_tag_split_at_the_last_colon_after_the_last_slash(image, expected):
    assert split_image(image) == expected


def test_image_digest_and_labels_attributes():
    f = fields(image="app@sha256:abc", labels={}, attrs={"com.example.team": "x", "env": "prod"})
    assert f["container"]["image"] == {"name": "app", "hash": {"all": ["sha256:abc"]}}
    assert "labels" not in f["container"] and f["labels"] == {"com_example_team": "x", "env": "prod"}


@pytest.mark.parametrize("text, error", [
    ("x-%{[message]}", r"%\{\[message\]\} is not supported"),
    ("x-%{+yyyy.MM.dd HH:mm}", "a date takes only"),
    ("x-%{agent.version}", "is not supported"),
    ("x-%{+yyyy", "unclosed"),
])
def test_format_strings_other_than_dates_and_container_fields_are_refused(text, error):
    with pytest.raises(formats.FormatError, match=error):
        formats.parse(text)


def test_format_strings_render_dates_hourly_and_fields_once():
    f = formats.parse("%{[container.image.name]}_%{+yy-MM-dd_HH}")
    name = f.render({"container.image.name": "App"}, lower=True)
    assert name.at(T0) == "app_25-12-02_00" and name.at(T0 + 3600 * 10**9) == "app_25-12-02_01"
    with pytest.raises(formats.FormatError, match="no value"):
        formats.parse("%{[container.image.tag]}").render({"container.image.tag": ""})
    assert formats.parse("100%-%{+yyyy}").render({}).at(T0) == "100%-2025"


def test_index_names_elasticsearch_refuses():
    assert formats.index_name_error("logs-docker-x") is None
    assert "':'" in formats.index_name_error("a:b") and "'_'" in formats.index_name_error("_x")
    assert "upper" in formats.index_name_error("Logs")


# ---- answers -------------------------------------------------------------------------------------------------
def _answer(*items) -> bytes:
    return json.dumps({"errors": True, "items": [{"create": i} for i in items]}).encode()


def test_a_bulk_answer_without_errors_is_not_parsed_further():
    body = b'{"errors":false,"items":[' + b",".join([b'{"create":{"status":201}}'] * 3) + b"]}"
    assert parse_bulk_response(body, 3) is None
    assert parse_bulk_response(b'{"errors":false,"items":[{"create":{"status":201}}]', 1) is None  # not looked at


def test_item_verdicts_follow_the_status_rules():
    body = _answer({"status": 201}, {"status": 409, "error": {"type": "version_conflict_engine_exception"}},
                   {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad field"}},
                   {"status": 400, "error": {"type": "document_parsing_exception"}},
                   {"status": 429, "error": {"type": "es_rejected_execution_exception"}},
                   {"status": 403, "error": {"type": "cluster_block_exception"}},
                   {"status": 503, "error": {"type": "unavailable_shards_exception"}},
                   {"status": 400, "error": {"type": "invalid_index_name_exception"}},
                   {"status": 404})
    got = parse_bulk_response(body, 9)
    assert [g.verdict for g in got] == [codec.INDEXED, codec.DUPLICATE, codec.FINAL, codec.FINAL, codec.RETRY,
                                        codec.RETRY, codec.RETRY, codec.RETRY, codec.RETRY]
    assert got[2].error_type == "mapper_parsing_exception" and got[2].reason == "bad field"
    assert got[8].error_type == "status_404"


@pytest.mark.parametrize("body, items", [(b"<html>proxy</html>", 1), (b'{"took":3}', 1), (_answer({"status": 201}), 2),
                                         (b'{"errors":true,"items":[{"create":{}}]}', 1)])
def test_an_answer_that_does_not_match_the_request_is_a_bad_response(body, items):
    with pytest.raises(codec.BadResponse):
        parse_bulk_response(body, items)


def test_percent_signs_in_names_fields_and_messages_are_kept_as_they_are():
    t = template(pipeline="p%d-%{[agent.version]}", container_name="/w%s", labels={"x": "100%"})
    (doc,) = t.documents([("stdout", T0, b"50% done %s %d", False, False, "", 0)], [3])
    action, source = decode(doc)
    assert action["create"]["pipeline"] == "p%d-0.1.0" and action["create"]["_id"].endswith("-3")
    assert source["message"] == "50% done %s %d" and source["container"]["name"] == "w%s"
    assert source["container"]["labels"] == {"x": "100%"}


# ---- Documents: cutting a part's body at a request's end ---------------------------------------------------------
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30), st.data())
def test_documents_cut_where_one_by_one_would(docs, data):
    """What a request takes of a part larger than its room (a run of documents, or the ones a retry left) is what
    taking them one by one gives, and the body cut out is theirs, in order."""
    d = codec.Documents.of(docs)
    indexes = sorted(data.draw(st.sets(st.integers(0, len(docs) - 1), min_size=1)))
    if data.draw(st.booleans()):  # a run, as when a whole part is cut
        first = data.draw(st.integers(0, len(docs) - 1))
        indexes = list(range(first, data.draw(st.integers(first, len(docs) - 1)) + 1))
    at = data.draw(st.integers(0, len(indexes) - 1))
    room = data.draw(st.integers(-5, 400))
    one_by_one, left = 0, room
    for i in indexes[at:]:
        left -= len(docs[i])
        if left < 0:
            break
        one_by_one += 1
    assert d.fitting(indexes, at, room) == one_by_one
    assert d.span_size(indexes) == sum(len(docs[i]) for i in indexes)
    assert d.joined(indexes) == b"".join(docs[i] for i in indexes)


@pytest.mark.parametrize("pure", [False, True])
def test_an_index_name_holding_nul_still_makes_documents(pure):
    """es-index may hold NUL (dockerd passes any JSON string; Elasticsearch's name rules do not name it) and
    strftime refuses a pattern with one: the batch's documents were never made and the container's output
    stalled. Now the name keeps the NUL and Elasticsearch answers for it (a 400 per item: counted as dropped)."""
    t = template("logs-a\x00b-%{+yyyy.MM.dd}")
    make = t.documents_pure if pure else t.documents
    docs = make([("stdout", 1_764_633_600 * 10**9, b"hello", False, False, "", 0)], [7])
    action, source = decode(docs[0])
    assert action["create"]["_index"] == "logs-a\x00b-2025.12.02" and source["message"] == "hello"
