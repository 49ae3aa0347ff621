"""Rules of the tree's shape that review cannot keep by itself (issue 9).

* No test module imports another test module or a conftest: shared helpers live in
  ``tests/helpers/`` (or in a conftest's fixtures, which pytest injects).
* ``bench/`` imports nothing from ``tests/`` (benches use ``devnet``).
* No function of the product or of ``devnet``/``bench`` is longer than 80 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _python_files(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (REPO / r).rglob("*.py"))


def test_no_test_module_imports_a_test_module_or_conftest() -> None:
    offenders = []
    for path in _python_files("tests"):
        for module in _imports(path):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, offenders


def test_bench_imports_nothing_from_tests() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {m}"
        for path in _python_files("bench")
        for m in _imports(path)
        if m == "tests" or m.startswith("tests.")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("root", ["sv2", "tproxy", "monitoring", "devnet", "bench", "tests"])
def test_no_function_is_longer_than_80_lines(root: str) -> None:
    long = []
    for path in _python_files(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
