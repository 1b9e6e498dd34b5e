"""The pipeline's outputs as plug-ins: one package each (pure codec, client, journal consumer, option rows).

Each output declares itself with one ``Output`` row: its name, its log-opt rows, whether a container's options turn
it on, and how to build its journal consumer (plus, if it has one, a resource shared by every container, such as a
client per destination). The pipeline, the option table and the plugin's registry ask this module; none of them
names an output.

The built-in outputs are listed in ``BUILTIN``. The plugin setting ``LOGBRIDGE_OUTPUT_MODULES`` (comma-separated
module names, each with an ``OUTPUT``) adds more at start: that is how the tests plug in a test-only output.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # driver.options imports this module: only annotations name it here
    from driver.info import LogInfo
    from driver.journal import Cursor, CursorStore, Journal
    from driver.options import Option, Options
    from driver.sinks.base import Consumer

BUILTIN = ("driver.outputs.forward.output", "driver.outputs.loki.output", "driver.outputs.elasticsearch.output")


class OutputConsumer(Protocol):
    """A journal consumer (driver.sinks.base.Consumer) that delivers somewhere, as the metrics see it
    (driver.outputs.acked.AckedOutput is the base the built-in outputs build on).

    ``saved`` are its lifetime counts as last saved with its cursor, keyed ``forwarded`` (sent, resends included),
    ``acked``, ``retried``, ``failures``, ``dropped`` (lost to the journal cap) and ``dropped_<reason>`` for any
    other reason; a missing key counts 0. A restart continues from exactly these, so the metrics, built on them,
    never go back. ``up``: its last delivery attempt succeeded."""

    name: str
    saved: dict[str, int]

    @property
    def up(self) -> bool: ...


@dataclass(frozen=True)
class Container:
    """What an output's ``build`` gets: one container's metadata, options and journal."""

    info: LogInfo
    opts: Options
    journal: Journal
    store: CursorStore  # the container's cursors: an output saves its own under its name
    json_log: str  # the container's json.log path (a Loki ``filename`` label)


def _no_check(opts: Options) -> None:
    return None


def default_saved_counts(cursor: Cursor) -> dict[str, int]:
    # Imported here, not at the top: driver.speedups imports the outputs' C modules, so this package must not
    # import driver.frames (through acked) while driver.frames is still importing driver.speedups.
    from driver.outputs.acked import saved_counts
    return saved_counts(cursor)


@dataclass(frozen=True)
class Output:
    name: str  # the consumer's name: its cursor file and the metrics' ``sink`` label; unique
    options: tuple[Option, ...]  # its log-opt rows, in driver.options' row format
    turned_on: Callable[[Options], bool]  # whether a container's options turn it on
    build: Callable[[Container, Any], Consumer]  # (container, shared resource or None) → its consumer
    check: Callable[[Options], None] = _no_check  # combinations of its options; raises OptionError at docker run
    make_shared: Callable[[], Any] | None = None  # one per plugin process, handed to every build; aclose() at exit
    # its consumer's ``saved`` counts read from its cursor, for a container without a pipeline now
    saved_counts: Callable[[Cursor], dict[str, int]] = default_saved_counts


_outputs: dict[str, Output] = {}
_lock = threading.Lock()  # registration happens at start; lookups from worker threads must see it whole


def register(output: Output) -> None:
    """Add an output; its name and its option names must be new (ValueError otherwise)."""
    from driver.options import NODE_OPTIONS  # here: driver.options imports this module

    with _lock:
        _load_builtin()
        if output.name in _outputs or output.name == "jsonlog":
            raise ValueError(f"output {output.name!r} is registered already")
        taken = {o.name for o in NODE_OPTIONS} | {o.name for out in _outputs.values() for o in out.options}
        clash = sorted(o.name for o in output.options if o.name in taken)
        if clash:
            raise ValueError(f"output {output.name!r}: log-opt {clash[0]!r} is declared already")
        _outputs[output.name] = output


def unregister(name: str) -> None:
    """Remove an output (tests that registered their own)."""
    with _lock:
        _outputs.pop(name, None)


def load(modules: Iterable[str]) -> None:
    """Register the ``OUTPUT`` of each named module (``LOGBRIDGE_OUTPUT_MODULES``)."""
    for name in modules:
        try:
            output = importlib.import_module(name).OUTPUT
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"LOGBRIDGE_OUTPUT_MODULES: cannot load an output from {name!r}: {exc}") from None
        if _outputs.get(output.name) is not output:
            register(output)


_builtin_loaded = False


def _load_builtin() -> None:
    """Import the built-in outputs on first use (their modules import driver.options, which imports this one)."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    _builtin_loaded = True
    for name in BUILTIN:
        output = importlib.import_module(name).OUTPUT
        _outputs[output.name] = output


def available() -> tuple[Output, ...]:
    """Every registered output, built-in ones first."""
    with _lock:
        _load_builtin()
        return tuple(_outputs.values())


def turned_on(opts: Options) -> tuple[Output, ...]:
    """The outputs a container's options turn on."""
    return tuple(o for o in available() if o.turned_on(opts))


class Shared:
    """The outputs' shared resources of one plugin process, each made when a container first needs it."""

    def __init__(self) -> None:
        self._resources: dict[str, Any] = {}

    def get(self, output: Output) -> Any:
        if output.make_shared is None:
            return None
        if output.name not in self._resources:
            self._resources[output.name] = output.make_shared()
        return self._resources[output.name]

    async def aclose(self) -> None:
        for resource in self._resources.values():
            close = getattr(resource, "aclose", None)
            if close is not None:
                await close()
        self._resources.clear()


def build(container: Container, shared: Shared) -> list[Consumer]:
    """The consumers of the outputs this container's options turn on."""
    return [o.build(container, shared.get(o)) for o in turned_on(container.opts)]
