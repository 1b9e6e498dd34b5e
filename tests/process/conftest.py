"""Fixtures for the process-level tests: a real logbridge process driven like dockerd's plugin adapter."""

from __future__ import annotations

import pytest

from tests.plugin_harness import PluginProcess


@pytest.fixture
def plugin(tmp_path):
    """A started plugin with its own socket, log root and state dir; killed at the end of the test."""
    p = PluginProcess(tmp_path).start()
    yield p
    if p.proc and p.proc.poll() is None:
        p.kill()
