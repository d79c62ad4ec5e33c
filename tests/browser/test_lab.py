"""A newcomer's path through JupyterLab, in headless Chromium (``make test-browser``).

After a smoke demo, chapters 05 and 06 are opened from the lab as shipped (empty ``RUN_DIR``:
they must study the demo's networks and train nothing), run with Run All on the ``corelib``
kernel, and checked: no error output, every figure rendered, a progress bar seen, the explorers
re-render when each of their controls changes (compared pixel by pixel), no console error. Then the
notebook is saved, its kernel shut down, and it is reopened: the explorers must show their last view
from the saved widget state. Last, the HTML report of the demo opens from the file system.

The tests run in order and share the lab; each writes screenshots to ``runs/browser/``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

pytestmark = pytest.mark.browser

CHAPTERS = ("05_gradcam", "06_umap_clusters")
RUN_ALL_S = 900
"""Upper bound of one chapter's Run All (about 1.5 min each on the 2-core CPU)."""
RENDER_S = 120
"""Upper bound of one explorer re-render (about 1 s)."""

NOTEBOOK_STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.content.model || !w.sessionContext) return null;
  const cells = w.content.model.cells;
  let pending = 0, code = 0;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    code++;
    if (c.executionCount === null) pending++;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
  }
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return {pending, code, errors, status: kernel ? kernel.status : 'none',
          kernel: w.sessionContext.kernelDisplayName, dirty: w.context.model.dirty, path: w.context.path};
}"""
PROGRESS_SHOWN = "() => document.querySelectorAll('.jp-OutputArea .widget-hprogress, .jp-OutputArea .widget-progress').length"
RENDERED_OUTPUTS = """async () => {
  // the lab attaches only the cells near the viewport: scroll to each cell with outputs, then look
  const nb = window.jupyterapp.shell.currentWidget.content;
  const report = [];
  for (let i = 0; i < nb.widgets.length; i++) {
    const cell = nb.widgets[i];
    if (cell.model.type !== 'code' || !cell.model.outputs.length) continue;
    const expected = cell.model.outputs.toJSON().filter(o => o.data && o.data['image/png']).length;
    await nb.scrollToItem(i, 'start');
    let figures = [];
    for (let t = 0; t < 100; t++) {
      figures = Array.from(cell.node.querySelectorAll('.jp-OutputArea-output img:not(.widget-image)'));
      if (figures.length >= expected && figures.every(im => im.complete && im.naturalWidth > 0)) break;
      await new Promise(r => setTimeout(r, 100));
    }
    report.push({cell: i, expected, rendered: figures.filter(im => im.complete && im.naturalWidth > 0).length,
                 widgetError: cell.node.textContent.includes('Error displaying widget')});
  }
  return report;
}"""
LAST_CELL = "async () => { const nb = window.jupyterapp.shell.currentWidget.content; await nb.scrollToItem(nb.widgets.length - 1, 'start'); }"
WATCH_STATUS = """(el) => { window.__corelibStatus = window.__corelibStatus || [];
  new MutationObserver(() => window.__corelibStatus.push(el.textContent)).observe(
    el, {childList: true, subtree: true, characterData: true}); }"""


class Console:
    """Console errors and uncaught exceptions of a page (written to ``runs/browser/console.log``)."""

    def __init__(self, page, out_dir, name: str) -> None:
        self.errors: list[str] = []
        self.log = out_dir / "console.log"
        self.name = name
        page.on("console", self._message)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _message(self, msg) -> None:
        with open(self.log, "a") as f:
            f.write(f"[{self.name}] {msg.type}: {msg.text}\n")
        if msg.type == "error":
            self.errors.append(msg.text)


@pytest.fixture(scope="module")
def context(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def opened(lab, context, out_dir):
    """The chapters as run in the lab: {chapter: (page, console)}, filled by test_run_all."""
    (out_dir / "console.log").write_text("")
    return {}


def _open_notebook(context, lab, out_dir, path: str, name: str):
    page = context.new_page()
    console = Console(page, out_dir, name)
    page.goto(lab.open_url(path))
    page.wait_for_function(NOTEBOOK_STATE, timeout=120_000)
    # the notebook's kernelspec names the kernel make registers; a missing one would open a chooser
    page.wait_for_function(f"() => ({NOTEBOOK_STATE})().status === 'idle'", timeout=120_000)
    state = page.evaluate(NOTEBOOK_STATE)
    assert state["kernel"] == "Python (corelib)", state
    return page, console


def _run_all(page, chapter: str) -> dict:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    t0, progress_seen = time.monotonic(), 0
    while True:
        state = page.evaluate(NOTEBOOK_STATE)
        progress_seen = max(progress_seen, page.evaluate(PROGRESS_SHOWN))
        assert not state["errors"], f"{chapter}: error output {state['errors']}"
        if state["pending"] == 0 and state["status"] == "idle":
            break
        assert time.monotonic() - t0 < RUN_ALL_S, f"{chapter}: Run All still running after {RUN_ALL_S} s: {state}"
        time.sleep(0.25)
    return {"seconds": time.monotonic() - t0, "progress_seen": progress_seen}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_run_all_uses_the_demo_networks_and_renders_everything(chapter, lab, context, opened, out_dir):
    page, console = _open_notebook(context, lab, out_dir, f"notebooks/{chapter}.ipynb", chapter)
    opened[chapter] = (page, console)
    result = _run_all(page, chapter)
    (out_dir / f"{chapter}.timing.json").write_text(json.dumps(result))
    streams = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.model.cells.get(3) &&
      Array.from({length: window.jupyterapp.shell.currentWidget.content.model.cells.length}, (_, i) =>
        window.jupyterapp.shell.currentWidget.content.model.cells.get(i)).filter(c => c.type === 'code')
        .flatMap(c => c.outputs.toJSON()).filter(o => o.output_type === 'stream').map(o => o.text).join('')""")
    (out_dir / f"{chapter}.stdout.txt").write_text(streams)  # what the chapter printed (its numbers)
    assert "uses the networks of `make demo`" in streams, streams[:3000]
    assert "no checkpoint of chapter" not in streams, "the chapter trained quick networks although the demo has them"
    assert result["progress_seen"] > 0, "no progress bar was seen during Run All"
    outputs = page.evaluate(RENDERED_OUTPUTS)
    assert sum(o["expected"] for o in outputs) >= 4, outputs
    assert all(o["rendered"] == o["expected"] for o in outputs), f"figures not rendered: {outputs}"
    assert not any(o["widgetError"] for o in outputs), outputs
    page.screenshot(path=str(out_dir / f"{chapter}_run_all.png"), full_page=False)
    assert not console.errors, console.errors
    # make lab's settings: an offline lab does not ask to fetch Jupyter's news over the chapter
    toasts = page.locator(".Toastify__toast").all_inner_texts()
    assert not any("news" in t.lower() for t in toasts), f"the lab shows {toasts} (LAB_SETTINGS not installed?)"


