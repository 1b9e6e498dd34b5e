"""Property tests of the profiles file (root writes it; driver/profiles.py): any bytes in it, any container log-opts
naming a profile. Properties: Profiles.apply returns the merged log-opts or raises OptionError, nothing else, and
that error names the file; a secret a profile holds never appears in the error a bad value of it gives."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driver.options import OptionError, option_table, parse_options
from driver.profiles import PROFILE_KEY, Profiles

SECRETS = sorted(o.name for o in option_table() if o.secret)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
profile_files = st.one_of(
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["prod", "dev", ""]), st.dictionaries(st.text(max_size=12), json_values,
                                                                         max_size=3), max_size=3)
    .map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(profile_files, st.sampled_from(["prod", "dev", "", "missing"]))
@example(b"[" * 5_000, "prod")
@example(b'{"prod": {"a": ' + b"[" * 5_000 + b"}}", "prod")
@example(b"\xff\xfe{}", "prod")
@example(b'{"prod": {"max-size": 10}}', "prod")
def test_a_profiles_file_gives_log_opts_or_an_option_error(tmp_path, raw, name):
    path = tmp_path / "profiles.json"
    path.write_bytes(raw)
    config = {PROFILE_KEY: name, "max-file": "2"}
    try:
        merged = Profiles(str(path)).apply(config)  # a new Profiles: no cache from the example before
    except OptionError as exc:
        assert str(path) in str(exc) or PROFILE_KEY in str(exc), str(exc)
        return
    assert merged["max-file"] == "2" and all(isinstance(k, str) and isinstance(v, str) for k, v in merged.items())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SECRETS), st.text(min_size=4, max_size=20))
def test_a_secret_from_a_profile_never_appears_in_the_error(tmp_path, name, secret):
    secret = "Zq" + secret + "\x00"  # a NUL: no secret option takes it
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"prod": {name: secret}}))
    try:
        parse_options(Profiles(str(path)).apply({PROFILE_KEY: "prod"}))
    except OptionError as exc:
        assert secret.rstrip("\x00") not in str(exc) and repr(secret)[1:-1] not in str(exc), str(exc)
    else:
        raise AssertionError(f"{name} took a NUL")
