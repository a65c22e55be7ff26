"""The real-data loaders, run on tiny fake datasets written in each dataset's
real on-disk format, so a loader that misreads the format fails here."""
from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from benchmark.errors import DataNotFoundError
from datamodules import DATASETS
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.gtsrb import GTSRBDataModule
from datamodules.tiny_imagenet import TinyImageNetDataModule


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct uniform colour per image, so pixels prove which file they came from."""
    return (20 * i + 10) % 256, (70 * i + 30) % 256, (110 * i + 50) % 256


def test_registered_names():
    assert DATASETS.get("cifar10") is CIFAR10DataModule
    assert DATASETS.get("gtsrb") is GTSRBDataModule
    assert DATASETS.get("tiny_imagenet") is TinyImageNetDataModule


# ---- CIFAR-10 ----------------------------------------------------------------

@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """Five train batches + test_batch + batches.meta as torchvision's python
    pickles. torchvision 0.29 checks every file against a hard-coded md5 (in
    `train_list`, `test_list` and `meta` on the class), which fake files can
    never match; we replace those md5s with the md5s of the files we wrote,
    so the integrity check still runs and still rejects any other file."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 4)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": data, "labels": labels,
                                                  "filenames": [f"{j}.png" for j in range(n)]}, protocol=2))
        written[name] = (data, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})
    return folder, written


def _check_cifar(dm, written):
    dm.setup()
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    want_x = torch.from_numpy(np.concatenate([d for d, _ in train])).reshape(-1, 3, 32, 32)
    assert dm.train_images.dtype == torch.uint8 and dm.train_images.shape == (15, 3, 32, 32)
    assert torch.equal(dm.train_images, want_x)  # CHW planes of the pickle, exactly
    assert dm.train_labels.dtype == torch.int64
    assert dm.train_labels.tolist() == sum((labels for _, labels in train), [])
    assert torch.equal(dm.test_images, torch.from_numpy(written["test_batch"][0]).reshape(-1, 3, 32, 32))
    assert dm.test_labels.tolist() == written["test_batch"][1]


def test_cifar10_reads_batches_from_parent_or_folder(fake_cifar):
    folder, written = fake_cifar
    _check_cifar(CIFAR10DataModule(data_dir=folder.parent, download=False), written)
    _check_cifar(CIFAR10DataModule(data_dir=folder, download=False), written)


