"""An HTML report of a run directory: one page per executed chapter and an index with the metrics.

``corelib report RUN_DIR`` (and ``make demo`` at its end) turns the executed copies that
``corelib run-notebooks`` keeps in ``RUN_DIR/notebooks/`` into ``RUN_DIR/report/``:

- ``index.html``: the chapters in order (link, run time, whether a cell failed) and the headline
  metrics of ``RUN_DIR/metrics.json`` as a table;
- ``<chapter>.html``: the executed notebook rendered by nbconvert, its figures embedded as data
  URIs, so every page opens from the file system without a server (a widget, whose front end is
  absent there, shows the static view its chapter printed below it).

The report folder is the workbench's own (``report.json`` marks it): rebuilding replaces it, and a
``report/`` folder somebody else made is refused, never overwritten.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Union

from . import paths
from .errors import MissingStageError
from .outputs import read_metrics
from .ownership import RunLock, install_folder

REPORT_STAMP = "report.json"


def _chapter_info(nb) -> dict:
    meta = nb.metadata.get("papermill", {})
    failed = bool(meta.get("exception")) or any(
        o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # papermill stamps end_time, and each cell's status, as it goes: a run stopped mid-chapter leaves
    # no end_time and cells still "pending" or "running"
    unfinished = meta.get("end_time") is None or any(
        c.get("metadata", {}).get("papermill", {}).get("status") in ("pending", "running")
        for c in nb.cells if c.cell_type == "code")
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {}))
    title = next((line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.startswith("# ")), "")
    state = "failed" if failed else "unfinished" if unfinished else "ran"
    return {"seconds": meta.get("duration"), "failed": failed, "state": state, "figures": figures, "title": title}


def _metric_rows(metrics: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key in sorted(metrics):
        value = metrics[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _metric_rows(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
    return str(value)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.failed { color: #b00020; font-weight: bold; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def _index_html(run_dir: Path, chapters: list[dict], metrics: list[tuple[str, Any]]) -> str:
    esc = html.escape
    rows = []
    for ch in chapters:
        seconds = f"{ch['seconds']:.0f} s" if isinstance(ch["seconds"], (int, float)) else "–"
        state = ch["state"] if ch["state"] == "ran" else f'<span class="failed">{ch["state"]}</span>'
        rows.append(f'<tr><td><a href="{esc(ch["page"])}">{esc(ch["name"])}</a></td><td>{esc(ch["title"])}</td>'
                    f'<td class="num">{seconds}</td><td class="num">{ch["figures"]}</td><td>{state}</td></tr>')
    metric_rows = "".join(f'<tr><td><code>{esc(k)}</code></td><td class="num">{esc(_fmt(v))}</td></tr>'
                          for k, v in metrics)
    metrics_part = (f"<table><tr><th>metric</th><th>value</th></tr>{metric_rows}</table>" if metrics
                    else "<p>No metrics were recorded (<code>metrics.json</code> is missing or empty).</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>corelib report: {esc(run_dir.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Report of <code>{esc(str(run_dir))}</code></h1>
<p>One page per executed chapter (the copies in <code>notebooks/</code>), figures embedded; the
pages open from the file system.</p>
<h2>Chapters</h2>
<table><tr><th>chapter</th><th>title</th><th>time</th><th>figures</th><th>state</th></tr>{"".join(rows)}</table>
<h2>Headline metrics</h2>
{metrics_part}
</body></html>
"""


OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
"""nbconvert's lab page without the scripts it loads from CDNs (require.js, MathJax, mermaid, the
widget manager): the report opens from the file system, offline, and no chapter needs them."""


def _offline_exporter():
    import jinja2  # lazy: needed only for the report
    from nbconvert import HTMLExporter  # lazy: the notebook stack, needed only for the report

    return HTMLExporter(template_name="lab", template_file="corelib_offline.html.j2",
                        extra_loaders=[jinja2.DictLoader({"corelib_offline.html.j2": OFFLINE_TEMPLATE})])


def write_report(run_dir: Union[str, Path]) -> Path:
    """Write ``RUN_DIR/report/`` (``index.html`` and one page per executed chapter); returns the index.

    The run directory's lock is held while the report is written, so a report is never made of a run
    in progress: it is refused, naming the run, until that run ends. A chapter whose execution did not
    finish (a run that was stopped) is labelled "unfinished", one with an error "failed".

    A report written earlier is replaced (:func:`corelib.ownership.install_folder`): when it holds a
    file that corelib did not write (``notes.md``), the old report is kept whole as
    ``report.replaced-<UTC time>`` instead.

    Raises:
        MissingStageError: ``RUN_DIR/notebooks/`` holds no executed chapter (run ``make demo`` or
            ``corelib run-notebooks --run-dir RUN_DIR`` first).
        NotOwnedError: ``RUN_DIR/report`` exists and was not written by this function.
        RunDirBusyError: a run (``make demo``, ``corelib run-notebooks``, a training stage) is writing
            into ``RUN_DIR`` now.
    """
    import nbformat  # lazy: the notebook stack, needed only to run chapters

    run_dir = paths.resolve_in_repo(run_dir).resolve()
    executed = sorted((run_dir / "notebooks").glob("*.ipynb"))
    if not executed:
        raise MissingStageError(f"{run_dir / 'notebooks'} holds no executed chapter; run `make demo` or "
                                f"`corelib run-notebooks --run-dir {run_dir}` first")
    out = run_dir / "report"
    what, fix = "a report written by corelib", f"remove or rename {out} yourself, or report another run directory"
    markers = [REPORT_STAMP, paths.PARTIAL_MARKER]
    with RunLock(run_dir, what="report"):
        paths.check_owned_tree(out, markers, what, fix)
        partial = run_dir / ".report.partial"
        paths.remove_owned_tree(partial, [paths.PARTIAL_MARKER, REPORT_STAMP], "a partial report of corelib", fix)
        paths.make_partial_dir(partial, "corelib report")
        exporter = _offline_exporter()
        chapters = []
        for path in executed:
            nb = nbformat.read(path, as_version=4)
            # the explorers' outputs are static already; the widget state would only pull in a script
            nb.metadata.pop("widgets", None)
            info = _chapter_info(nb)
            body, _ = exporter.from_notebook_node(nb)
            page = f"{path.stem}.html"
            (partial / page).write_text(body, encoding="utf-8")
            chapters.append({"name": path.stem, "page": page, **info})

        metrics = _metric_rows(read_metrics(run_dir))
        (partial / "index.html").write_text(_index_html(run_dir, chapters, metrics), encoding="utf-8")
        (partial / REPORT_STAMP).write_text(json.dumps({"run_dir": str(run_dir), "chapters": chapters}, indent=1) + "\n")
        os.remove(partial / paths.PARTIAL_MARKER)
        install_folder(partial, out, writer="corelib report", markers=markers, what=what, fix=fix)
    return out / "index.html"
