"""The method notes in the repository: every ``docs/method.md §…`` citation points at a section."""

from __future__ import annotations

import re

import nbformat

from corelib import paths

ROOT = paths.repo_root()
CITE = re.compile(r"docs/method\.md §(\d+)(?:\.(\d+))?(?:-Q(\d+))?")


def _cited_texts():
    yield "README.md", (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "corelib").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        yield path.name, "\n".join(c.source for c in nb.cells)


def test_every_method_citation_names_a_section_of_docs_method():
    doc = (ROOT / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)[. ]", doc, flags=re.M))
    questions = set(re.findall(r"^\*\*Q(\d+) —", doc, flags=re.M))
    assert {"2.1", "3.7", "3.13", "9"} <= sections and len(questions) >= 16
    cited, missing = 0, []
    for where, text in _cited_texts():
        assert "shared/method.md" not in text, f"{where} cites the method notes outside the repository"
        for major, minor, q in CITE.findall(text):
            cited += 1
            section = f"{major}.{minor}" if minor else major
            if section not in sections or (q and q not in questions):
                missing.append(f"{where}: §{section}{'-Q' + q if q else ''}")
    assert cited > 50 and not missing, missing
