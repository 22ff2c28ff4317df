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
