"""Loki's ``logproto.PushRequest`` as protobuf-library message classes, built from a descriptor written here from
the field numbers of grafana/loki ``pkg/push/push.proto`` (no generated file, no protoc run).

Two variants: ``strict`` declares ``line`` as ``string`` like push.proto (the protobuf library then insists on
UTF-8), ``loki`` declares it ``bytes``, which is wire-identical and reads a line the way Loki's gogo decoder does:
the bytes as they are.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "") -> F:
    f = F(name=name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    return f


def _classes(package: str, line_type: int):
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(name=f"{package}/push.proto", package=package, syntax="proto3",
                                            dependency=["google/protobuf/timestamp.proto"])
    msg = fd.message_type.add(name="LabelPairAdapter")
    msg.field.extend([_field("name", 1, F.TYPE_STRING), _field("value", 2, F.TYPE_STRING)])
    msg = fd.message_type.add(name="EntryAdapter")
    msg.field.extend([
        _field("timestamp", 1, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
        _field("line", 2, line_type),
        _field("structuredMetadata", 3, F.TYPE_MESSAGE, repeated=True, type_name=f".{package}.LabelPairAdapter"),
        _field("parsed", 4, F.TYPE_MESSAGE, repeated=True, type_name=f".{package}.LabelPairAdapter"),
    ])
    msg = fd.message_type.add(name="StreamAdapter")
    msg.field.extend([
        _field("labels", 1, F.TYPE_STRING),
        _field("entries", 2, F.TYPE_MESSAGE, repeated=True, type_name=f".{package}.EntryAdapter"),
        _field("hash", 3, F.TYPE_UINT64),
    ])
    msg = fd.message_type.add(name="PushRequest")
    msg.field.extend([
        _field("streams", 1, F.TYPE_MESSAGE, repeated=True, type_name=f".{package}.StreamAdapter"),
        _field("format", 2, F.TYPE_STRING),
    ])
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in ("PushRequest", "StreamAdapter", "EntryAdapter", "LabelPairAdapter")}


strict = _classes("logproto", F.TYPE_STRING)
loki = _classes("logproto", F.TYPE_BYTES)
PushRequest = strict["PushRequest"]
LokiPushRequest = loki["PushRequest"]