def test_cifar10_extracts_a_local_archive(fake_cifar, tmp_path):
    folder, written = fake_cifar
    other = tmp_path / "other"
    other.mkdir()
    with tarfile.open(other / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    _check_cifar(CIFAR10DataModule(data_dir=other, download=False), written)


def test_cifar10_missing_names_the_directory(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py") as err:
        CIFAR10DataModule(data_dir=tmp_path, download=False).load()
    assert str(tmp_path) in str(err.value) and "switched off" in str(err.value)


# ---- GTSRB ---------------------------------------------------------------------

GTSRB_TRAIN = [(0, (20, 31)), (0, (45, 45)), (5, (64, 40)), (42, (33, 17))]  # (class, PPM size)
GTSRB_TEST = [(42, (50, 29)), (5, (31, 31)), (0, (18, 70))]


def _fake_gtsrb(root):
    base = root / "gtsrb"
    for i, (label, size) in enumerate(GTSRB_TRAIN):
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, _colour(i)).save(folder / f"{i:05d}_00000.ppm")
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, (label, size) in enumerate(GTSRB_TEST):
        Image.new("RGB", size, _colour(10 + i)).save(images / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;{size[0]};{size[1]};1;1;{size[0] - 1};{size[1] - 1};{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def _uniform(colours, size=32) -> torch.Tensor:
    return torch.tensor(colours, dtype=torch.uint8)[:, :, None, None].expand(-1, 3, size, size)


def test_gtsrb_resizes_labels_and_caches(tmp_path):
    _fake_gtsrb(tmp_path)
    dm = GTSRBDataModule(data_dir=tmp_path, download=False)
    dm.setup()
    assert dm.train_images.dtype == torch.uint8 and dm.train_images.shape == (4, 3, 32, 32)
    # Real class ids from the folder names, not positions among the 3 folders present.
    assert dm.train_labels.dtype == torch.int64 and dm.train_labels.tolist() == [0, 0, 5, 42]
    assert torch.equal(dm.train_images, _uniform([_colour(i) for i in range(4)]))
    assert dm.test_labels.tolist() == [42, 5, 0]
    assert torch.equal(dm.test_images, _uniform([_colour(10 + i) for i in range(3)]))

    assert dm.cache_path.is_file()
    shutil.rmtree(tmp_path / "gtsrb")  # the second load can only come from the cache
    again = GTSRBDataModule(data_dir=tmp_path, download=False).load()
    for a, b in zip(again, (dm.train_images, dm.train_labels, dm.test_images, dm.test_labels)):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_gtsrb_missing_names_the_directory(tmp_path):
    with pytest.raises(DataNotFoundError, match="GTSRB/Training") as err:
        GTSRBDataModule(data_dir=tmp_path, download=False).load()
    assert str(tmp_path) in str(err.value)


# ---- Tiny-ImageNet -----------------------------------------------------------------

WNIDS = ["n03000000", "n01000000", "n02000000"]  # unsorted, as in the real wnids.txt


def _fake_tiny(root):
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    n = 0
    for wnid in WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), _colour(n)).save(folder / f"{wnid}_{j}.JPEG", quality=95)
            n += 1
    rows = []
    for i, wnid in enumerate(["n02000000", "n03000000"]):
        Image.new("RGB", (64, 64), _colour(20 + i)).save(base / "val" / "images" / f"val_{i}.JPEG", quality=95)
        rows.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    # Real Tiny-ImageNet has some greyscale JPEGs; they must come out RGB.
    Image.new("L", (64, 64), 77).save(base / "val" / "images" / "val_2.JPEG", quality=95)
    rows.append("val_2.JPEG\tn01000000\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")


def _close(images, colours, tol=3):
    # JPEG is lossy, but a uniform block decodes to within a few levels of its colour.
    diff = images.int() - _uniform(colours, 64).int()
    return diff.abs().max().item() <= tol


def test_tiny_imagenet_reads_layout_and_caches(tmp_path):
    _fake_tiny(tmp_path)
    dm = TinyImageNetDataModule(data_dir=tmp_path, download=False)
    dm.setup()
    assert dm.train_images.dtype == torch.uint8 and dm.train_images.shape == (6, 3, 64, 64)
    # Index = position in sorted wnids: n01 -> 0, n02 -> 1, n03 -> 2; samples in class order.
    assert dm.train_labels.dtype == torch.int64 and dm.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    sorted_colours = [_colour(n) for n in (2, 3, 4, 5, 0, 1)]  # files of n01, n02, n03
    assert _close(dm.train_images, sorted_colours)
    assert dm.test_labels.tolist() == [1, 2, 0]
    assert _close(dm.test_images, [_colour(20), _colour(21), (77, 77, 77)])

    assert dm.cache_path.is_file()
    shutil.rmtree(tmp_path / "tiny-imagenet-200")  # the second load can only come from the cache
    again = TinyImageNetDataModule(data_dir=tmp_path, download=False).load()
    for a, b in zip(again, (dm.train_images, dm.train_labels, dm.test_images, dm.test_labels)):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_tiny_imagenet_accepts_the_folder_itself(tmp_path):
    _fake_tiny(tmp_path)
    dm = TinyImageNetDataModule(data_dir=tmp_path / "tiny-imagenet-200", download=False)
    assert dm.load()[1].tolist() == [0, 0, 1, 1, 2, 2]


def test_tiny_imagenet_missing_names_the_directory(tmp_path):
    with pytest.raises(DataNotFoundError, match="val_annotations.txt") as err:
        TinyImageNetDataModule(data_dir=tmp_path, download=False).load()
    assert str(tmp_path) in str(err.value)


def test_cifar10_grid_plans_every_attack(fake_cifar, tmp_path):
    """`make sweep-cifar10`'s dry run on CIFAR-10 files in the real format:
    every registered attack gets its f_A, and its trigger stage where it has one."""
    import dataclasses
    from pathlib import Path

    from benchmark.storage.store import ArtifactStore
    from benchmark.triggers import TRIGGERS
    from lightning_modules.attacks import ATTACKS
    from sweeps.graph import build_graph
    from sweeps.grid import load_grid

    folder, _ = fake_cifar
    grid = load_grid(Path(__file__).resolve().parents[1] / "sweeps" / "cifar10.yaml")
    grid = dataclasses.replace(grid, data_dir=folder.parent)
    graph = build_graph(grid, ArtifactStore(tmp_path / "store"))
    attacks = [n for n in ATTACKS.names() if ATTACKS.get(n).trigger is not None]
    assert sorted(grid.attacks) == sorted(attacks)
    jobs = [node.job for node in graph.nodes.values()]
    planned = {j.config["attack"] for j in jobs if j.kind == "attack"}
    assert planned == set(attacks)
    prepared = {j.label for j in jobs if j.kind == "trigger"}
    assert prepared == {ATTACKS.get(a).trigger for a in attacks
                        if TRIGGERS.get(ATTACKS.get(a).trigger).preparation != "none"}
