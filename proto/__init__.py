"""dockerd's LogEntry protobuf; entry_pb2 is generated from entry.proto by `make proto`."""
