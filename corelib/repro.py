"""Reproducibility: seeding and an environment report for every run record."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Optional

import numpy as np
import torch

from .paths import repo_root


def seed_everything(seed: int, *, deterministic: bool = True) -> int:
    """Seed python, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: the seed; also returned so it can be recorded.
        deterministic: make cuDNN pick deterministic kernels (and turn its autotuner off). The
            authors' code sets ``deterministic=True`` *and* ``benchmark=True``, which contradict
            each other; here one flag decides both.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by worker processes started later
    return seed


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; other strings go to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use DEVICE='cpu' or 'auto'")
    return dev


@lru_cache(maxsize=1)
def git_sha() -> Optional[str]:
    """Commit of the checkout (with ``-dirty`` when it has local changes), or None outside git."""
    try:
        root = repo_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def env_report() -> dict:
    """Versions, device and git commit: what a run record needs to be reproduced."""
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": np.__version__,
        "pillow": _version("pillow"),
        "corelib": _version("corelib"),
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "torch_threads": torch.get_num_threads(),
        "git_sha": git_sha(),
    }
