"""Every citation of ``docs/math.md §N.M`` in the repository points at an existing section.

``docs/math.md`` numbers its sections (``## 3 …``, ``### 3.2 …``), each preceded by an anchor
``<a id="s3.2"></a>``. Code and docs cite them as ``docs/math.md §3.2``. A file that cites math.md
may add more sections in the same text (``§3.2, §3.5``), and math.md cross-references its own
sections by ``§N.M`` and ``(#sN.M)`` links. All of these must resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATH = ROOT / "docs" / "math.md"
SELF = Path(__file__).resolve()  # holds deliberately dangling examples
SUFFIXES = {".py", ".md", ".rst", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".ini"}
SKIP_DIRS = {".git", "runs", "node_modules", "build", "dist", "__pycache__"}

HEADING = re.compile(r"^#{2,6} (\d+(?:\.\d+)*) \S", re.M)
ANCHOR = re.compile(r'^<a id="s(\d+(?:\.\d+)*)"></a>\n#{2,6} (\d+(?:\.\d+)*) ', re.M)
SECTION_REF = re.compile(r"§\s*(\d+(?:\.\d+)*)")
LINK_REF = re.compile(r"\(#s(\d+(?:\.\d+)*)\)")


def sections(text: str) -> set[str]:
    """Section numbers of the numbered headings of a math.md text."""
    return set(HEADING.findall(text))


def dangling(text: str, known: set[str]) -> list[str]:
    """The ``§N.M`` references of ``text`` that name no known section (a trailing period, as at
    the end of a sentence, is not part of the number)."""
    return [ref for ref in (r.rstrip(".") for r in SECTION_REF.findall(text)) if ref not in known]


def _citing_files() -> list[Path]:
    out = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.suffix not in SUFFIXES or not path.is_file() or path in (MATH, SELF):
            continue
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if "math.md" in text:
            out.append(path)
    return out


KNOWN = sections(MATH.read_text(encoding="utf-8"))


def test_math_doc_has_numbered_sections():
    assert {"1", "2", "3", "4", "5", "6", "7"} <= KNOWN
    assert {"1.2", "2.3", "3.2", "3.5", "3.7", "3.8", "4.2", "5.2", "6.1", "7.3"} <= KNOWN


def test_every_numbered_heading_has_its_anchor():
    text = MATH.read_text(encoding="utf-8")
    anchored = ANCHOR.findall(text)
    assert all(a == h for a, h in anchored), [p for p in anchored if p[0] != p[1]]
    assert {h for _, h in anchored} == KNOWN
    assert len(anchored) == len(KNOWN), "a section number is used twice"


def test_internal_references_resolve():
    text = MATH.read_text(encoding="utf-8")
    assert dangling(text, KNOWN) == []
    assert [ref for ref in LINK_REF.findall(text) if ref not in KNOWN] == []


def test_citations_resolve():
    bad = {}
    for path in _citing_files():
        refs = dangling(path.read_text(encoding="utf-8"), KNOWN)
        if refs:
            bad[str(path.relative_to(ROOT))] = refs
    assert bad == {}, f"citations of docs/math.md sections that do not exist: {bad}"


def test_a_dangling_citation_is_caught():
    # The checker itself: a made-up section fails, real ones (and a sentence's full stop) pass.
    assert dangling("see docs/math.md §3.2 and §9.9.", KNOWN) == ["9.9"]
    assert dangling("(docs/math.md §3.7.)", KNOWN) == []
    assert dangling("docs/math.md §3.10", {"3.1"}) == ["3.10"]


def test_no_file_cites_the_shared_math_file():
    """The project cites its own statement of the math (docs/math.md), not a file outside it."""
    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(p.relative_to(root))
        for folder in ("trpl_math", "verification", "figures", "benchmarks", "tests", "docs")
        for p in (root / folder).rglob("*")
        if p.suffix in (".py", ".md")
        and "results/runs" not in str(p)
        and p.name != "test_math_doc.py"
        and re.search(r"(?<![\w/])MATH\.md", p.read_text(errors="ignore"))
    ]
    assert offenders == []
