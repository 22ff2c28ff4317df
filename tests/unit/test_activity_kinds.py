"""Every kind of activity-log entry the code writes is in ``ACTIVITY_KINDS``, and each is
named in the ``Activity`` docstring and in docs/architecture.md: a new kind cannot go
undocumented.

The kinds written are read from the source: the kind given to every call that logs (an
``Activity`` built, ``Decider.activity``, ``Decider.end`` ...), as a literal, a constant, or
a local variable set from them."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjo.delivery.feedback import FEEDBACK_EVENTS
from cjo.runtime.state import ACTIVITY_KINDS, TERMINAL_STATUSES, Activity

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "cjo"
# Adapters and the storage contract read entries back (or make samples): they write no kind.
READERS = ("storage", "testing")

#: The calls that log, by name: the position and keyword of their kind.
LOGGING_CALLS = {
    "Activity": (6, "kind"),
    "activity": (1, "kind"),
    "end": (1, "status"),
    "end_enrollment": (1, "status"),
    "_log": (2, "kind"),
    "_left_out": (2, "kind"),
    "message_activity": (3, "kind"),
}
#: Where a kind comes from outside the source: a delivery feedback entry's kind is its event's
#: name, one of ``FEEDBACK_EVENTS``.
FROM_EVENTS = {("delivery/feedback.py", "name"): FEEDBACK_EVENTS}


class _UnknownKindError(Exception):
    """A kind the scan cannot tell."""


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if not name.startswith(READERS):
            yield name, ast.parse(path.read_text(), name)


def _constants() -> dict[str, str]:
    """Module-level text constants of the package, by name (names bound to two values left
    out)."""
    seen: dict[str, set[str]] = {}
    for _name, module in _modules():
        for node in module.body:
            target, value = (
                (node.targets[0], node.value) if isinstance(node, ast.Assign)
                else (node.target, node.value) if isinstance(node, ast.AnnAssign)
                else (None, None)
            )
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(
                value.value, str
            ):
                seen.setdefault(target.id, set()).add(value.value)
    return {name: next(iter(values)) for name, values in seen.items() if len(values) == 1}


def _kind_argument(call: ast.Call) -> ast.expr | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else None)
    if name not in LOGGING_CALLS:
        return None
    at, keyword = LOGGING_CALLS[name]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[at] if len(call.args) > at else None


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = func.args
    return {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]}


def _resolve(expr: ast.expr, func: ast.FunctionDef | ast.AsyncFunctionDef | None,
             module: str, constants: dict[str, str]) -> set[str]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return (_resolve(expr.body, func, module, constants)
                | _resolve(expr.orelse, func, module, constants))
    if isinstance(expr, ast.Name):
        name = expr.id
        if (module, name) in FROM_EVENTS:
            return set(FROM_EVENTS[(module, name)])
        if func is not None:
            values = [
                node.value for node in ast.walk(func)
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
                and any(isinstance(t, ast.Name) and t.id == name
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
            ]
            if values:
                return set().union(*(_resolve(v, func, module, constants) for v in values))
            if name in _params(func) and func.name in LOGGING_CALLS:
                return set()  # a logging call passing its own kind on: its callers are scanned
        if name in constants:
            return {constants[name]}
    raise _UnknownKindError(f"{module}:{expr.lineno}: cannot tell the activity kind {ast.unparse(expr)}")


def _logged_kinds() -> set[str]:
    constants = _constants()
    kinds: set[str] = set()
    for module, tree in _modules():
        functions = [n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        # Each call with the innermost function holding it.
        owner: dict[int, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for func in sorted(functions, key=lambda f: f.lineno):
            for node in ast.walk(func):
                owner[id(node)] = func
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (arg := _kind_argument(node)) is not None:
                kinds |= _resolve(arg, owner.get(id(node)), module, constants)
    return kinds


def test_every_kind_logged_is_listed_and_every_kind_listed_is_logged() -> None:
    logged = _logged_kinds()
    assert sorted(logged - ACTIVITY_KINDS) == []
    assert sorted(ACTIVITY_KINDS - logged) == []
    assert TERMINAL_STATUSES <= ACTIVITY_KINDS


@pytest.mark.parametrize("kind", sorted(ACTIVITY_KINDS))
def test_each_kind_is_documented(kind: str) -> None:
    assert re.search(rf"(?<!\w){kind}(?!\w)", Activity.__doc__ or ""), (
        f"the Activity docstring does not name the activity kind {kind!r}")
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    assert f"`{kind}`" in architecture, (
        f"docs/architecture.md does not name the activity kind `{kind}`")


def test_the_scan_refuses_a_kind_it_cannot_tell() -> None:
    call = ast.parse("d.activity(e, compute_kind(), None, at)").body[0]
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    with pytest.raises(_UnknownKindError, match="compute_kind"):
        _resolve(_kind_argument(call.value) or ast.Constant(""), None, "x.py", {})
