import gzip

import pytest
import torch

from benchmark.errors import ConfigError, DataNotFoundError, UnknownNameError
from datamodules import build_datamodule
from datamodules.base import random_crop
from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.tensor_dataset import IndexedImages


@pytest.fixture
def dm():
    d = build_datamodule("synthetic", num_train=400, num_test=100, num_classes=4)
    d.setup()
    return d


def test_poison_indices_deterministic_by_seed(dm):
    a = dm.poison_indices(0.1, 0, seed=3)
    assert torch.equal(a, dm.poison_indices(0.1, 0, seed=3))
    assert not torch.equal(a, dm.poison_indices(0.1, 0, seed=4))
    assert len(a) == 40 and len(set(a.tolist())) == 40
    # chosen by dataset index: a fresh module over the same data agrees
    other = build_datamodule("synthetic", num_train=400, num_test=100, num_classes=4)
    assert torch.equal(other.poison_indices(0.1, 0, seed=3), a)


def test_poison_indices_drawn_from_all_samples_by_default_as_backdoorbench():
    # BackdoorBench draws poison_rate * N among all training samples, target
    # class included (utils/backdoor_generate_poison_index.py).
    d = build_datamodule("synthetic", num_train=4000, num_test=100, num_classes=4)
    idx = d.poison_indices(0.2, 0, seed=0)
    assert len(idx) == 800
    share = float((d.train_labels[idx] == 0).float().mean())
    assert 0.15 < share < 0.35  # about 1/4 of them are target-class samples


def test_non_target_selection_option_avoids_the_target_class(dm):
    a = dm.poison_indices(0.1, 0, seed=3, selection="non_target")
    assert len(a) == 40 and torch.all(dm.train_labels[a] != 0)
    with pytest.raises(ConfigError, match="poison selection 'some'.*all, non_target"):
        dm.poison_indices(0.1, 0, seed=3, selection="some")


def test_clean_subset_disjoint_from_poison_and_sized(dm):
    poison = dm.poison_indices(0.1, 0, seed=0)
    clean = dm.clean_subset_indices(0.05, seed=0, exclude=poison)
    assert len(clean) == 20
    assert not set(clean.tolist()) & set(poison.tolist())
    assert torch.equal(clean, dm.clean_subset_indices(0.05, seed=0, exclude=poison))


def test_attacker_indices_come_from_poisoned_samples(dm):
    poison = dm.poison_indices(0.2, 1, seed=0)
    att = dm.attacker_indices(poison, 30, seed=0)
    assert len(att) == 30 and set(att.tolist()) <= set(poison.tolist())


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_poison_rate_outside_open_interval_rejected(dm, rate):
    with pytest.raises(ConfigError, match="poison rate"):
        dm.poison_indices(rate, 0, seed=0)


def test_target_label_outside_classes_rejected(dm):
    with pytest.raises(ConfigError, match="target label 4 outside"):
        dm.poison_indices(0.1, 4, seed=0)


def test_batches_carry_dataset_indices_and_unit_floats(dm):
    idx = torch.tensor([5, 17, 300])
    x, y, i = next(iter(dm.loader(dm.train_set(idx), batch_size=3)))
    assert torch.equal(i, idx) and torch.equal(y, dm.train_labels[idx])
    assert x.dtype == torch.float32 and torch.equal(x, dm.train_images[idx].float() / 255)


def test_poisoned_test_set_has_only_non_target_triggered_images(dm):
    from benchmark.triggers import build_trigger
    trig = build_trigger("badnets", dm.image_shape, size=2)
    ds = dm.poisoned_test_set(trig, 0)
    assert torch.all(ds.labels != 0) and len(ds) == int((dm.test_labels != 0).sum())
    assert torch.all(ds.images[:, :, -2:, -2:] == 1.0)


def test_random_crop_shifts_content_without_changing_shape():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    torch.manual_seed(0)
    out = random_crop(x, 2)
    assert out.shape == x.shape
    # every output pixel is either padding (0) or a pixel of the same image
    for b in range(2):
        assert set(out[b].flatten().tolist()) <= set(x[b].flatten().tolist()) | {0.0}


def test_unknown_dataset_lists_choices():
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        build_datamodule("mnist3d")


def _write_idx(path, array: torch.Tensor, gz: bool):
    dims = list(array.shape)
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    data = header + array.numpy().astype("uint8").tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("layout,gz", [("flat", True), ("torchvision", False)])
def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path, layout, gz):
    root = tmp_path / "data"
    folder = root if layout == "flat" else root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    tr_x = torch.randint(0, 256, (12, 28, 28), generator=gen, dtype=torch.uint8)
    te_x = torch.randint(0, 256, (5, 28, 28), generator=gen, dtype=torch.uint8)
    tr_y, te_y = torch.arange(12) % 10, torch.arange(5)
    sfx = ".gz" if gz else ""
    _write_idx(folder / f"train-images-idx3-ubyte{sfx}", tr_x, gz)
    _write_idx(folder / f"train-labels-idx1-ubyte{sfx}", tr_y, gz)
    _write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", te_x, gz)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", te_y, gz)
    dm = FashionMNISTDataModule(data_dir=root, download=False, debian_dir=tmp_path / "none")
    dm.setup()
    assert torch.equal(dm.train_images[:, 0], tr_x) and torch.equal(dm.test_labels, te_y)
    assert dm.image_shape == (1, 28, 28)


def test_fashion_mnist_missing_names_all_three_ways(tmp_path):
    dm = FashionMNISTDataModule(data_dir=tmp_path / "empty", download=False, debian_dir=tmp_path / "nodeb")
    with pytest.raises(DataNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "dataset-fashion-mnist" in msg and "download" in msg


def test_truncated_idx_file_is_reported(tmp_path):
    from datamodules.idx import read_idx
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(path)


def test_indexed_images_rejects_misaligned_tensors():
    with pytest.raises(ValueError):
        IndexedImages(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
