"""The browser tier's fixtures: a smoke demo, JupyterLab serving it, headless Chromium driving it.

Only ``make test-browser`` collects this folder (it sets ``COREREID_BROWSER`` to the Chromium
binary; ``tests/conftest.py`` ignores the folder otherwise), so ``make test`` needs no browser.

Everything the tier writes lives in a scratch workspace (pytest's ``tmp_path``): the smoke demo's
run directory, the figures of the chapters run in the lab, copies of the chapters that the lab
saves. The checkout's ``notebooks/`` and ``figures/`` are never written. Screenshots, the lab's log
and the browser console go to ``runs/browser/`` (``OUT``), replaced on every run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from corelib import paths

OUT = paths.runs_root() / "browser"
"""Screenshots, the lab's log and the console messages of the last run."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
"""No sandbox (CI runs as root), and no background connections: this network is closed."""
SERVER_START_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corelib(*args: str, env: dict) -> None:
    exe = Path(sys.executable).with_name("corelib")
    subprocess.run([str(exe), *args], check=True, env=env)


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()  # the tier's own screenshots of the previous run
    return OUT


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A smoke demo (every chapter, SMOKE=True) and its report in ``<ws>/runs/demo``, and copies
    of the chapters in ``<ws>/notebooks``: what a newcomer has after ``make demo``."""
    reuse = os.environ.get("COREREID_BROWSER_WORKSPACE")  # a workspace of an earlier run (debugging the tier)
    if reuse:
        ws = Path(reuse)
        if not (ws / "runs" / "demo" / "report" / "index.html").is_file():
            raise RuntimeError(f"COREREID_BROWSER_WORKSPACE={reuse} holds no smoke demo with its report")
        shutil.rmtree(ws / "notebooks", ignore_errors=True)  # the copies the lab saved last time
        shutil.copytree(paths.notebooks_dir(), ws / "notebooks")
        return ws
    ws = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "COREREID_RUNS": str(ws / "runs"), "COREREID_FIGURES": str(ws / "figures")}
    for name in ("COREREID_PROGRESS", "COREREID_WIDGETS", "MPLBACKEND"):  # tests/conftest.py sets Agg
        env.pop(name, None)
    _corelib("run-notebooks", "--smoke", "--run-dir", str(ws / "runs" / "demo"), env=env)
    _corelib("report", str(ws / "runs" / "demo"), env=env)
    shutil.copytree(paths.notebooks_dir(), ws / "notebooks")
    return ws


class Lab:
    """A JupyterLab server on 127.0.0.1 with a token, rooted at the workspace."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        env = {**os.environ, "COREREID_RUNS": str(root / "runs"), "COREREID_FIGURES": str(root / "figures"),
               # the user's own lab settings and workspaces stay out of the test
               "JUPYTERLAB_SETTINGS_DIR": str(root / ".lab-user-settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab-workspaces"),
               "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime")}
        for name in ("COREREID_PROGRESS", "COREREID_WIDGETS", "COREREID_BROWSER", "MPLBACKEND"):
            env.pop(name, None)  # a real front end: widget bars, live explorers, inline figures
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                self.api("GET", "status")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; its log is {log}")
                time.sleep(0.5)

    def api(self, method: str, endpoint: str):
        req = urllib.request.Request(f"{self.url}/api/{endpoint}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def open_url(self, path: str) -> str:
        """``path`` opened alone, in a workspace of its own (``reset``: no tabs of an earlier page
        come back, whose kernels would receive another page's widget messages)."""
        workspace = "".join(c if c.isalnum() else "-" for c in path)
        return f"{self.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={self.token}"

    def shut_down_kernels(self) -> None:
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture(scope="session")
def lab(workspace, out_dir):
    server = Lab(workspace, out_dir / "jupyterlab.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ["COREREID_BROWSER"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
