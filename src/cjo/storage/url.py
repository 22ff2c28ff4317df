"""Opening a storage from a URL, for command lines and configuration files.

``memory`` (or ``memory://``) is a fresh ``InMemoryStorage``; ``sqlite:///path.db`` and
``postgresql://...`` open the SQL adapters, imported only when asked for so that ``import cjo``
never needs a database driver. A PostgreSQL URL may name the schema cjo's tables are in with a
``schema`` query parameter (``postgresql://app@db/shop?schema=journeys``; default ``cjo``), as
``PostgresStorage(dsn, schema=...)`` does.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cjo.described import redacted
from cjo.errors import StorageError, UsageError
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage

__all__ = ["holds_cjo", "open_storage", "redact_url", "sqlite_path", "storage_kind"]

_SQL_ADAPTERS = {
    "sqlite": ("cjo.storage.sqlite", "SQLiteStorage"),
    "postgresql": ("cjo.storage.postgres", "PostgresStorage"),
}


def storage_kind(url: str) -> str:
    """``memory``, ``sqlite`` or ``postgresql``; raises ``StorageError`` for anything else."""
    if not isinstance(url, str):
        raise UsageError(
            f"a storage URL is a string such as 'memory', 'sqlite:///path.db' or "
            f"'postgresql://user@host/db', got {type(url).__name__}"
        )
    text = url.strip()
    if text in ("memory", "memory://"):
        return "memory"
    scheme, sep, _rest = text.partition("://")
    if sep and scheme in ("sqlite",):
        return "sqlite"
    if sep and scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise StorageError(
        f"unknown storage URL {redact_url(url)!r}: expected 'memory', 'sqlite:///path.db' or "
        "'postgresql://user@host/db'"
    )


def open_storage(url: str) -> Storage:
    """The storage a URL names. The caller closes it (``Storage`` is a context manager). A
    PostgreSQL server that does not answer fails at once, with its reason."""
    kind = storage_kind(url)
    if kind == "memory":
        return InMemoryStorage()
    module_name, class_name = _SQL_ADAPTERS[kind]
    cls = _adapter_class(module_name, class_name, url)
    if kind == "postgresql":
        dsn, schema = _schema_of(url.strip())
        # Refused before connecting; a server that does not answer is then refused by the
        # adapter at once, with its reason.
        importlib.import_module(module_name).check_schema_name(schema)
        postgres: Storage = cls(dsn, schema=schema)
        return postgres
    storage: Storage = cls(url.strip())
    return storage


def holds_cjo(url: str) -> bool:
    """Whether the durable storage ``url`` names already holds cjo's tables, asked without
    creating them (opening it would); False for memory and a private SQLite database."""
    kind = storage_kind(url)
    if kind == "memory":
        return False
    module = _adapter_module(_SQL_ADAPTERS[kind][0], url)
    if kind == "postgresql":
        dsn, schema = _schema_of(url.strip())
        return bool(module.holds_schema(dsn, schema))
    path = sqlite_path(url.strip())
    return path is not None and bool(module.holds_schema(path))


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (None for a private in-memory database); a bad URL raises
    ``StorageError``."""
    name: str = importlib.import_module(_SQL_ADAPTERS["sqlite"][0]).database_name(url)
    return None if name == ":memory:" else name


def _schema_of(url: str) -> tuple[str, str]:
    """The URL without its ``schema`` query parameter (cjo's, not libpq's), and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    if len(schemas) > 1:
        raise StorageError(f"in {redact_url(url)!r}, schema is given {len(schemas)} times")
    if not schemas:
        return url, "cjo"
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[0]


def _adapter_module(module_name: str, url: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        # Either the adapter itself or its driver (psycopg for PostgreSQL) is missing.
        raise StorageError(
            f"cannot open {redact_url(url)}: {module_name} is not available ({exc})"
        ) from exc


def _adapter_class(module_name: str, class_name: str, url: str) -> Any:
    module = _adapter_module(module_name, url)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StorageError(f"cannot open {redact_url(url)}: {module_name} has no {class_name}")
    return cls


def redact_url(url: str) -> str:
    """The URL without a password (nor query values), for messages that end up in logs."""
    return redacted(url)
