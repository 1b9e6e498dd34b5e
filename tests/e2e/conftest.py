"""End-to-end fixtures: one private dockerd per test session, a registry-free busybox image, logbridge as a
legacy plugin (host process from this checkout) and as a managed plugin (rootfs built once, cached across
sessions in /var/cache/logbridge-rootfs).

Every test in this directory is marked `e2e`. There is no skip: if dockerd cannot start, the tests error,
so CI cannot pass without them. Needs root.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import (
    Dockerd,
    LegacyPlugin,
    ManagedPlugin,
    RunResult,
    SupportError,
    build_plugin_dir,
    create_managed_plugin,
    import_busybox,
)
from tests.support.procs import REPO

HERE = Path(__file__).resolve().parent
SESSION = secrets.token_hex(3)  # in every plugin name: /run/docker/plugins is shared with other daemons
_counter = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


def unique_name(kind: str) -> str:
    """A plugin name no other test or test session on this machine uses (lowercase, as dockerd wants)."""
    return f"lb{kind}-{SESSION}-{next(_counter)}"


@pytest.fixture(scope="session")
def dockerd(request: pytest.FixtureRequest) -> Iterator[Dockerd]:
    """The session's private dockerd; stopped and purged at the end, whatever happened.
    LOGBRIDGE_KEEP_DOCKERD=1 leaves it running for a look afterwards."""
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root (they run a private dockerd)", pytrace=False)
    daemon = Dockerd()
    try:
        daemon.start()
    except SupportError as e:
        daemon.stop(purge=True)
        pytest.fail(f"cannot start a private dockerd: {e}", pytrace=False)
    yield daemon
    if request.session.testsfailed:  # keep the daemon's log (plugin output is in it) for CI
        (REPO / "build").mkdir(exist_ok=True)
        shutil.copyfile(daemon.log_path, REPO / "build" / "e2e-dockerd.log")
    if os.environ.get("LOGBRIDGE_KEEP_DOCKERD") == "1":
        print(f"\nkeeping dockerd: export DOCKER_HOST={daemon.host}")
        return
    try:
        daemon.remove_containers()
    finally:
        daemon.stop(purge=True)


@pytest.fixture(scope="session")
def bb_image(dockerd: Dockerd) -> str:
    """`bb:latest`: busybox-static with one symlink per applet (sh, seq, echo, yes, head, printf, ...)."""
    return import_busybox(dockerd)


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.json + rootfs/ for `docker plugin create`, built once per session (from the cache if warm)."""
    try:
        return build_plugin_dir(tmp_path_factory.mktemp("plugin"))
    except SupportError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def legacy_plugin(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LegacyPlugin]]:
    """Factory: `legacy_plugin(name=None, env=None, start=True)` -> a started LegacyPlugin with its own log
    root and state dir (.log_root, .state_dir, .json_log(cid), .kill(), .restart(), .stop()). At the end of
    the test its containers are removed, then it is stopped."""
    plugins: list[LegacyPlugin] = []

    def make(name: str | None = None, env: Mapping[str, str] | None = None, start: bool = True) -> LegacyPlugin:
        name = name or unique_name("l")
        base = tmp_path_factory.mktemp(name)
        plugin = LegacyPlugin(name, base / "logs", base / "state", dict(env or {}))
        plugins.append(plugin)
        return plugin.start() if start else plugin

    yield make
    for plugin in plugins:
        try:
            dockerd.remove_containers(log_driver=plugin.name)
        finally:
            plugin.stop()


@pytest.fixture
def managed_plugin(
    dockerd: Dockerd, plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ManagedPlugin]]:
    """Factory: `managed_plugin(name=None, env=None)` -> an enabled ManagedPlugin whose log-root and
    state-dir mounts point at fresh host dirs (.log_root, .state_dir, .json_log(cid), .pid(), .kill(),
    .wait_running(old_pid), .disable(), .enable(), .log()). Removed with its containers after the test."""
    plugins: list[ManagedPlugin] = []

    def make(name: str | None = None, env: Mapping[str, str] | None = None) -> ManagedPlugin:
        name = name or unique_name("m")
        base = tmp_path_factory.mktemp(name)
        try:
            plugin = create_managed_plugin(
                dockerd, plugin_dir, name, log_root=base / "logs", state_dir=base / "state", env=env
            )
        except SupportError as e:
            dockerd.docker("plugin", "rm", "-f", name, check=False)
            pytest.fail(str(e), pytrace=False)
        plugins.append(plugin)
        return plugin

    yield make
    for plugin in plugins:
        plugin.remove()


@pytest.fixture(scope="session")
def docker_run(dockerd: Dockerd, bb_image: str) -> Callable[..., RunResult]:
    """`docker_run(log_driver, *cmd, log_opts=None, image=bb_image, name=None, rm=False, network="none",
    extra_args=(), timeout=120)` -> RunResult(rc, stdout, stderr, container_id). The container is kept
    (unless rm=True) so its logs can be read; the session removes it."""

    def run(
        log_driver: str, *cmd: str, log_opts: Mapping[str, str] | None = None, image: str | None = None, **kwargs
    ) -> RunResult:
        return dockerd.run(image or bb_image, *cmd, log_driver=log_driver, log_opts=log_opts, **kwargs)

    return run


@pytest.fixture(scope="session")
def json_file_run(dockerd: Dockerd, docker_run: Callable[..., RunResult]) -> Callable[..., tuple[RunResult, Path]]:
    """The reference: `json_file_run(*cmd, log_opts=None, **kw)` runs the same command with dockerd's own
    json-file driver and returns (RunResult, path of its <id>-json.log; rotated files sit beside it)."""

    def run(*cmd: str, log_opts: Mapping[str, str] | None = None, **kwargs) -> tuple[RunResult, Path]:
        result = docker_run("json-file", *cmd, log_opts=log_opts, **kwargs)
        return result, dockerd.json_file_log(result.container_id)

    return run


@contextlib.contextmanager
def another_dockerd(**kwargs) -> Iterator[Dockerd]:
    """A second private dockerd (Dockerd(**kwargs): another time zone, live-restore ...) with the busybox image;
    its containers and plugins are removed and the daemon purged afterwards."""
    daemon = Dockerd(**kwargs)
    try:
        daemon.start()
        import_busybox(daemon)
        yield daemon
    finally:
        try:
            daemon.remove_containers()
            for name in daemon.docker("plugin", "ls", "-q", check=False).stdout.decode().split():
                daemon.docker("plugin", "rm", "-f", name, check=False)
        finally:
            daemon.stop(purge=True)
