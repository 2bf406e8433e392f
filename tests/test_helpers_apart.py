"""Test modules share helpers through modules meant for it (conftest, tests/processes.py,
tests/noop_jobs.py, tests/runs.py, ...), never by importing one another: a test module
imported by another runs its tests' imports twice and ties two files' fates together."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from tests import x`` counts as ``tests.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "tests" if node.level else node.module or ""
            if node.level and node.module:
                base = f"tests.{node.module}"
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if m.startswith("tests.test_"))
        for path in sorted(TESTS.glob("test_*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_check_sees_every_spelling_of_such_an_import(tmp_path: Path) -> None:
    spellings = [
        "import tests.test_queue",
        "from tests.test_queue import claim",
        "from tests import test_queue",
        "from . import test_queue",
        "from .test_queue import claim",
        "def f():\n    from tests.test_queue import claim",
    ]
    for source in spellings:
        path = tmp_path / "test_x.py"
        path.write_text(source + "\n")
        assert "tests.test_queue" in _imported_modules(path), source
