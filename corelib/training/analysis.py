"""The network and the features the analysis chapters (04 k-means seeding, 05 Grad-CAM, 06 UMAP) study.

:func:`analysis_model` takes the newest network of a pair (embedded or real) from the run directory: the
fine-tuned teacher written by chapter 03, else the source network of chapter 02; a chapter run on
its own (nothing in ``RUN_DIR``) trains a small source network first and says so. With an empty
``RUN_DIR`` the networks ``make demo`` trained are used when they exist.
:func:`analysis_features` extracts BMFN descriptors of a split with it, optionally centred per
camera as the embedded fine-tuning recipe clusters them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .. import paths
from ..cluster import camera_centred as centre
from ..data.dataset import ReIDDataset
from ..errors import UpstreamChangedError
from ..features import Features, extract_split
from ..outputs import Run
from ..pairs import ExperimentPair, experiment_pairs
from .evaluate import TrainedModel, load_trained_model
from .finetune import finetune
from .pretrain import pretrain


def _as_pair(pair):
    """An :class:`~corelib.pairs.ExperimentPair` from a pair or an embedded pair's name."""
    return pair if isinstance(pair, ExperimentPair) else experiment_pairs([pair])[pair]


class _Networks:
    """Where the analysis networks of one pair come from, and where quick ones go.

    An explicit ``RUN_DIR`` (a path, or a :class:`~corelib.outputs.Run` opened with one) is the only
    place searched, and quick networks go to ``RUN_DIR/<pair>/quick``. A run opened with an empty
    ``RUN_DIR`` also searches :func:`~corelib.paths.demo_run_dir` (the networks ``make demo`` just
    trained) and keeps quick networks in ``<runs_root>/quick/<pair>``, shared by every chapter that
    needs them, so they are trained once.
    """

    def __init__(self, run_dir, pair) -> None:
        self.pair = pair
        if isinstance(run_dir, Run):
            own, default = run_dir.run_dir, run_dir.default_dir
        else:
            own, default = Path(run_dir), False
        self.dirs = [own / pair.name]
        if default and paths.demo_run_dir().resolve() != Path(own).resolve():
            self.dirs.append(paths.demo_run_dir() / pair.name)
        self.quick_base = (paths.runs_root() / "quick" / pair.name) if default else own / pair.name
        self.default = default

    def find(self, stage: str) -> Optional[Path]:
        """The first ``<dir>/<stage>/best.pt`` that exists; says where it came from."""
        for i, base in enumerate(self.dirs):
            path = base / stage / "best.pt"
            if path.is_file():
                if i > 0:
                    print(f"{self.pair.name}: RUN_DIR is empty, so this chapter uses the {stage} network of "
                          f"`make demo` in {base.parent} (set RUN_DIR to study another run)")
                return path
        return None

    def hint(self) -> str:
        if self.default:
            return "run `make demo` first, or set RUN_DIR to a run whose chapters 02 and 03 have run"
        return "run 02_pretraining and 03_finetuning with this RUN_DIR for the real ones"


def _quick_pretrain(nets: _Networks, source: ReIDDataset, target: ReIDDataset, seed: int, device) -> Path:
    out = nets.quick_base / "quick"
    verb = "using the small source network trained earlier in" if (out / "pretrain" / "best.pt").is_file() \
        else "training a small source network into"
    print(f"{nets.pair.name}: no checkpoint of chapter 02 found; {verb} {out} ({nets.hint()})")
    cfg = nets.pair.pretrain_cfg(smoke=True, seed=seed, device=str(device))
    return Path(pretrain(cfg, source, out, target=target, resume=True, progress=True).best_checkpoint)


def _quick_finetune(nets: _Networks, target: ReIDDataset, source_checkpoint: Path, seed: int, device) -> Path:
    out = nets.quick_base / "quick"
    verb = "using the brief adaptation made earlier of" if (out / "finetune" / "best.pt").is_file() else "adapting briefly"
    print(f"{nets.pair.name}: no checkpoint of chapter 03 found; {verb} {source_checkpoint} ({nets.hint()})")
    cfg = nets.pair.finetune_cfg(smoke=True, seed=seed, device=str(device))
    try:
        result = finetune(cfg, target, out, source_checkpoint=source_checkpoint, resume=True, progress=True)
    except UpstreamChangedError:  # made from a source network trained again since: set aside, adapt afresh
        print(f"{nets.pair.name}: that adaptation was made from an older source network; adapting again")
        result = finetune(cfg, target, out, source_checkpoint=source_checkpoint, overwrite=True, progress=True)
    return Path(result.best_checkpoint)


