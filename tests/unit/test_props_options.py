"""Property tests of the log-opts a container's owner (root) writes: driver.options over the whole table (the
node rows and every output's): ~10k single values (microseconds each), and whole configs, fewer (parse_options
parses every row: about a millisecond each).

Properties: parse_options returns Options or raises OptionError, nothing else; the error names an option (or the
combination) it is about; a secret option's value never appears in an error."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driver.options import OptionError, option_table, parse_options, parse_value

TABLE = option_table()
NAMES = [o.name for o in TABLE]
SECRETS = {o.name for o in TABLE if o.secret}
# Values that get past the first checks of some kind, so the later ones (ranges, combinations) run too.
PLAUSIBLE = ["", "0", "1", "-1", "true", "false", "10m", "1.5g", "16m", "1k", "500kb", "2MiB", "1s", "500ms", "1m30s",
             "0s", "-1s", "9999999h", "100ms", "10s", "3", "4294967296", "blocking", "non-blocking", "a,b",
             "(", ".*", "{{.Name}}", "{{.Bad}}", "tcp://127.0.0.1:24224", "unix:///x.sock", "127.0.0.1:70000",
             "http://loki:3100/loki/api/v1/push", "https://u:p@loki/x", "ftp://x", "key\n", "k\x00ey", "١٢", "1e3",
             "- action: drop\n  regex: .*", "[", "job=docker,name={{.Name}}", "=x"]
values = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=24),
                   st.text(alphabet="0123456789.kmgtpbKMGTPBiums-+ ", max_size=8))
configs = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values, max_size=6)


def check_error(config: dict[str, str], exc: OptionError) -> None:
    message = str(exc)
    assert message.startswith("logbridge: "), message
    named = [name for name in set(config) | set(NAMES) if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])",
                                                                    message)]
    assert named or "unknown log-opt" in message, f"names no option: {message}"
    for name in SECRETS & set(config):
        value = config[name]
        # The message may rightly echo a non-secret option's value or an unknown key; when one of those holds the
        # secret's text, its appearing is no leak. A value the message holds as it is may be a word of its fixed
        # text ("true"): test_a_secret_never_appears_in_an_error covers those with values no fixed text has.
        echoed = [text for key, other in config.items() if key not in SECRETS for text in (key, other)]
        if len(value) >= 4 and value not in message and not any(value in text for text in echoed):
            assert repr(value)[1:-1] not in message, f"{name}'s value shown escaped: {message}"


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TABLE), values)
def test_each_value_parses_or_raises_an_option_error_naming_it(option, value):
    try:
        parse_value(option, value)
    except OptionError as exc:
        check_error({option.name: value}, exc)


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
@example({"forward-shared-key": "s3cr3t\n"})
@example({"loki-url": "https://user:hunter22@\x00loki/"})
@example({"loki-tenant-id": "tenant\x7fone"})
@example({"forward-password": "pa\x01ssword"})
@example({"forward-shared-key": "ab\ncd", "max-size": "ab\ncd"})  # max-size's error rightly shows its own value
@example({"forward-shared-key": "ab\ncd", "ab\ncd": "x"})  # and an unknown key's name
def test_parse_options_raises_only_option_errors_that_name_the_option(config):
    try:
        opts = parse_options(config)
    except OptionError as exc:
        check_error(config, exc)
    else:
        assert set(opts) == set(NAMES) and opts.given == frozenset(config)


@settings(max_examples=1_000, deadline=None)
@given(st.sampled_from(sorted(SECRETS)), st.text(min_size=4, max_size=30), configs)
def test_a_secret_never_appears_in_an_error(name, secret, others):
    # Whatever else is wrong in the same config, the secret's own text is never echoed.
    secret = "Zq" + secret  # letters no fixed message starts a word with
    config = {**others, name: secret}
    try:
        parse_options(config)
    except OptionError as exc:
        assert secret not in str(exc) and repr(secret)[1:-1] not in str(exc), str(exc)
