# The README's two commands: `make demo` and `make test` (`make test-fast`: the edit loop). Each creates
# .venv when it is missing, installs the project with its dependencies, registers the Jupyter kernel, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/demo
# faiss's GPU wheel where a CUDA driver answers, its CPU wheel elsewhere (pyproject.toml's extras)
FAISS_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo faiss-gpu || echo faiss)

LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# the browser tier drives the distribution's Chromium (Debian: package chromium); no browser download
CHROMIUM ?= /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast test-browser install lab smoke chromium clean-venv

install: $(STAMP) $(LAB_SETTINGS)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[dev,$(FAISS_EXTRA)]"
	$(PY) -m ipykernel install --sys-prefix --name corelib --display-name "Python (corelib)"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
	@touch $(STAMP)

# JupyterLab saves the widgets' state with a notebook (a reopened notebook shows its explorers) and
# asks for no news; merged again when corelib/notebooks.py (which holds LAB_SETTINGS) changes
$(LAB_SETTINGS): $(STAMP) corelib/notebooks.py
	$(PY) -c "from corelib.notebooks import install_lab_settings; print('lab settings:', install_lab_settings())"
	@touch $@

# The main job: every chapter on the embedded data, full parameters, into $(RUN_DIR); then its HTML
# report, $(RUN_DIR)/report/index.html.
demo: $(STAMP)
	$(VENV)/bin/corelib run-notebooks --run-dir $(RUN_DIR)
	$(VENV)/bin/corelib report $(RUN_DIR)

# The whole test suite, notebooks (SMOKE=True) included.
test: $(STAMP)
	$(PY) -m pytest

# The edit loop: every test but the slow tier (training, notebooks, anything over about 5 s).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The browser tier: a smoke demo, then JupyterLab in headless Chromium (tests/browser/conftest.py).
# Installs Playwright into the venv and Chromium from apt-get when they are missing.
test-browser: $(LAB_SETTINGS)
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -e ".[browser]"
	@test -x $(CHROMIUM) || $(MAKE) --no-print-directory chromium
	COREREID_BROWSER=$(CHROMIUM) $(PY) -m pytest tests/browser

chromium:
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; \
	else \
	  echo "no apt-get here: install Chromium with your system's package manager (dnf install chromium," \
	       "pacman -S chromium, brew install --cask chromium) and run make test-browser CHROMIUM=/path/to/chromium"; \
	  exit 1; \
	fi

# The chapters with smoke parameters only (what the notebook tests run).
smoke: $(STAMP)
	$(VENV)/bin/corelib run-notebooks --smoke --run-dir runs/smoke

lab: $(LAB_SETTINGS)
	$(VENV)/bin/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