def analysis_model(run_dir, pair, source: ReIDDataset, target: ReIDDataset, *,
                   smoke: bool = False, seed: int = 1, device: Union[str, torch.device] = "cpu") -> TrainedModel:
    """``RUN_DIR/<pair>/finetune/best.pt`` (chapter 03), else ``RUN_DIR/<pair>/pretrain/best.pt``
    (chapter 02); when neither exists, a source network trained now with the pair's smoke recipe
    (``pair.pretrain_cfg(smoke=True)``) into ``RUN_DIR/<pair>/quick/``.

    ``run_dir`` is a path or the chapter's :class:`~corelib.outputs.Run`; a run opened with an
    empty ``RUN_DIR`` also takes the networks of ``make demo`` and shares its quick networks with
    the other chapters (see :class:`_Networks`). ``pair`` is an
    :class:`~corelib.pairs.ExperimentPair` or the name of an embedded pair.
    """
    pair = _as_pair(pair)
    nets = _Networks(run_dir, pair)
    for stage in ("finetune", "pretrain"):
        path = nets.find(stage)
        if path is not None:
            print(f"{pair.name}: analysing {path} ({stage})")
            return load_trained_model(path, device=device)
    return load_trained_model(_quick_pretrain(nets, source, target, seed, device), device=device)


def analysis_models(run_dir, pair, source: ReIDDataset, target: ReIDDataset, *,
                    smoke: bool = False, seed: int = 1,
                    device: Union[str, torch.device] = "cpu") -> dict[str, TrainedModel]:
    """The network before and after adaptation: ``{"before": source network, "after": teacher}``.

    ``before`` is ``RUN_DIR/<pair>/pretrain/best.pt`` (chapter 02) and ``after``
    ``RUN_DIR/<pair>/finetune/best.pt`` (chapter 03). A missing stage is trained now with its smoke
    recipe into ``RUN_DIR/<pair>/quick/`` (a few minutes on a CPU; the chapter says so), the
    adaptation starting from ``before``; a quick adaptation older than its source network is redone.
    ``run_dir`` is a path or the chapter's :class:`~corelib.outputs.Run` (an empty ``RUN_DIR``
    also takes ``make demo``'s networks, see :func:`analysis_model`). Both networks come from the
    same place: a demo's adapted teacher is compared with the demo's own source network.
    """
    pair = _as_pair(pair)
    nets = _Networks(run_dir, pair)
    for base in nets.dirs:  # a before/after pair from one run, never mixed across runs
        before, after = base / "pretrain" / "best.pt", base / "finetune" / "best.pt"
        if before.is_file() and after.is_file():
            if base != nets.dirs[0]:
                print(f"{pair.name}: RUN_DIR is empty, so this chapter uses the networks of `make demo` in "
                      f"{base.parent} (set RUN_DIR to study another run)")
            break
    else:
        before = nets.find("pretrain") or _quick_pretrain(nets, source, target, seed, device)
        after = nets.dirs[0] / "finetune" / "best.pt"
        if not after.is_file():
            after = _quick_finetune(nets, target, before, seed, device)
    print(f"{pair.name}: before adaptation {before}; after adaptation {after}")
    return {"before": load_trained_model(before, device=device), "after": load_trained_model(after, device=device)}


def analysis_features(trained: TrainedModel, dataset: ReIDDataset, *, split: str = "train",
                      camera_centred: bool = False, max_images: Optional[int] = None, seed: int = 0,
                      device: Union[str, torch.device] = "cpu", progress: bool = True) -> Features:
    """Retrieval descriptors of ``dataset``'s ``split`` at the model's training size, on the network's
    test protocol (flip-averaged for CORE-ReID's networks, BMFN).

    Args:
        camera_centred: subtract each camera's mean (``cluster.normalize="camera_mean"`` of fine-tuning).
        max_images: at most this many images, a seeded random subset kept in split order.
        seed: the subset's seed.
        progress: a bar over the batches (a line of text under ``corelib run-notebooks``).
    """
    samples = dataset.split(split)
    if max_images is not None and max_images < len(samples):
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), max_images, replace=False))
        samples = [samples[i] for i in keep]
    feats = extract_split(trained.model, samples, *trained.input_size, device=device, progress=progress)
    if camera_centred:
        feats = Features(centre(feats.features, [s.camid for s in samples]), feats.pids, feats.camids)
    return feats
