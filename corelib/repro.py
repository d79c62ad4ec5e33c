"""Reproducibility: seeding and an environment report for every run record."""

from __future__ import annotations

import difflib
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

from .errors import DeviceError
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


DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N")


def check_device_name(device: str, where: str = "device") -> str:
    """``device`` when it is a device name corelib understands (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
    whether or not this machine has that device; otherwise an error with the closest form.

    Raises:
        DeviceError: not a device name (``"gpu"``, ``"cuda0"`` ...).
    """
    text = str(device).strip()
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    close = difflib.get_close_matches(text.lower(), ["auto", "cpu", "cuda"], n=1)
    guess = {"gpu": "cuda", "cuda0": "cuda:0", "cuda1": "cuda:1"}.get(text.lower()) or (close[0] if close else "")
    hint = f" (did you mean {guess!r}?)" if guess else ""
    raise DeviceError(f"{where}={device!r} is not a device{hint}; use one of {', '.join(DEVICE_FORMS)}")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; other strings go to ``torch.device``.

    Raises:
        DeviceError: not a device name, or CUDA asked for on a machine without it.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(check_device_name(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available; use DEVICE='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s) (cuda:0 ... cuda:{torch.cuda.device_count() - 1})")
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