def _explorer(page, kind: str):
    page.evaluate(LAST_CELL)  # the explorers end their chapters
    explorer = page.locator(f".corelib-{kind}")
    explorer.scroll_into_view_if_needed()
    explorer.locator("img.corelib-view").wait_for()
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0",
                           arg=explorer.locator("img.corelib-view").element_handle())
    return explorer


def _changes_view(page, explorer, what: str, action) -> bytes:
    """Do ``action``; the explorer must re-render (new image, "computing…" cleared) and the
    rendered pixels must differ. Returns the new view's screenshot."""
    img = explorer.locator("img.corelib-view")
    before_src, before = img.get_attribute("src"), img.screenshot()
    action()
    try:
        page.wait_for_function(
            """([el, src, status]) => el.getAttribute('src') !== src && el.complete && el.naturalWidth > 0
                                     && !status.textContent.includes('computing')""",
            arg=[img.element_handle(), before_src, explorer.locator(".corelib-status").element_handle()],
            timeout=RENDER_S * 1000)
    except Exception as e:  # playwright's TimeoutError: say which control did nothing
        raise AssertionError(f"the explorer did not re-render when the {what} changed") from e
    after = img.screenshot()
    assert after != before, f"the explorer shows the same image after the {what} changed"
    # natural size: the browser shows the PNG's own pixels, not a stretched copy
    shown, natural = img.evaluate("el => [el.clientWidth, el.naturalWidth]")
    assert shown == natural, f"the view is scaled: {shown} px shown for {natural} px"
    return after


def _select(explorer, label: str):
    return explorer.locator(f".widget-dropdown:has(label:text-is('{label}')) select")


def _pick_other(select) -> None:
    values = select.evaluate("s => Array.from(s.options).map(o => o.value)")
    current = select.evaluate("s => s.value")
    select.select_option(next(v for v in values if v != current))


def test_rank_list_explorer_reacts_to_every_control(opened, out_dir):
    page, console = opened["05_gradcam"]
    ex = _explorer(page, "rank-list-explorer")
    page.evaluate(WATCH_STATUS, ex.locator(".corelib-status").element_handle())
    assert re.search(r"of 0–\d+ \(\d+ queries\)", ex.inner_text()), ex.inner_text()
    query = ex.locator(".widget-text:has(label:text-is('query')) input")
    _changes_view(page, ex, "query (next ▶)", lambda: ex.locator("button", has_text="next ▶").click())
    _changes_view(page, ex, "query (typed)", lambda: (query.fill("0"), query.press("Enter")))
    _changes_view(page, ex, "overlay (off)", lambda: ex.locator(".widget-checkbox input").click())
    _changes_view(page, ex, "overlay (on)", lambda: ex.locator(".widget-checkbox input").click())  # the branch needs them
    _changes_view(page, ex, "branch", lambda: _pick_other(_select(ex, "branch")))
    last = _changes_view(page, ex, "pair", lambda: _pick_other(_select(ex, "pair")))
    assert any("computing" in s for s in page.evaluate("() => window.__corelibStatus")), "no computing… state seen"
    assert re.search(r"pid \d+", ex.locator(".corelib-summary").inner_text())
    (out_dir / "rank_list_explorer.view.png").write_bytes(last)
    ex.screenshot(path=str(out_dir / "rank_list_explorer.png"))
    assert not console.errors, console.errors


