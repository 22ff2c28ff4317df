"""How an error message shows a value it refuses: its type and a short, bounded repr, so a
huge or hostile value never floods a message or a log."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

__all__ = ["given", "likely_meant", "redacted", "short"]

_show = reprlib.Repr()
_show.maxstring = 60
_show.maxother = 60


def short(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    return _show.repr(value)


def given(value: object) -> str:
    """``"list [1, 2]"``: the type's name and a repr cut to a readable length."""
    return f"{type(value).__name__} {_show.repr(value)}"


def likely_meant(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``name`` is most likely a misspelling of, if any is close:
    for a "did you mean" hint."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return close[0] if close else None


def redacted(address: str) -> str:
    """An address (a storage URL, a channel's URL or host) as a message may show it: the
    password of ``user:password@`` and every query value but cjo's ``schema`` (libpq takes
    ``?password=``, a hook a ``?token=``) become ``***``, and a fragment is dropped. Plain
    text rules, not a URL parser: an address is often shown because it does not parse."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    rest, question, query = rest.partition("#")[0].partition("?")
    # The last "@", even past a "/": a password may hold one unencoded.
    userinfo, at, host = rest.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    if question:
        query = "&".join(
            # cjo's own ``schema`` names a place, never a secret: kept to tell databases apart.
            part if name == "schema" else f"{name}=***" if equals else "***"
            for part in query.split("&")
            for name, equals, _ in (part.partition("="),)
        )
    return f"{scheme}{sep}{userinfo}{at}{host}{question}{query}"
