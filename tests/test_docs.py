"""The documentation: every ``docs/method.md §…`` and ``docs/baselines.md §…`` citation points at a section,
nothing cites the notes' copies outside the repository, the published numbers of ``corelib.published``
appear in the sections their records cite; the README is a landing page (the commands and the table of
contents on its first screen, no dated timing prose), and every relative link of the README, docs/ and
benchmarks/README.md names a file of the repository and a heading that exists."""

from __future__ import annotations

import re

import nbformat
import pytest

from corelib import paths
from corelib import published as P

ROOT = paths.repo_root()
CITE = re.compile(r"docs/method\.md §(\d+)(?:\.(\d+))?(?:-Q(\d+))?")

_SECTION = r"\d+b?(?:\.\d+)?"  # 3, 3.2, 1b, 1b.3
CITE_BASELINES = re.compile(rf"docs/baselines\.md (§{_SECTION}(?:(?:\s*[-–]\s*§?|,\s*§){_SECTION})*)")
"""A citation and the sections it names: ``§3.3``, ``§1.1-1.2, §1b.1``, ``§1,\\n§1b`` (ranges name both ends)."""
NAMED_BASELINES = re.compile(r"([\w./-]*)baselines\.md")
"""Any file name ending in ``baselines.md``; its prefix must be ``docs/`` (``../docs/`` in a link from docs/, or
a figure's ``07_``)."""


def _notebook_text(path):
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells)


DOCS = ["README.md", "docs/user-guide.md", "docs/method.md", "docs/baselines.md", "benchmarks/README.md"]
"""The pages a reader opens; their links are checked."""
FIRST_SCREEN = 40
"""Lines of the README a reader sees before scrolling."""


def _cited_texts():
    yield "README.md", (ROOT / "README.md").read_text()
    yield "docs/user-guide.md", (ROOT / "docs" / "user-guide.md").read_text()
    for path in sorted((ROOT / "corelib").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        yield path.name, _notebook_text(path)


def _baselines_cited_texts():
    yield from _cited_texts()
    for path in sorted((ROOT / "figures").glob("*.md")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name != "test_docs.py":  # this file names the forbidden spellings
            yield str(path.relative_to(ROOT)), path.read_text()


def _sections(doc: str) -> set[str]:
    return set(re.findall(rf"^##+ ({_SECTION})[. ]", doc, flags=re.M))


def _section_text(doc: str, section: str) -> str:
    """The text of ``section`` (``3.7``, ``1b.5``, ``8``) up to the next heading of its level or above."""
    heading = re.search(rf"^(#+) {re.escape(section)}[. ].*$", doc, flags=re.M)
    assert heading, f"no section {section}"
    level = len(heading.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.M).search(doc, heading.end())
    return doc[heading.end():end.start() if end else len(doc)]


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


def test_every_baselines_citation_names_a_section_of_docs_baselines():
    doc = (ROOT / "docs" / "baselines.md").read_text()
    sections = _sections(doc)
    # the numbering of the notes the code was written against, which the citations rely on
    assert {"0", "1", "1.1", "1.9", "1b", "1b.1", "1b.6", "2", "2.4", "3", "3.1", "3.8", "4", "4.6", "5",
            "6"} <= sections
    cited, missing, outside = 0, [], []
    for where, text in _baselines_cited_texts():
        outside += [f"{where}: {prefix}baselines.md" for prefix in NAMED_BASELINES.findall(text)
                    if prefix not in ("docs/", "../docs/") and not prefix.endswith("_")]
        for group in CITE_BASELINES.findall(text):
            for section in re.findall(_SECTION, group):
                cited += 1
                if section not in sections:
                    missing.append(f"{where}: docs/baselines.md §{section}")
    assert not outside, f"cite the baselines as docs/baselines.md, not: {outside}"
    assert cited > 60 and not missing, missing


@pytest.mark.parametrize("note", ["method", "baselines"])
def test_published_numbers_appear_in_the_section_they_cite(note):
    doc = (ROOT / "docs" / f"{note}.md").read_text()
    prefix = f"docs/{note}.md §"
    records = [r for r in P.PUBLISHED if r.source.startswith(prefix)]
    assert len(records) > 50
    texts: dict[str, set[str]] = {}
    absent = []
    for r in records:
        section = r.source[len(prefix):].partition(":")[0]
        if section not in texts:
            texts[section] = set(re.findall(r"\d+(?:\.\d+)?", _section_text(doc, section)))
        for name, value in r.metrics.items():
            if value is not None and f"{value:.{r.decimals}f}" not in texts[section]:
                absent.append(f"{r.method} on {r.task} ({r.backbone}): {name} {value} not in {prefix}{section}")
    assert not absent, absent


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)}


def test_the_readme_first_screen_holds_the_commands_and_the_contents():
    readme = (ROOT / "README.md").read_text()
    screen = "\n".join(readme.splitlines()[:FIRST_SCREEN])
    for command in ("make demo", "make test", "make test-fast"):
        assert re.search(rf"^{command}\b", screen, flags=re.M), f"{command} is not on the README's first screen"
    assert "runs/demo/report/index.html" in screen, "the first screen says what make demo produces"
    assert re.search(r"^## Contents$", screen, flags=re.M), "no table of contents on the README's first screen"
    contents = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)", screen, flags=re.M)
    assert len(contents) >= 5 and set(contents) <= _anchors(readme), contents
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"\bmake ([a-z][\w-]*)", readme)):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README names make {target}, the Makefile has none"


def test_the_readme_holds_no_dated_timing_prose():
    dated = [line for line in (ROOT / "README.md").read_text().splitlines()
             if re.search(r"\b20\d\d-\d\d\b", line) or re.search(r"\d\s*min\b.*\d\s*s\b", line)]
    assert not dated, f"timings and dates belong to benchmarks/README.md: {dated}"


@pytest.mark.parametrize("page", DOCS)
def test_every_relative_link_names_a_file_and_a_heading(page):
    text = (ROOT / page).read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S))
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (ROOT / page).parent / target if target else ROOT / page
        if not path.exists():
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
            broken.append(link)
    assert not broken, f"{page}: {broken}"
