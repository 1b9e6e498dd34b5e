"""The status view's fallback when the plugin is down: a container's row from its state files alone."""

from __future__ import annotations

import json

from driver.status import saved_row

CID = "e" * 64


def cursor(path, pos: int, extra: dict, dropped_frames: int = 0) -> None:
    path.write_text(json.dumps({"pos": pos, "dropped_frames": dropped_frames, "dropped_bytes": 0, "extra": extra}))


def test_a_saved_row_lists_every_output_from_its_cursor_files(tmp_path):
    """Not forward by name: each output the container had (its cursor file), with what that cursor saved."""
    cdir = tmp_path / "containers" / CID
    (cdir / "cursors").mkdir(parents=True)
    (cdir / "journal").mkdir()
    (cdir / "journal" / f"{0:020d}.seg").write_bytes(b"x" * 500)
    (cdir / "info.json").write_text(json.dumps({"ContainerName": "/web", "Config": {"loki-url": "http://l"}}))
    cursor(cdir / "cursors" / "jsonlog.json", 500, {"stats": {"received_lines": {"stdout": 7}, "lines_written": 7}})
    cursor(cdir / "cursors" / "loki.json", 200, {"acked": 3, "dropped": {"filtered": 1}}, dropped_frames=2)
    cursor(cdir / "cursors" / "testfile.json", 500, {"acked": 7})

    row = saved_row(str(tmp_path), CID)
    assert (row["name"], row["received"], row["stored"]) == ("web", 7, 7)
    outputs = {o["name"]: o for o in row["outputs"]}
    assert list(outputs) == ["jsonlog", "loki", "testfile"]
    assert (outputs["loki"]["acked"], outputs["loki"]["dropped"], outputs["loki"]["backlog_bytes"]) == (3, 2, 300)
    assert (outputs["testfile"]["acked"], outputs["testfile"]["backlog_bytes"]) == (7, 0)
