"""pyproject.toml is the pip source of truth; environment.yml must list the same packages."""

from __future__ import annotations

import re
import tomllib

import yaml

from corelib import paths

ROOT = paths.repo_root()
# conda users get faiss's GPU build from conda-forge in place of the CPU wheel and of the GPU wheel
CONDA_REPLACEMENTS = {"faiss-cpu": "faiss-gpu", "faiss-gpu-cu12": "faiss-gpu"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pip_reqs += extra
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    env_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pip = [r for r in env_pip if not r.startswith("-e")]

    env_by_name = {_name(r): r.replace(" ", "") for r in env_pip}
    conda_names = {_name(c.split("=")[0]) for c in conda}
    for req in pip_reqs:
        name = _name(req)
        if name in CONDA_REPLACEMENTS:
            assert CONDA_REPLACEMENTS[name] in conda_names, f"environment.yml lacks {CONDA_REPLACEMENTS[name]}"
            continue
        assert name in env_by_name, f"environment.yml lacks {req}"
        assert env_by_name[name] == req.replace(" ", ""), f"{req} in pyproject.toml, {env_by_name[name]} in environment.yml"
    extra = set(env_by_name) - {_name(r) for r in pip_reqs}
    assert not extra, f"environment.yml installs packages pyproject.toml does not declare: {extra}"
    assert any(r.startswith("-e") for r in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))


def test_torch_and_torchvision_are_pinned_together():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {_name(d): d for d in deps}
    assert pins["torch"].startswith("torch==") and pins["torchvision"].startswith("torchvision==")
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == pins["torch"].split("==")[1]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"].split("==")[1]
    torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # the C++ ops load against this torch
