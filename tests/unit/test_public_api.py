from __future__ import annotations

import subprocess
import sys

import cjo
import cjo.errors


def test_all_is_sorted_and_complete():
    assert list(cjo.__all__) == sorted(cjo.__all__)
    for name in cjo.__all__:
        assert hasattr(cjo, name), name


def test_every_error_derives_from_the_root():
    for name in cjo.errors.__all__:
        obj = getattr(cjo.errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, cjo.errors.CjoError), name


def test_import_cjo_does_not_import_optional_drivers():
    code = "import sys, cjo; print(sorted(m for m in ('psycopg', 'psycopg_pool', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _public_names(module: object) -> set[str]:
    import types

    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and name not in ("annotations",)
    }


def test_all_lists_every_public_name_of_the_package():
    # Both ways: nothing exported that is missing, nothing public that is not exported.
    public = _public_names(cjo) - {"__version__"}
    assert public == set(cjo.__all__)


def test_every_error_class_is_exported_from_cjo():
    for name in cjo.errors.__all__:
        assert name in cjo.__all__, name


def test_the_adapter_surface_exports_what_its_module_defines():
    import cjo.abc

    assert len(set(cjo.abc.__all__)) == len(cjo.abc.__all__)
    assert _public_names(cjo.abc) == set(cjo.abc.__all__)


def test_the_adapter_surface_has_the_errors_an_adapter_raises() -> None:
    # An adapter raises these itself (a session used after its transaction, an undecodable
    # record, a lost compare-and-set): cjo.abc, "everything an adapter author needs", has them.
    import cjo.abc

    for name in ("StorageError", "CorruptRecordError", "ConflictError"):
        assert getattr(cjo.abc, name) is getattr(cjo.errors, name), name
        assert name in cjo.abc.__all__, name


def test_the_adapter_surface_encodes_outbox_messages() -> None:
    # A durable adapter stores outbox messages as text: cjo.abc has the codec, as for records.
    from datetime import UTC, datetime

    import pytest

    from cjo.abc import Message, decode_message, encode_message
    from cjo.errors import StorageError

    message = Message(
        "e1:s:1", "ann", "email", "welcome", {"subject": "Hi Ann", "text": "é ✓"}, "welcome", 2,
        "s", "e1", datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC), transactional=True,
        locale="fr", recipient={"email": "ann@example.com", "age": 41, "tags": ["a", "b"]},
        content_version=3, variant="b", offer_id="spring",
    )
    text = encode_message(message)
    assert isinstance(text, str)
    assert decode_message(text) == message
    assert decode_message(text.encode()) == message
    broken = Message("k", "ann", "email", "c", {}, "j", 1, "s", "e",
                     message.created_at, recipient={"score": float("nan")})
    with pytest.raises(StorageError, match="score"):
        encode_message(broken)


def test_the_adapter_surface_stores_activities_as_columns() -> None:
    # A durable adapter stores activity-log entries too: cjo.abc has their columns, as the
    # SQL adapters store them, and the way back.
    from datetime import UTC, datetime

    from cjo.abc import Activity, activity_from_row, activity_row

    entry = Activity(datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC), "ann", "e1", "welcome",
                     2, "mail", "sent", None, "email", "welcome", 3)
    row = activity_row(entry)
    assert all(v is None or isinstance(v, int | str) for v in row)
    assert activity_from_row(row) == entry


def test_an_adapter_without_records_set_aside_still_works_and_says_what_it_lacks() -> None:
    """``records_set_aside`` came after the first adapters: not abstract, so an adapter written
    before it is still instantiated and runs; only the listing raises, naming the adapter."""
    from datetime import UTC, datetime

    import pytest

    from cjo import Engine, ManualClock, StorageError
    from cjo.abc import Storage

    assert "records_set_aside" not in Storage.__abstractmethods__

    class EarlierStorage(cjo.InMemoryStorage):
        records_set_aside = Storage.records_set_aside

    engine = Engine(storage=EarlierStorage(), clock=ManualClock(datetime(2026, 1, 5, tzinfo=UTC)))
    engine.identify("c", {"a": 1})
    assert engine.profile("c") is not None
    with pytest.raises(StorageError, match="EarlierStorage does not implement records_set_aside"):
        engine.records_set_aside()
