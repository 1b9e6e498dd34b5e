"""logbridge's json.log equals dockerd's json-file output for the same command, on the real dockerd, for the
legacy and the managed plugin: escaping, invalid UTF-8, 16 KiB partial chunks, attrs, TTY, rotation and
compression; a bad --log-opt fails `docker run`; `docker logs` on a stopped container changes nothing.

Lines are compared per stream (dockerd copies stdout and stderr in two goroutines, so their interleaving
differs from run to run) with the `time` values masked; the times are checked for format on their own.
Each plugin kind is set up once for the module, and each json-file reference run happens once.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import unique_name
from tests.support import Dockerd, LegacyPlugin, RunResult, SupportError, create_managed_plugin, wait_for

pytestmark = pytest.mark.e2e

# One container run exercising every encoding rule; each printf/pipe writes a known byte sequence.
EVERYTHING = r"""
printf 'plain line\n'
printf 'controls:\001\002\033[31m\177 tab:\there cr:\r nul:\000 end\n'
printf 'html: <a href="x">&amp;</a> quote:" backslash:\\ end\n'
printf 'invalid: \377 \300\257 \355\240\200 \342\202 lone:\200 end\n'
printf 'u2028:\342\200\250 u2029:\342\200\251 euro:\342\202\254 emoji:\360\237\230\200\n'
printf 'to stderr <&> \001\n' >&2
head -c 16383 /dev/zero | tr '\0' a; printf '\342\202\254 split at 16384\n'
head -c 40000 /dev/zero | tr '\0' b; echo
head -c 16384 /dev/zero | tr '\0' c; echo
head -c 20000 /dev/zero | tr '\0' e >&2; printf '\342\202\254\n' >&2
printf 'after the long lines\n'
printf 'stderr without newline' >&2
printf 'last line without newline'
"""
TTY = r"""printf 'out <&>\001\n'; printf 'err\n' >&2; printf 'tty no newline'"""
TAG = '{{.Name}}|{{.ImageName}}|{{.ImageID}}|{{.DaemonName}}|<&>"\\'
ATTR_OPTS = {"tag": TAG, "labels": "a,FOO,missing", "env": "E1,NOPE"}
ATTR_ARGS = ("--label", "a=1", "--label", "FOO=b<a>r", "--label", "other=x", "--env", "E1=v&1", "--env", "E2=no")
ROTATE = 'i=1; while [ $i -le 150 ]; do echo "line $i <&> padding padding"; i=$((i+1)); done'
ROTATE_OPTS = {"max-size": "1k", "max-file": "3"}

# Go's RFC3339Nano in UTC with the trailing zeros of the fraction removed (no fraction when it is zero).
TIME_RE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z$")
TIME_FIELD = re.compile(rb',"time":"([^"]*)"}$')


# ---- plugins and runs, once per module ----------------------------------------------------------------------
class Subject:
    """The plugin under test plus the container runs already made with it (so a run serves several checks)."""

    def __init__(self, kind: str, driver: str, log_root: Path) -> None:
        self.kind = kind
        self.driver = driver
        self.log_root = log_root
        self.runs: dict[str, RunResult] = {}

    def json_log(self, cid: str) -> Path:
        return self.log_root / cid / f"{cid}-json.log"


@pytest.fixture(scope="module", params=["legacy", "managed"])
def subject(request: pytest.FixtureRequest, dockerd: Dockerd, tmp_path_factory) -> Iterator[Subject]:
    base = tmp_path_factory.mktemp(f"compat-{request.param}")
    if request.param == "legacy":
        plugin = LegacyPlugin(unique_name("l"), base / "logs", base / "state").start()
        cleanup = plugin.stop
    else:
        plugin_dir = request.getfixturevalue("plugin_dir")
        try:
            plugin = create_managed_plugin(
                dockerd, plugin_dir, unique_name("m"), log_root=base / "logs", state_dir=base / "state"
            )
        except SupportError as e:
            pytest.fail(str(e), pytrace=False)
        cleanup = plugin.remove
    yield Subject(request.param, plugin.driver, plugin.log_root)
    try:
        dockerd.remove_containers(log_driver=plugin.driver)
    finally:
        cleanup()


@pytest.fixture(scope="module")
def run_named(dockerd: Dockerd, bb_image: str) -> Callable[..., RunResult]:
    """`run_named(driver, script, log_opts, extra_args)`: `sh -c script` in a container named NAME, renamed
    afterwards so that the next run (json-file, then each plugin) gets the same {{.Name}}."""
    name = "compat-" + secrets.token_hex(4)

    def run(driver: str, script: str, log_opts: dict | None = None, extra_args: tuple = ()) -> RunResult:
        result = dockerd.run(
            bb_image, "sh", "-c", script, log_driver=driver, log_opts=log_opts, name=name, extra_args=extra_args
        )
        assert result.rc == 0, result.stderr.decode(errors="replace")
        dockerd.docker("rename", name, f"{name}-{secrets.token_hex(4)}")
        return result

    return run


@pytest.fixture(scope="module")
def reference(dockerd: Dockerd, run_named) -> Callable[..., tuple[RunResult, Path]]:
    """json-file's run of a case, made once: `reference(case, script, log_opts, extra_args)` -> (run, json.log)."""
    cache: dict[str, tuple[RunResult, Path]] = {}

    def get(case: str, script: str, log_opts: dict | None = None, extra_args: tuple = ()) -> tuple[RunResult, Path]:
        if case not in cache:
            result = run_named("json-file", script, log_opts, extra_args)
            cache[case] = result, dockerd.json_file_log(result.container_id)
        return cache[case]

    return get


