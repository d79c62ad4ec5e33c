"""Tables as text for a thesis: GitHub-flavoured Markdown and booktabs LaTeX.

The writer layer (:mod:`corelib.outputs`) and the results layer (:mod:`corelib.results`) both format
tables; the formatting lives here, below both, so that neither reaches up into the other.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def markdown_table(columns: Iterable[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (floats with 4 significant digits)."""
    cols = [str(c) for c in columns]

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


GROUP_SEP = " · "
"""Separates a column's group from its name (``task · metric``, as :func:`pair_table` names them)."""


def to_latex(table, *, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table of ``table`` (numbers with one decimal).

    Columns named ``group · name`` (the tasks of :func:`pair_table`) get a two-row header, as the
    paper's tables have it: each group once over its columns (``\\multicolumn`` and ``\\cmidrule``),
    the names below.
    """
    cols = [str(c) for c in table.columns]
    esc = lambda s: str(s).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%").replace("→", r"$\rightarrow$").replace("·", r"$\cdot$")  # noqa: E731

    def cell(v) -> str:
        return f"{v:.1f}" if isinstance(v, float) else esc(v)

    header = [r"\toprule"]
    if any(GROUP_SEP in c for c in cols):
        groups: list[tuple[str, int, int]] = []  # (group, first column, last column), 1-based
        names = []
        for i, c in enumerate(cols, 1):
            group, sep, name = c.partition(GROUP_SEP) if GROUP_SEP in c else ("", "", c)
            names.append(name)
            if groups and groups[-1][0] == group and group:
                groups[-1] = (group, groups[-1][1], i)
            else:
                groups.append((group, i, i))
        header.append(" & ".join(r"\multicolumn{%d}{c}{%s}" % (b - a + 1, esc(g)) if g else "" for g, a, b in groups) + r" \\")
        header.append(" ".join(r"\cmidrule(lr){%d-%d}" % (a, b) for g, a, b in groups if g))
        header.append(" & ".join(esc(n) for n in names) + r" \\")
    else:
        header.append(" & ".join(esc(c) for c in cols) + r" \\")
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" + "r" * (len(cols) - 1) + "}",
             *header, r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