def test_cluster_explorer_reacts_to_every_control(opened, out_dir):
    page, console = opened["06_umap_clusters"]
    ex = _explorer(page, "cluster-explorer")
    assert re.search(r"\d+ clusters?, largest first", ex.inner_text()), ex.inner_text()
    _changes_view(page, ex, "cluster (next ▶)", lambda: ex.locator("button", has_text="next ▶").click())
    _changes_view(page, ex, "cluster (menu)", lambda: _pick_other(_select(ex, "cluster")))
    last = _changes_view(page, ex, "pair", lambda: _pick_other(_select(ex, "pair")))
    (out_dir / "cluster_explorer.view.png").write_bytes(last)
    ex.screenshot(path=str(out_dir / "cluster_explorer.png"))
    assert not console.errors, console.errors


@pytest.mark.parametrize("chapter,kind", [("05_gradcam", "rank-list-explorer"), ("06_umap_clusters", "cluster-explorer")])
def test_a_saved_notebook_reopened_without_its_kernel_shows_the_last_view(chapter, kind, lab, browser, opened, out_dir):
    page, _ = opened[chapter]
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(f"() => !({NOTEBOOK_STATE})().dirty")
    saved = json.loads((lab.root / "notebooks" / f"{chapter}.ipynb").read_text())
    assert "application/vnd.jupyter.widget-state+json" in saved["metadata"].get("widgets", {}), \
        "the lab saved no widget state (make lab installs saveState: .venv/share/jupyter/lab/settings/overrides.json)"
    view = (out_dir / f"{kind.replace('-', '_')}.view.png").read_bytes()
    page.close()
    lab.shut_down_kernels()
    # a new browser: nothing of the old page's widget models survives; the new kernel knows none
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        reopened = ctx.new_page()
        console = Console(reopened, out_dir, f"{chapter} reopened")
        reopened.goto(lab.open_url(f"notebooks/{chapter}.ipynb"))
        reopened.wait_for_function(NOTEBOOK_STATE, timeout=120_000)
        ex = _explorer(reopened, kind)
        assert ex.locator("img.corelib-view").screenshot() == view, "the reopened explorer does not show its last view"
        ex.screenshot(path=str(out_dir / f"{chapter}_reopened_explorer.png"))
        outputs = reopened.evaluate(RENDERED_OUTPUTS)
        assert not any(o["widgetError"] for o in outputs), outputs
        assert not console.errors, console.errors
    finally:
        ctx.close()


def test_executed_copies_show_the_explorers_statically(lab, context, out_dir):
    page = context.new_page()
    console = Console(page, out_dir, "executed copy")
    page.goto(lab.open_url("runs/demo/notebooks/05_gradcam.ipynb"))
    page.wait_for_function(NOTEBOOK_STATE, timeout=120_000)
    static = page.locator(".jp-OutputArea-output img[alt*='of the top']")
    static.scroll_into_view_if_needed()
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=static.element_handle())
    assert "VBox(" not in page.evaluate("() => window.jupyterapp.shell.currentWidget.content.node.textContent")
    page.screenshot(path=str(out_dir / "executed_copy_static_explorer.png"))
    assert not console.errors, console.errors
    page.close()


def test_the_report_opens_from_the_file_system(lab, context, out_dir):
    report = lab.root / "runs" / "demo" / "report" / "index.html"
    page = context.new_page()
    console = Console(page, out_dir, "report")
    page.goto(report.as_uri())
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
    chapters = sorted(p.stem for p in (lab.root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for chapter in chapters:
        assert any(chapter in h for h in hrefs), f"the report's index does not link {chapter}: {hrefs}"
    page.screenshot(path=str(out_dir / "report_index.png"), full_page=True)
    page.locator("a[href*='05_gradcam']").first.click()
    page.wait_for_load_state()
    images = page.evaluate("() => Array.from(document.images).map(im => im.complete && im.naturalWidth > 0)")
    assert images and all(images), images
    assert page.locator("img[alt*='of the top']").count() == 1, "no static rank-list explorer in the report's page"
    page.screenshot(path=str(out_dir / "report_05_gradcam.png"))
    assert not console.errors, console.errors
    page.close()
