"""What an installed cjo needs: declared dependencies, a license, one version, clear extras."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import cjo

ROOT = Path(__file__).resolve().parents[2]
# The package as imported: the source tree in a checkout, site-packages when run installed.
SRC = Path(cjo.__file__).resolve().parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# Extras for users; "dev" is the project's own tooling and is never installed with cjo.
USER_EXTRAS = {name: reqs for name, reqs in PROJECT["optional-dependencies"].items()
               if name != "dev"}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module imported -> the source files importing it (stdlib and cjo left out)."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "cjo" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(SRC.parent)))
    return found


def test_every_module_cjo_imports_comes_from_a_declared_dependency_or_user_extra() -> None:
    declared = {_dist_name(r) for r in PROJECT["dependencies"]}
    for reqs in USER_EXTRAS.values():
        declared |= {_dist_name(r) for r in reqs}
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _third_party_imports().items()
        if not {d.lower().replace("_", "-") for d in providers.get(module, [])} & declared
    }
    assert undeclared == {}, f"imported but not a dependency nor a user extra: {undeclared}"


def test_the_time_zone_database_is_a_dependency_on_every_platform() -> None:
    # Waits, quiet hours and caps read customers' zones: a container without the system's
    # zoneinfo (slim and distroless images) could not even import cjo without tzdata.
    tzdata = [r for r in PROJECT["dependencies"] if _dist_name(r) == "tzdata"]
    assert tzdata and all(";" not in r for r in tzdata), tzdata


def test_import_cjo_loads_no_optional_dependency() -> None:
    optional = {_dist_name(r) for reqs in USER_EXTRAS.values() for r in reqs}
    providers = importlib.metadata.packages_distributions()
    code = "import sys, cjo, cjo.cli; print('\\n'.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    pulled = sorted(
        name for name in loaded
        if "." not in name
        and {d.lower().replace("_", "-") for d in providers.get(name, [])} & optional
    )
    assert pulled == []


@pytest.mark.parametrize(
    ("use", "blocked", "extra"),
    [
        ("import cjo.storage.postgres", "psycopg", "cjo[postgres]"),
        ("import cjo.testing", "pytest", "cjo[testing]"),
        # Imported directly too: cjo.testing's docstring names it as ChannelContract's home.
        ("import cjo.channels.contract", "pytest", "cjo[testing]"),
        # httpx is imported when the channel is made, not with the module.
        ("import cjo; cjo.WebhookChannel('https://example.invalid/', 'secret')", "httpx",
         "cjo[webhook]"),
    ],
)
def test_a_missing_extra_is_named_on_import(use: str, blocked: str, extra: str) -> None:
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    code = f"import sys; sys.modules[{blocked!r}] = None; {use}"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert f'pip install "{extra}"' in result.stderr


def test_the_license_ships_with_its_declared_kind() -> None:
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")


def test_the_version_is_the_packages_version() -> None:
    assert cjo.__version__ == PROJECT["version"]


def test_the_type_marker_is_in_the_package() -> None:
    assert (SRC / "py.typed").is_file()


def _public_functions() -> dict[str, object]:
    """Every function and method (inherited ones included) of what ``cjo`` exports."""
    found: dict[str, object] = {}
    for name in cjo.__all__:
        value = getattr(cjo, name)
        if inspect.isfunction(value):
            found[name] = value
        elif inspect.isclass(value):
            for attribute in dir(value):
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                member = inspect.getattr_static(value, attribute)
                member = getattr(member, "__func__", member)  # staticmethod, classmethod
                if inspect.isfunction(member):
                    found[f"{name}.{attribute}"] = member
    return found


def test_no_public_function_returns_any() -> None:
    # A user's `mypy --strict` refuses to return an Any from a typed function, so a builder
    # typed `-> Any` breaks code such as `return performed("x").within(days=30)`.
    untyped = sorted(
        name for name, function in _public_functions().items()
        if getattr(function, "__annotations__", {}).get("return") in ("Any", Any)
    )
    assert untyped == []
