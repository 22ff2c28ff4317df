"""How an error message shows a value it refuses: its type and a short, bounded repr, so a
huge or hostile value never floods a message or a log."""

from __future__ import annotations

import reprlib

__all__ = ["given", "short"]

_show = reprlib.Repr()
_show.maxstring = 60
_show.maxother = 60


def short(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    return _show.repr(value)


def given(value: object) -> str:
    """``"list [1, 2]"``: the type's name and a repr cut to a readable length."""
    return f"{type(value).__name__} {_show.repr(value)}"
