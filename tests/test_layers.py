"""The data path reads in one direction (DESIGN.md): storage -> ingest -> db -> runner ->
adapters -> runner -> storage. This reads every module's imports (with ``ast``, lazy
imports inside functions included) and holds each package to what it may import, so the
one-way flow stays true as the code grows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each package may import of the project (beyond itself). geometry and config are
# leaves; storage is shared by all; adapters see geometry and storage, never the runner;
# db never sees ingest or the runner; ingest files rejected jobs' manifests through the
# runner's one manifest writer, and imports nothing else of it.
ALLOWED: dict[str, set[str]] = {
    "geometry": set(),
    "config": set(),
    "storage": {"config"},
    "db": {"config", "storage"},
    "adapters": {"config", "storage", "geometry"},
    "ingest": {"config", "storage", "db", "adapters", "runner.publish"},
    "runner": {"config", "storage", "db", "adapters", "geometry"},
}
PACKAGES = {*ALLOWED, "bench", "tests", "migrations", "manage"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every project import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from runner import publish`` is an import of runner.publish
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def _allowed(package: str, module: str) -> bool:
    if module.split(".")[0] == package:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_below_it_on_the_data_path(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in _imports(path)
        if not _allowed(package, module)
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_rules_catch_an_import_up_the_path(tmp_path: Path) -> None:
    """The reader itself: a lazy import of the runner inside an adapter's function is
    found, as is a plain one of db in storage."""
    (tmp_path / "a.py").write_text("def f():\n    from runner.loop import Runner\n")
    (tmp_path / "b.py").write_text("import db.queue\n")
    assert [m for _, m in _imports(tmp_path / "a.py")] == ["runner.loop.Runner"]
    assert [m for _, m in _imports(tmp_path / "b.py")] == ["db.queue"]
    assert not _allowed("adapters", "runner.loop")
    assert not _allowed("storage", "db.queue")
    assert _allowed("ingest", "runner.publish") and not _allowed("ingest", "runner.loop")
