# The README's two commands: `make demo` and `make test`. Each creates .venv when it is missing,
# installs the project with its dependencies, registers the Jupyter kernel, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/demo
# faiss's GPU wheel where a CUDA driver answers, its CPU wheel elsewhere (pyproject.toml's extras)
FAISS_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo faiss-gpu || echo faiss)

.PHONY: demo test install lab smoke clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[dev,$(FAISS_EXTRA)]"
	$(PY) -m ipykernel install --sys-prefix --name corelib --display-name "Python (corelib)"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
	@touch $(STAMP)

# The main job: every chapter on the embedded data, full parameters, into $(RUN_DIR); then its HTML
# report, $(RUN_DIR)/report/index.html.
demo: $(STAMP)
	$(VENV)/bin/corelib run-notebooks --run-dir $(RUN_DIR)
	$(VENV)/bin/corelib report $(RUN_DIR)

# The whole test suite, notebooks (SMOKE=True) included.
test: $(STAMP)
	$(PY) -m pytest

# The chapters with smoke parameters only (what the notebook tests run).
smoke: $(STAMP)
	$(VENV)/bin/corelib run-notebooks --smoke --run-dir runs/smoke

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
