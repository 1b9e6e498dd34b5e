"""Real-docker test support: a private dockerd, a registry-free busybox image, the plugin rootfs, logbridge as
a managed and as a legacy plugin. Stdlib only, so scripts (`python3 -m tests.support`) can use it too."""

from .cli import DockerCLI, DockerError, RunResult
from .dockerd import Dockerd
from .image import import_busybox
from .jsonlog import read_entries, wait_for_entries
from .plugins import LegacyPlugin, ManagedPlugin, create_managed_plugin, json_log_path
from .procs import SupportError, wait_for
from .rootfs import build_plugin_dir

__all__ = [
    "DockerCLI",
    "DockerError",
    "Dockerd",
    "LegacyPlugin",
    "ManagedPlugin",
    "RunResult",
    "SupportError",
    "build_plugin_dir",
    "create_managed_plugin",
    "import_busybox",
    "json_log_path",
    "read_entries",
    "wait_for",
    "wait_for_entries",
]
