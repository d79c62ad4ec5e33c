"""``import corelib.evaluation`` / ``corelib.cluster`` load neither the plotting, notebook and
training stacks nor the rest of the package; ``import corelib`` resolves its public names lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "pandas", "papermill", "nbformat", "torchvision", "timm", "PIL", "ipywidgets", "umap",
         "corelib.training", "corelib.viz", "corelib.notebooks", "corelib.models", "corelib.data", "corelib.style")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> set[str]:
    return {h for h in HEAVY if h in modules}


def test_evaluation_and_clustering_import_light():
    for module in ("corelib.evaluation", "corelib.cluster"):
        assert heavy_in(loaded_after(f"import {module}")) == set(), module


@pytest.mark.slow
def test_the_public_api_resolves_lazily_and_completely():
    assert heavy_in(loaded_after("import corelib")) == set()
    # a name loads its own module on first use, and every name of __all__ resolves
    assert "corelib.viz" in loaded_after("import corelib; corelib.viz")
    code = "import corelib; missing = [n for n in corelib.__all__ if getattr(corelib, n, None) is None]; assert not missing, missing"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error():
    import corelib
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'evaluate_rankings'"):
        corelib.evaluate_rankings
    assert "evaluate_ranking" in dir(corelib)
