"""Tests of corelib.data.samplers and corelib.data.batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corelib.data.dataset import Sample
from corelib.data.batches import ImageDataset, build_loader, seed_worker
from corelib.data.samplers import CameraAwareIdentitySampler, pids_per_batch
from corelib.data.transforms import build_transforms
from corelib.errors import CorruptImageError


def make_samples(spec: dict[int, list[int | None]]) -> list[Sample]:
    """Samples from ``{pid: [camid of each image]}``, interleaved so indices of a pid are spread."""
    out = []
    longest = max(len(cams) for cams in spec.values())
    for j in range(longest):
        for pid, cams in spec.items():
            if j < len(cams):
                out.append(Sample(f"img_{pid}_{j}.jpg", pid, cams[j]))
    return out


def blocks(sampler: CameraAwareIdentitySampler, samples: list[Sample]) -> list[list[int]]:
    """Split one epoch of indices into identity blocks (consecutive runs of one pid)."""
    out: list[list[int]] = []
    for index in sampler:
        if out and samples[out[-1][0]].pid == samples[index].pid:
            out[-1].append(index)
        else:
            out.append([index])
    return out


MIXED = {
    0: [0, 0, 1, 1, 2, 2, 2],  # 3 cameras, >= 3 other-camera images for every anchor
    1: [0, 1],  # one other-camera image: with replacement
    2: [3],  # single image
    3: [1, 1, 1, 1, 1],  # one camera, enough images: fallback without replacement
    4: [2, 2],  # one camera, too few: fallback with replacement
    5: [0, 1, 1, 2, 2, 2, 0, 1],
}


def test_blocks_have_k_indices_of_one_pid() -> None:
    samples = make_samples(MIXED)
    sampler = CameraAwareIdentitySampler(samples, num_instances=4, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        got = blocks(sampler, samples)
        assert sorted(samples[b[0]].pid for b in got) == sorted(MIXED)  # each identity once
        for b in got:
            pid = samples[b[0]].pid
            assert all(samples[i].pid == pid for i in b)
            assert len(b) == (1 if len(MIXED[pid]) == 1 else 4)


def test_followers_prefer_other_cameras() -> None:
    samples = make_samples(MIXED)
    sampler = CameraAwareIdentitySampler(samples, num_instances=4, seed=3)
    anchor_cams = set()
    for epoch in range(30):
        sampler.set_epoch(epoch)
        for b in blocks(sampler, samples):
            anchor, followers = b[0], b[1:]
            pid, cam = samples[anchor].pid, samples[anchor].camid
            follower_cams = [samples[i].camid for i in followers]
            if pid in (0, 5):
                # Enough other-camera images: all followers are from other cameras, no repeats.
                assert all(c != cam for c in follower_cams)
                assert len(set(followers)) == 3
                if pid == 0:
                    anchor_cams.add(cam)
            elif pid == 1:
                # A single other-camera image: drawn with replacement.
                assert len(set(followers)) == 1 and follower_cams[0] != cam
            elif pid == 3:
                assert anchor not in followers and len(set(followers)) == 3
            elif pid == 4:
                assert set(followers) == {i for i, s in enumerate(samples) if s.pid == 4} - {anchor}
    assert anchor_cams == {0, 1, 2}  # the anchor itself is random over the identity's images


def test_camid_none_is_one_camera() -> None:
    samples = make_samples({7: [None] * 6, 8: [None], 9: [None, None]})
    sampler = CameraAwareIdentitySampler(samples, num_instances=4, seed=0)
    got = blocks(sampler, samples)
    assert len(list(sampler)) == len(sampler) == 4 + 1 + 4
    for b in got:
        assert b[0] not in b[1:]
        if samples[b[0]].pid == 7:
            assert len(set(b)) == 4


def test_len_matches_epoch() -> None:
    samples = make_samples(MIXED)
    for k in (1, 2, 4, 8):
        sampler = CameraAwareIdentitySampler(samples, num_instances=k, seed=1)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert len(list(sampler)) == len(sampler)
    assert len(CameraAwareIdentitySampler(samples, num_instances=4)) == 5 * 4 + 1
    # num_instances=1: one anchor per identity.
    assert Counter(samples[i].pid for i in CameraAwareIdentitySampler(samples, 1)) == Counter(
        {pid: 1 for pid in MIXED}
    )


def test_seed_and_epoch_determinism() -> None:
    samples = make_samples({pid: [pid % 3, (pid + 1) % 3, 0, 1, 2] for pid in range(40)})
    a = CameraAwareIdentitySampler(samples, num_instances=4, seed=5)
    b = CameraAwareIdentitySampler(samples, num_instances=4, seed=5)
    first = list(a)
    torch.manual_seed(999)  # the global RNG must not matter
    torch.rand(17)
    assert list(b) == first
    assert list(a) == first  # no set_epoch: the same epoch again
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    torch.manual_seed(0)
    assert list(b) == second
    assert list(CameraAwareIdentitySampler(samples, num_instances=4, seed=6)) != first


def test_sampler_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        CameraAwareIdentitySampler([], num_instances=4)
    with pytest.raises(ValueError, match="num_instances"):
        CameraAwareIdentitySampler(make_samples({0: [0, 1]}), num_instances=0)


def test_pids_per_batch() -> None:
    assert pids_per_batch(128, 4) == 32
    with pytest.raises(ValueError) as err:
        pids_per_batch(130, 4)
    msg = str(err.value)
    assert "130" in msg and "4" in msg and "128 or 132" in msg
    with pytest.raises(ValueError):
        pids_per_batch(0, 4)


# ---------------------------------------------------------------------------------------------
# ImageDataset / build_loader


def write_images(folder: Path, spec: dict[int, list[int | None]]) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for pid, cams in spec.items():
        for j, cam in enumerate(cams):
            path = folder / f"{pid:04d}_{j}.jpg"
            arr = rng.integers(0, 256, size=(48, 24, 3), dtype=np.uint8)
            Image.fromarray(arr, mode="RGB").save(path, quality=95)
            samples.append(Sample(str(path), pid, cam))
    return samples


def test_image_dataset_items(tmp_path: Path) -> None:
    samples = write_images(tmp_path, {3: [0, 2], 4: [None]})
    ds = ImageDataset(samples)
    assert len(ds) == 3
    img, pid, camid, index = ds[1]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (24, 48)
    assert (pid, camid, index) == (3, 2, 1)
    assert ds[2][1:] == (4, -1, 2)  # camid None -> -1 for collation
    ds = ImageDataset(samples, build_transforms("test", 32, 16))
    x, *_ = ds[0]
    assert x.shape == (3, 32, 16)


def test_image_dataset_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1_bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20)  # truncated JPEG
    ds = ImageDataset([Sample(str(bad), 1, 0)])
    with pytest.raises(CorruptImageError, match="0001_c1_bad.jpg"):
        ds[0]


def first_batches(samples: list[Sample], seed: int, workers: int) -> list[tuple]:
    sampler = CameraAwareIdentitySampler(samples, num_instances=4, seed=seed)
    loader = build_loader(
        samples,
        build_transforms("finetune", 32, 16),
        batch_size=8,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        seed=seed,
    )
    return [batch for _, batch in zip(range(3), loader)]


def test_loader_with_workers_is_reproducible(tmp_path: Path) -> None:
    samples = write_images(tmp_path, {pid: [0, 1, 2, 0, 1] for pid in range(6)})
    torch.manual_seed(1)
    a = first_batches(samples, seed=0, workers=2)
    torch.manual_seed(2)  # the main-process RNG must not matter with workers
    b = first_batches(samples, seed=0, workers=2)
    assert len(a) == 3
    for (xa, pa, ca, ia), (xb, pb, cb, ib) in zip(a, b):
        assert xa.shape == (8, 3, 32, 16)
        assert torch.equal(xa, xb) and torch.equal(pa, pb) and torch.equal(ca, cb)
        assert torch.equal(ia, ib)
        assert (pa.view(2, 4) == pa.view(2, 4)[:, :1]).all()  # two P x K identity blocks
    c = first_batches(samples, seed=1, workers=2)
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, c))


def test_build_loader_validation_and_seed_worker(tmp_path: Path) -> None:
    samples = write_images(tmp_path, {0: [0, 1]})
    sampler = CameraAwareIdentitySampler(samples)
    with pytest.raises(ValueError, match="sampler"):
        build_loader(samples, None, 2, sampler=sampler, shuffle=True)
    torch.manual_seed(42)
    seed_worker(0)
    x = np.random.rand()
    torch.manual_seed(42)
    seed_worker(0)
    assert np.random.rand() == x
