"""The registry's totals: finished containers' counts folded in once, from what their cursors saved."""

from __future__ import annotations

import asyncio
import json

from driver.registry import Registry
from driver.settings import Settings

CID = "f" * 64


def cursor(path, pos: int, extra: dict) -> None:
    path.write_text(json.dumps({"pos": pos, "dropped_frames": 0, "dropped_bytes": 0, "extra": extra}))


def stopped_container(state, written: int, acked: int) -> None:
    """A container that ended with everything delivered: its cursors and info, no journal backlog."""
    cdir = state / "containers" / CID
    (cdir / "cursors").mkdir(parents=True, exist_ok=True)
    (cdir / "info.json").write_text(json.dumps({"ContainerID": CID, "Config": {"fluentd-address": "tcp://x:1"}}))
    cursor(cdir / "cursors" / "jsonlog.json", 0, {"stats": {"received_lines": {"stdout": written},
                                                             "lines_written": written}})
    cursor(cdir / "cursors" / "forward.json", 0, {"acked": acked})


def restored(tmp_path) -> Registry:
    async def main():
        registry = Registry(Settings(log_root=str(tmp_path / "logs"), state_dir=str(tmp_path / "state")),
                            asyncio.get_running_loop())
        await registry.restore()
        registry.state_files.close()
        return registry
    return asyncio.run(main())


def test_a_container_that_ended_while_the_plugin_was_down_is_folded_once(tmp_path):
    """It was live at the kill (folded at its last stop: 10 lines), wrote 2 more, ended while the plugin was down:
    the restart adds the 2, and a second restart adds nothing."""
    state = tmp_path / "state"
    stopped_container(state, written=12, acked=12)
    folded = {"containers": {"lines_written": 10, "received_lines": {"stdout": 10}},
              "outputs": {"forward": {"acked": 10}}}
    (state / "totals.json").write_text(json.dumps({"containers": {"lines_written": 10,
                                                                  "received_lines": {"stdout": 10}},
                                                   "outputs": {"forward": {"acked": 10}}, "folded": {CID: folded}}))
    first = restored(tmp_path)
    assert (first.totals().lines_written, first.output_totals()["forward"]["acked"]) == (12, 12)
    second = restored(tmp_path)
    assert (second.totals().lines_written, second.output_totals()["forward"]["acked"]) == (12, 12)


def test_totals_from_before_lifetime_counts_take_folded_json_as_the_folded_part(tmp_path):
    """An upgrade: totals.json without folded parts, each container's folded.json beside its cursors. Its counts
    are in the totals already; only what it saved beyond folded.json is added."""
    state = tmp_path / "state"
    stopped_container(state, written=12, acked=12)
    (state / "containers" / CID / "folded.json").write_text(json.dumps({"lines_written": 10,
                                                                         "received_lines": {"stdout": 10}}))
    (state / "totals.json").write_text(json.dumps({"containers": {"lines_written": 10,
                                                                  "received_lines": {"stdout": 10}},
                                                   "outputs": {"forward": {"acked": 12}}}))
    registry = restored(tmp_path)
    assert registry.totals().lines_written == 12  # not 22
    assert registry.output_totals()["forward"]["acked"] == 12  # not 24
