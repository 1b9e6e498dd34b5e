"""Small checks the targets share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Finding(AssertionError):
    """A target's property broke: the C and Python paths disagree, or an undocumented error escaped."""


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple:
    """("ok", result) or ("raised", exception type, message): what a call did, comparable between two paths."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the caller compares or checks the type
        return ("raised", type(exc), str(exc))


def same(what: str, got: object, want: object) -> None:
    if got != want:
        raise Finding(f"{what}:\n  C/fast:    {got!r:.2000}\n  reference: {want!r:.2000}")
