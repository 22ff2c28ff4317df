"""Every ```python block in README.md and docs/*.md runs.

The blocks of one page run in order, in one shared namespace (a fresh module), in a temporary
working directory, so a page reads like one program. A block opts out only with an explicit
marker on its fence, ```python no-run; any other info string after ``python`` is an error, so a
typo cannot silently skip a block. Tracebacks point at the page and line of the Markdown file.

The storage adapter written out in docs/storage.md also runs the whole storage contract.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import attrs
import pytest

from cjo.engine import Engine
from cjo.storage.base import Storage
from cjo.testing import StorageContract

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
NO_RUN = "no-run"
PYTHON_ALIASES = frozenset({"py", "py3", "python3", "Python", "ipython"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<info>[^`]*)$")


@attrs.frozen
class Block:
    page: Path
    line: int  # 1-based line of the first line of code
    info: str  # the fence's info string, e.g. "python" or "python no-run"
    code: str

    @property
    def runs(self) -> bool:
        return self.language == "python" and NO_RUN not in self.flags

    @property
    def language(self) -> str:
        words = self.info.split()
        return words[0] if words else ""

    @property
    def flags(self) -> list[str]:
        return self.info.split()[1:]


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (indented fences, as in lists, included)."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, ticks, info = m["indent"], m["ticks"], m["info"].strip()
        close = re.compile(rf"^{re.escape(indent)}{ticks[0]}{{{len(ticks)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: code block is never closed")
        out.append(Block(page, i + 2, info, "\n".join(body) + "\n"))
        i = j + 1
    return out


def run_page(page: Path, workdir: Path) -> types.ModuleType:
    """Run the page's Python blocks in order in one module namespace, in ``workdir``.
    Storages the page leaves open (its own, or its engines') are closed afterwards."""
    name = "cjo_docs_" + re.sub(r"\W", "_", page.stem)
    module = types.ModuleType(name)
    module.__file__ = str(page)
    sys.modules[name] = module  # attrs, dataclasses and pickling look classes up by module
    cwd = Path.cwd()
    try:
        os.chdir(workdir)
        for block in blocks(page):
            if not block.runs:
                continue
            # Pad with blank lines so that tracebacks give the line in the Markdown file.
            source = "\n" * (block.line - 1) + block.code
            exec(compile(source, str(page), "exec"), module.__dict__)
    finally:
        os.chdir(cwd)
        sys.modules.pop(name, None)
        for value in list(module.__dict__.values()):
            storage = value.storage if isinstance(value, Engine) else value
            if isinstance(storage, Storage):
                storage.close()
    return module


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_runs(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_fences_are_well_formed(page: Path) -> None:
    # A block that is not tagged exactly "python" would silently not run.
    for block in blocks(page):
        fence = f"{page.name}:{block.line - 1}"
        assert block.language not in PYTHON_ALIASES, (
            f"{fence}: tag Python code ```python, not ```{block.language}"
        )
        if block.language == "python":
            unknown = [flag for flag in block.flags if flag != NO_RUN]
            assert not unknown, f"{fence}: unknown fence flag(s) {unknown}; the one flag is {NO_RUN!r}"


def test_the_pages_hold_python_that_runs() -> None:
    counts = {_page_id(p): sum(b.runs for b in blocks(p)) for p in PAGES}
    assert counts["README.md"] >= 1
    assert sum(counts.values()) >= 20, counts


def test_the_block_parser(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    text = (
        "Intro\n"
        "```python\nx = 1\n```\n"
        "- a list item:\n\n"
        "  ```python no-run\n  raise SystemExit\n  ```\n"
        "````markdown\n```python\nnot a block of its own\n```\n````\n"
        "```bash\necho hi\n```\n"
    )
    page.write_text(text, encoding="utf-8")
    found = [(b.line, b.info, b.runs, b.code) for b in blocks(page)]
    assert found == [
        (3, "python", True, "x = 1\n"),
        (8, "python no-run", False, "raise SystemExit\n"),
        (11, "markdown", False, "```python\nnot a block of its own\n```\n"),
        (16, "bash", False, "echo hi\n"),
    ]


# --- the adapter of docs/storage.md passes the storage contract ------------------------------


@pytest.fixture(scope="module")
def storage_page(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    return run_page(ROOT / "docs" / "storage.md", tmp_path_factory.mktemp("storage_md"))


class TestDocsStorageAdapter(StorageContract):
    """The adapter written out in docs/storage.md, run through the whole contract with the
    hooks of the page's own ``TestDictStorage``."""

    supports_concurrency = True

    @pytest.fixture(autouse=True)
    def _page(self, storage_page: types.ModuleType) -> None:
        page_tests = storage_page.TestDictStorage
        assert issubclass(page_tests, StorageContract)
        assert page_tests.supports_concurrency is self.supports_concurrency
        self.page_tests = page_tests()

    def make_storage(self) -> Storage:
        self.page_tests.tmp_path = self.tmp_path
        storage: Storage = self.page_tests.make_storage()
        return storage

    def corrupt_record(self, storage: Storage, customer_id: str) -> None:
        self.page_tests.corrupt_record(storage, customer_id)


def test_the_adapter_verbs_table_names_every_abstract_method() -> None:
    from cjo.abc import CustomerSession

    page = (ROOT / "docs" / "storage.md").read_text()
    section = page[page.index("## Writing your own adapter"):]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`(?:CustomerSession\.)?(\w+)", table))
    abstract = Storage.__abstractmethods__ | CustomerSession.__abstractmethods__
    assert sorted(abstract - named) == []
    # What a session must carry besides its methods: the engine reads its customer id.
    declared = set(CustomerSession.__annotations__)
    assert declared == {"customer_id"}
    assert sorted(declared - named) == [], "a session's attributes are in the table too"


def test_the_adapter_of_the_storage_page_needs_only_cjo_and_cjo_abc() -> None:
    """An adapter author finds all of cjo they need in ``cjo`` and ``cjo.abc`` (docs/api.md:
    the rest of the package may change between 0.x releases), the erasure rule included."""
    import ast

    page = ROOT / "docs" / "storage.md"
    section = page.read_text(encoding="utf-8").split("## Writing your own adapter")[1]
    adapter = next(b for b in blocks(page) if b.runs and "class DictStorage" in b.code)
    assert adapter.code in section
    modules = {
        node.module for node in ast.walk(ast.parse(adapter.code))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cjo")
    }
    assert "cjo.abc" in modules and modules <= {"cjo", "cjo.abc"}, modules


def test_the_api_page_lists_exactly_the_public_names() -> None:
    """docs/api.md names every export of ``cjo`` (in backticks), and every name it gives as
    one of ``cjo``'s exports in its tables' first column exists."""
    import cjo

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    first_cells = [line.split("|")[1] for line in page.splitlines()
                   if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([A-Za-z_]+)`", cell)}
    assert set(cjo.__all__) - listed == set(), "exported but not on docs/api.md"
    assert listed - set(cjo.__all__) == set(), "on docs/api.md but not exported"
