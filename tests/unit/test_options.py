"""Log-opt validation: what docker run reports for each bad value, defaults, and dockerd's pass-through keys."""

import pytest

from driver.info import LogInfo, extra_attributes, render_tag
from driver.options import OptionError, markdown_table, option_table, parse_duration, parse_options

INFO = LogInfo.from_json({
    "ContainerID": "94cf32b38889" + "a" * 52,
    "ContainerName": "/quizzical_gagarin",
    "ContainerImageID": "sha256:d156ccbe" + "0" * 56,
    "ContainerImageName": "bb:latest",
    "ContainerEntrypoint": "sh",
    "ContainerArgs": ["-c", "seq 1 5"],
    "ContainerEnv": ["PATH=/bin", "FOO=bar", "EMPTY="],
    "ContainerLabels": {"a": "1", "com.example.team": "core"},
    "Config": {},
    "DaemonName": "docker",
})


def test_defaults_are_bounded():
    opts = parse_options({})
    assert opts["max-size"] == 100_000_000 and opts["max-file"] == 3 and opts["compress"] is False


def test_decimal_sizes_like_json_file():
    assert parse_options({"max-size": "1k"})["max-size"] == 1000
    assert parse_options({"max-size": "10m"})["max-size"] == 10_000_000
    assert parse_options({"max-size": "1.5g"})["max-size"] == 1_500_000_000
    assert parse_options({"max-buffer-size": "1m", "mode": "non-blocking"})["max-buffer-size"] == 1 << 20


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("max-size", "abc", "max-size='abc': expected a size like 10m"),
        ("max-size", "0", "max-size='0'"),
        ("max-file", "0", "max-file='0': expected a whole number of 1 or more"),
        ("compress", "yes", "compress='yes': expected true or false"),
        ("mode", "sometimes", "mode='sometimes': expected blocking or non-blocking"),
        ("labels-regex", "(", "labels-regex='(': expected a regular expression"),
        ("fluentd-retry-wait", "soon", "fluentd-retry-wait='soon': expected a duration"),
    ],
)
def test_bad_values_name_the_option_and_the_form(key, value, needle):
    with pytest.raises(OptionError) as err:
        parse_options({key: value})
    assert needle in str(err.value)


def test_unknown_key_is_named_with_the_accepted_list():
    with pytest.raises(OptionError) as err:
        parse_options({"max-sise": "1m"})
    assert "'max-sise'" in str(err.value) and "max-size" in str(err.value)


def test_compress_needs_two_files():
    with pytest.raises(OptionError, match="max-file of 2 or more"):
        parse_options({"compress": "true", "max-file": "1"})


def test_dockerd_pass_through_keys_are_accepted():
    parse_options({"mode": "blocking", "cache-disabled": "true", "cache-max-size": "20m", "cache-max-file": "5",
                   "cache-compress": "false"})


def test_go_durations():
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5 and parse_duration("0") == 0
    for bad in ("", "5", "1x", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_tag_fields_as_dockerd_20_10_renders_them():
    tag = "{{.ID}}|{{.FullID}}|{{.Name}}|{{.ImageID}}|{{.ImageFullID}}|{{.ImageName}}|{{.DaemonName}}"
    out = render_tag(tag, INFO).split("|")
    assert out == [INFO.container_id[:12], INFO.container_id, "quizzical_gagarin", "sha256:d156c",
                   INFO.image_id, "bb:latest", "docker"]
    assert render_tag("app-{{ .Name }}", INFO) == "app-quizzical_gagarin"


@pytest.mark.parametrize("tag", ["{{.Nope}}", "{{json .ContainerLabels}}", "{{if .ID}}x{{end}}", "{{.ID"])
def test_other_template_syntax_is_rejected_clearly(tag):
    with pytest.raises(OptionError, match="tag="):
        render_tag(tag, INFO)


def test_extra_attributes_env_wins_over_labels():
    opts = parse_options({"labels": "a,missing", "env": "FOO,EMPTY", "labels-regex": "^com\\."})
    assert extra_attributes(INFO, opts) == {"a": "1", "com.example.team": "core", "FOO": "bar", "EMPTY": ""}


def test_readme_table_lists_every_option():
    table = markdown_table()
    assert all(f"`{o.name}`" in table for o in option_table())


def test_readme_shows_the_generated_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme, "README's options table is stale: run python scripts/readme-options.py"


@pytest.mark.parametrize("key", [o.name for o in option_table() if o.secret])
def test_a_malformed_secret_is_named_but_never_shown(key):
    secret = "s3cr3t-Value\n"  # a key file's newline: the handshake could never match
    with pytest.raises(OptionError) as err:
        parse_options({key: secret})
    message = str(err.value)
    assert key in message and "secret" in message
    assert "s3cr3t" not in message and "Value" not in message


def test_shared_key_and_password_are_secrets():
    assert {o.name for o in option_table() if o.secret} >= {"forward-shared-key", "forward-password"}
