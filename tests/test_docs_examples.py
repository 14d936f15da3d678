"""Every ```python block of the README and of the core's docs pages runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "README.md",
    "docs/divergences.md",
    "docs/projections.md",
    "docs/entropy.md",
    "docs/torch_layer.md",
]


def _blocks(page: str) -> list[tuple[str, str]]:
    path = ROOT / page
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [(f"{page}#{i}", code) for i, code in enumerate(found)]


CASES = [case for page in PAGES for case in _blocks(page)]


def test_pages_have_examples() -> None:
    assert len(_blocks("README.md")) >= 4


@pytest.mark.parametrize(("name", "code"), CASES, ids=[name for name, _ in CASES])
def test_example_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})