def run_case(subject: Subject, run_named, case: str, script: str, log_opts=None, extra_args=()) -> RunResult:
    if case not in subject.runs:
        subject.runs[case] = run_named(subject.driver, script, log_opts, extra_args)
    return subject.runs[case]


# ---- reading and comparing json.log files -------------------------------------------------------------------
def masked_lines(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(stream, line with the time value replaced by TIME, time value) for each line of a json.log."""
    assert data.endswith(b"\n"), f"json.log ends in a torn line: {data[-200:]!r}"
    out = []
    for line in data.split(b"\n")[:-1]:
        m = TIME_FIELD.search(line)
        assert m, f"no time field at the end of {line[:200]!r}"
        out.append((json.loads(line)["stream"], line[: m.start(1)] + b"TIME" + line[m.end(1) :], m.group(1)))
    return out


def per_stream(data: bytes) -> dict[str, list[bytes]]:
    streams: dict[str, list[bytes]] = {}
    for stream, line, _ in masked_lines(data):
        streams.setdefault(stream, []).append(line)
    return streams


def assert_times_valid(data: bytes) -> None:
    """Every time is RFC3339Nano (UTC, trailing zeros trimmed), recent, and non-decreasing per stream."""
    last: dict[str, datetime] = {}
    now = datetime.now(UTC)
    for stream, _, value in masked_lines(data):
        assert TIME_RE.match(value), f"time {value!r} is not RFC3339Nano with trailing zeros trimmed"
        text = value.decode()
        whole, _, frac = text[:-1].partition(".")
        t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        t = t.replace(microsecond=int((frac + "000000")[:6]))
        assert abs((now - t).total_seconds()) < 600, f"time {text} is not from this run"
        assert t >= last.get(stream, t), f"{stream} time {text} goes backwards"
        last[stream] = t


def assert_same_per_stream(ours: bytes, theirs: bytes) -> None:
    mine, ref = per_stream(ours), per_stream(theirs)
    assert sorted(mine) == sorted(ref), "streams differ"
    for stream in ref:
        assert len(mine[stream]) == len(ref[stream]), f"{stream}: {len(mine[stream])} lines vs json-file's"
        for i, (a, b) in enumerate(zip(mine[stream], ref[stream], strict=True)):
            assert a == b, f"{stream} line {i} differs:\n logbridge: {a[:300]!r}\n json-file: {b[:300]!r}"


def wait_settled(path: Path, reference: Path) -> bytes:
    """The plugin's json.log once it holds as many lines as json-file's (the plugin may still be writing)."""
    want = reference.read_bytes().count(b"\n")

    def done() -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data if data.count(b"\n") >= want and data.endswith(b"\n") else None

    return wait_for(f"{want} lines in {path}", done, 30)


# ---- 1. equivalence -----------------------------------------------------------------------------------------
def test_json_log_equals_json_file_per_stream(subject, run_named, reference):
    ref, ref_log = reference("everything", EVERYTHING, ATTR_OPTS, ATTR_ARGS)
    result = run_case(subject, run_named, "everything", EVERYTHING, ATTR_OPTS, ATTR_ARGS)
    assert (result.stdout, result.stderr) == (ref.stdout, ref.stderr)
    ours = wait_settled(subject.json_log(result.container_id), ref_log)
    theirs = ref_log.read_bytes()
    assert_same_per_stream(ours, theirs)
    assert_times_valid(ours)
    # the reference itself shows what is being compared (so a changed script cannot make the test vacuous)
    stdout = per_stream(theirs)["stdout"]
    assert stdout[0].startswith(b'{"log":"plain line\\n","stream":"stdout","attrs":{"E1":"v\\u00261","FOO":"b\\u003ca')
    assert b"invalid: \\ufffd \\ufffd\\ufffd \\ufffd\\ufffd\\ufffd \\ufffd\\ufffd lone:\\ufffd end" in stdout[3]
    assert [len(json.loads(line)["log"]) for line in stdout[5:12]] == [16384, 18, 16384, 16384, 7232 + 1, 16384, 1]
    assert json.loads(stdout[-1])["log"] == "last line without newline"


def test_tty_json_log_equals_json_file(subject, run_named, reference):
    ref, ref_log = reference("tty", TTY, None, ("-t",))
    result = run_case(subject, run_named, "tty", TTY, None, ("-t",))
    ours = wait_settled(subject.json_log(result.container_id), ref_log)
    theirs = ref_log.read_bytes()
    assert list(per_stream(theirs)) == ["stdout"] and b"\\r\\n" in theirs
    assert_same_per_stream(ours, theirs)
    assert_times_valid(ours)


# ---- 5. docker logs on a stopped container: an empty StartLogging/StopLogging pair --------------------------
def test_docker_logs_on_stopped_container_changes_nothing(subject, dockerd, run_named, reference):
    ref, ref_log = reference("everything", EVERYTHING, ATTR_OPTS, ATTR_ARGS)
    result = run_case(subject, run_named, "everything", EVERYTHING, ATTR_OPTS, ATTR_ARGS)
    path = subject.json_log(result.container_id)
    before = wait_settled(path, ref_log)
    theirs = dockerd.docker("logs", ref.container_id)
    for _ in range(2):
        ours = dockerd.docker("logs", result.container_id)
        assert (ours.stdout, ours.stderr) == (theirs.stdout, theirs.stderr)
    time.sleep(1)  # not a timing assertion: a late write (after StopLogging) would have had a second to land
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ---- 2. rotation and compression ----------------------------------------------------------------------------
def log_files(directory: Path, cid: str) -> dict[str, Path]:
    """`<cid>-json.log*` in `directory`, keyed by the name with the container id cut off."""
    prefix = f"{cid}-json.log"
    return {p.name[len(prefix) - 9 :]: p for p in directory.iterdir() if p.name.startswith(prefix)}


def final_files(directory: Path, cid: str, names: list[str]) -> dict[str, Path] | None:
    """The log files once they are the expected ones and the current one ends with the last line, else None."""
    files = log_files(directory, cid) if directory.exists() else {}
    if sorted(files) != names:
        return None
    lines = files["-json.log"].read_bytes().split(b"\n")
    return files if len(lines) > 1 and lines[-2].startswith(b'{"log":"line 150 ') else None


def gzip_extra(path: Path) -> bytes:
    """The raw FEXTRA field of a gzip file's header."""
    head = path.read_bytes()[:4096]
    assert head[:3] == b"\x1f\x8b\x08", f"{path} is not gzip"
    assert head[3] & 0x04, f"{path} has no FEXTRA field"
    xlen = int.from_bytes(head[10:12], "little")
    return head[12 : 12 + xlen]


def file_lines(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_rotation_matches_json_file(subject, run_named, reference, dockerd, compress):
    opts = dict(ROTATE_OPTS, compress="true") if compress else ROTATE_OPTS
    names = ["-json.log"] + [f"-json.log.{n}{'.gz' if compress else ''}" for n in (1, 2)]
    ref, ref_log = reference(f"rotate-{compress}", ROTATE, opts)
    result = run_case(subject, run_named, f"rotate-{compress}", ROTATE, opts)
    cid, ref_cid = result.container_id, ref.container_id
    # json-file compresses .1 in a goroutine, and the plugin may still be writing: wait for the final names
    ref_files = wait_for("json-file's rotated files", lambda: final_files(ref_log.parent, ref_cid, names), 30)
    our_dir = subject.json_log(cid).parent

    try:
        files = wait_for("logbridge's rotated files", lambda: final_files(our_dir, cid, names), 30)
    except SupportError:
        present = sorted(p.name for p in our_dir.iterdir()) if our_dir.exists() else []
        raise AssertionError(f"logbridge's files: {present}, want {names} (with the container id)") from None

    for files_, who in ((files, "logbridge"), (ref_files, "json-file")):
        for suffix, path in files_.items():
            data = file_lines(path)
            last = data.split(b"\n")[-2] + b"\n"
            assert len(data) - len(last) < 1000, f"{who} {suffix}: {len(data)} bytes, more than 1k plus one entry"
            assert_times_valid(data)
            if path.name.endswith(".gz"):
                extra = json.loads(gzip_extra(path))
                assert extra == {"lastTime": json.loads(last)["time"]}, f"{who} {suffix} FEXTRA {extra}"

    def newest_first(files_: dict[str, Path]) -> list[bytes]:
        data = b"".join(file_lines(files_[n]) for n in reversed(names))
        return [line for _, line, _ in masked_lines(data)][::-1]

    mine, theirs = newest_first(files), newest_first(ref_files)
    common = min(len(mine), len(theirs))
    assert common >= 20, f"only {common} lines kept"
    assert mine[:common] == theirs[:common]
    # what docker logs shows is the same too (ReadLogs over the rotated files)
    assert dockerd.docker("logs", cid).stdout.splitlines()[-common:] == ref.stdout.splitlines()[-common:]


# ---- 3. bad log-opts -----------------------------------------------------------------------------------------
BAD_OPTS = [
    ({"max-size": "ten"}, ["max-size='ten'", "10m"]),
    ({"colour": "red"}, ["unknown log-opt 'colour'", "max-size", "tag"]),
    ({"tag": "{{.Foo}}"}, ["tag='{{.Foo}}'", "{{.Foo}}", "{{.ID}}", "{{.ImageName}}"]),
    ({"tag": "{{range .X}}x{{end}}"}, ["tag=", "{{.Name}}"]),
    ({"compress": "true", "max-file": "1"}, ["compress=true", "max-file of 2 or more"]),
]


def test_bad_log_opt_fails_docker_run(subject, dockerd, bb_image):
    failures = []
    for opts, wanted in BAD_OPTS:
        result = dockerd.run(bb_image, "true", log_driver=subject.driver, log_opts=opts)
        err = result.stderr.decode(errors="replace")
        if result.rc != 125 or "logbridge" not in err or not all(w in err for w in wanted):
            failures.append(f"{opts}: exit {result.rc}, stderr {err.strip()!r}, wanted {wanted}")
    assert not failures, "\n".join(failures)
