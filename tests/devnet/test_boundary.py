"""The product packages (``sv2``, ``tproxy``, ``monitoring``) import nothing from ``devnet``.

``devnet`` holds development oracles; the production image ships without it.
Checked on the source text (AST), so a lazy import inside a function, an
``importlib.import_module("devnet...")`` or an ``__import__`` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("sv2", "tproxy", "monitoring")


def _is_devnet(name: str | None) -> bool:
    return name is not None and (name == "devnet" or name.startswith(("devnet.", "devnet:")))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (they may name devnet freely)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def devnet_references(source: str) -> list[str]:
    """Every import of devnet in ``source``, and every non-docstring string naming a devnet module."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    hits: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [f"line {node.lineno}: import {a.name}" for a in node.names if _is_devnet(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_devnet(node.module):
            hits.append(f"line {node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and _is_devnet(node.value)
        ):
            hits.append(f"line {node.lineno}: string {node.value!r}")
    return hits


def test_the_checker_finds_every_form_of_import() -> None:
    source = '''
"""Docstring naming ``devnet`` is fine."""
import os, devnet
import devnet.pool as p
from devnet.miner import SyntheticMiner
def f():
    """Also fine: devnet.demo."""
    import importlib
    importlib.import_module("devnet.demo")
    return __import__("devnet")
from tproxy.devnet_like import x  # not devnet
'''
    hits = devnet_references(source)
    assert hits == [
        "line 3: import devnet",
        "line 4: import devnet.pool",
        "line 5: from devnet.miner import ...",
        "line 9: string 'devnet.demo'",
        "line 10: string 'devnet'",
    ], hits


@pytest.mark.parametrize("package", PRODUCT_PACKAGES)
def test_product_package_imports_nothing_from_devnet(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    offences = {
        str(f.relative_to(REPO)): hits
        for f in files
        if (hits := devnet_references(f.read_text(encoding="utf-8")))
    }
    assert offences == {}
