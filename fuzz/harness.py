"""What every fuzz target shares: the sanitized C extensions loaded in place of the in-place ones, and the check
that they really are the ones in use.

``load_sanitized()`` must run before anything imports ``driver.speedups``: it puts the fuzz/build/ modules into
``sys.modules`` under their real names, so ``driver.speedups`` (and every module that asks it) gets those. The
process has to start with atheris's ``asan_with_fuzzer.so`` preloaded (fuzz/run.py does it): an ASan build cannot
load into a process whose first library is not the ASan runtime.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

from fuzz.build import EXTENSIONS, output_path


class HarnessError(RuntimeError):
    pass


def load_sanitized() -> None:
    if "driver.speedups" in sys.modules:
        raise HarnessError("driver.speedups was imported before the sanitized extensions were loaded")
    for module in EXTENSIONS:
        path = output_path(module)
        if not path.exists():
            raise HarnessError(f"{path} is missing: run python -m fuzz.build")
        loader = importlib.machinery.ExtensionFileLoader(module, str(path))
        spec = importlib.util.spec_from_file_location(module, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        sys.modules[module] = mod
    from driver import speedups

    for name in ("decode_frames", "encode_lines", "encode_records", "count_entries", "encode_loki_stream",
                 "encode_es_documents"):
        func = getattr(speedups, name)
        if func is None:
            raise HarnessError(f"driver.speedups.{name} is None (LOGBRIDGE_PURE set?): the C code would not run")
        owner = sys.modules[func.__module__] if func.__module__ else None
        if owner is None or not str(getattr(owner, "__file__", "")).startswith(str(output_path("").parent)):
            raise HarnessError(f"driver.speedups.{name} does not come from fuzz/build/")
