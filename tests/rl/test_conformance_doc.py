"""docs/conformance.md: every test it names exists, and every table row names one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "conformance.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")


def _defined(path: Path) -> set[str]:
    """``name`` and ``Class::method`` for every test function and class in ``path``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return names


def test_every_named_test_exists():
    refs = REF.findall(PAGE.read_text())
    assert len(refs) > 40
    missing = [
        f"{f}::{n}" for f, n in refs if not (ROOT / f).exists() or n not in _defined(ROOT / f)
    ]
    assert not missing, missing


def test_every_table_row_names_a_test():
    rows = [
        line
        for line in PAGE.read_text().splitlines()
        if line.startswith("|") and not line.startswith("|---") and "| test |" not in line
    ]
    assert len(rows) > 30
    assert [r for r in rows if not REF.search(r)] == []
