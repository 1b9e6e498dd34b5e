"""Process settings: the defaults are the managed plugin's (config.json), documented in the README, bounded."""

import json
import re
from pathlib import Path

import pytest

from driver.settings import Settings, StartupError

ROOT = Path(__file__).resolve().parents[2]


def _config_env() -> dict[str, str]:
    config = json.loads((ROOT / "config.json").read_text())
    return {e["name"]: e["value"] for e in config["env"]}


def test_the_default_layout_is_bounded_in_time():
    # dockerd says nothing at docker rm: without a finite retention a removed container's logs stay for good.
    assert 0 < Settings().retention_seconds < float("inf")
    assert Settings.from_env({}).retention_seconds == Settings().retention_seconds


def test_config_json_defaults_are_the_process_defaults():
    env = _config_env()
    from_config = Settings.from_env(env)
    assert from_config.retention_seconds == Settings().retention_seconds
    assert from_config.max_bytes == Settings().max_bytes


def test_every_managed_plugin_setting_is_in_the_readme_table_with_its_default():
    readme = (ROOT / "README.md").read_text()
    for name, value in _config_env().items():
        row = re.search(rf"^\| `{name}` \| (.*?) \|", readme, re.MULTILINE)
        assert row, f"README's settings table lacks {name}"
        assert (f"`{value}`" in row.group(1)) if value else "off" in row.group(1), (name, row.group(1))


@pytest.mark.parametrize(("name", "value"), [("RETENTION_SECONDS", "7d"), ("MAX_BYTES", "-1"),
                                             ("RETENTION_SECONDS", "nan"), ("MAX_BYTES", "\u0661")])
def test_a_malformed_number_names_the_setting(name, value):
    with pytest.raises(StartupError, match=name):
        Settings.from_env({name: value})
