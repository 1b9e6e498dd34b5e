"""The seed corpus: ``python -m fuzz.seeds`` writes fuzz/corpus/<target>/ from real inputs (dockerd's FIFO
captures in tests/unit/data/fifo and /work/shared/docs/samples, dockerd's json-file lines, the plugin's own forward
requests, Fluent Bit and Fluentd style replies). Targets whose input is carved by FuzzedDataProvider start from
inputs a fuzz run found and `make fuzz-merge` kept (seeds cannot be written for them by hand)."""

from __future__ import annotations

import gzip
import hashlib
import importlib
from pathlib import Path

from driver.outputs.forward import codec
from driver.outputs.forward.codec import RecordEncoder

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "fuzz" / "corpus"
FIFO_DIRS = [REPO / "tests" / "unit" / "data" / "fifo", REPO.parent.parent / "shared" / "docs" / "samples"]
JSONFILE = REPO / "tests" / "unit" / "data" / "jsonfile"


def fifo_samples() -> dict[str, bytes]:
    """dockerd's FIFO bytes: the unit tests' captures, and the shared samples where this checkout can see them."""
    out = {}
    for base in FIFO_DIRS:
        for path in sorted(base.glob("**/*.bin")) if base.is_dir() else []:
            if path.stat().st_size <= 1 << 16:
                out[path.stem] = path.read_bytes()
    return out


def jsonfile_lines() -> dict[str, list[bytes]]:
    out = {}
    for path in sorted(JSONFILE.glob("*.log*")):
        raw = path.read_bytes()
        out[path.name] = (gzip.decompress(raw) if path.suffix == ".gz" else raw).splitlines(keepends=True)
    return out


def forward_requests() -> dict[str, tuple[bytes, bytes]]:
    """(PackedForward entries, the whole request) as the forward sink sends them."""
    entries = [("stdout", 1_764_165_000_123_456_789, b"hello", False, False, "", 0),
               ("stderr", 1_764_165_001_000_000_000, b"caf\xc3\xa9 \xff", False, False, "", 0),
               ("stdout", 1_764_165_002_000_000_001, b"x" * 300, True, False, "p1", 1),
               ("stdout", 1_764_165_002_000_000_002, b"end", True, True, "p1", 2)]
    static = {"container_id": "c" * 64, "container_name": "/web", "com.example.team": "t"}
    out = {}
    for time_format in ("event_time", "integer"):
        packed = b"".join(RecordEncoder(static, time_format=time_format).encode_batch(entries))
        out[time_format] = (packed, codec.packed_forward("docker.web", packed, len(entries), chunk_id="Y2h1bmsx"))
    packed = out["event_time"][0]
    out["gzip"] = (packed, codec.packed_forward("t", packed, 4, chunk_id="Y2h1bmsy", compress=True))
    out["message"] = (packed, codec.encode_message("t", 1_764_165_000, {"log": "m"}, {"chunk": "Y2h1bmsz"}))
    out["forward"] = (packed, codec.encode_forward("t", [(codec.EventTime(1, 2), {"log": b"f"})]))
    return out


def forward_replies() -> dict[str, bytes]:
    return {
        "acks": codec.build_ack("Y2h1bmsx") + codec.build_ack(b"Y2h1bmsy"),
        "helo-fluent-bit": codec.build_helo(b"n" * 16, b"", style="fluent-bit"),
        "helo-fluentd": codec.build_helo(b"n" * 16, b"a" * 16, style="fluentd", keepalive=False),
        "pong-ok": codec.build_pong(ok=True, hostname="srv", digest="d" * 128),
        "pong-refused": codec.build_pong(ok=False, reason="shared_key mismatch"),
    }


def write_corpus() -> dict[str, int]:
    from fuzz.targets import TARGETS

    written = {}
    for name in TARGETS:
        seeds = importlib.import_module(f"fuzz.targets.{name}").seeds()
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for label, data in seeds.items():
            (folder / f"seed-{label}-{hashlib.sha1(data).hexdigest()[:8]}").write_bytes(data)
        written[name] = len(seeds)
    return written


if __name__ == "__main__":
    for target, count in write_corpus().items():
        print(f"{target}: {count} seeds")
