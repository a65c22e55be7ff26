"""Caption data on small fake files in the real formats: CleanCLIP's CSV,
an ImageNet-style folder and a labels.csv folder; CLIP's resize + centre
crop; the decoded cache; the poisoned captions; Fashion-MNIST's captions."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmark.errors import ConfigError, DataNotFoundError
from datamodules.captions import CaptionFolderDataModule, decode_image, imagenet_templates
from datamodules.fashion_mnist_captions import CLASS_NAMES, FashionMNISTCaptions


def _image(path: Path, size: tuple[int, int], colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _fake(tmp_path: Path, labels_csv: bool = False) -> dict:
    pairs = tmp_path / "pairs"
    rows = []
    for i in range(6):
        _image(pairs / "images" / f"{i}.png", (40 + 4 * i, 30), (10 * i, 20, 30))
        rows.append({"image": f"images/{i}.png", "caption": f"a photo number {i}"})
    with open(pairs / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    val = tmp_path / "val"
    if labels_csv:
        val.mkdir(parents=True)
        with open(val / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label"])
            for i in range(4):
                _image(val / f"v{i}.jpg", (32, 32), (0, 60 * i, 0))
                writer.writerow([f"v{i}.jpg", i % 2])
    else:
        for c, name in enumerate(["golden_retriever", "tabby_cat"]):
            for j in range(2):
                _image(val / name / f"{j}.jpg", (24, 36), (0, 0, 100 * c))
    return {"train_csv": str(pairs / "train.csv"), "eval_dir": str(val)}


def test_pairs_and_an_imagenet_style_folder_decode_to_clip_inputs(tmp_path):
    dm = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **_fake(tmp_path))
    dm.setup()
    assert dm.train_images.shape == (6, 3, 16, 16) and dm.train_images.dtype == torch.uint8
    assert dm.captions == [f"a photo number {i}" for i in range(6)]
    assert dm.train_labels.tolist() == [-1] * 6
    assert dm.test_labels.tolist() == [0, 0, 1, 1]
    assert dm.class_names == ("golden retriever", "tabby cat")
    assert len(dm.templates) == 80 and all(t.count("{}") == 1 for t in dm.templates)
    assert dm.num_classes == 2
    assert str(tmp_path) not in str(dm.identity())


def test_labels_csv_layout_needs_class_names_or_takes_them_from_a_file(tmp_path):
    paths = _fake(tmp_path, labels_csv=True)
    with pytest.raises(ConfigError, match="pass class_names"):
        CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)
    names = tmp_path / "names.txt"
    names.write_text("zero\none\n")
    dm = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, class_names=str(names), **paths)
    dm.setup()
    assert dm.class_names == ("zero", "one") and dm.test_labels.tolist() == [0, 1, 0, 1]


def test_shorter_side_resize_then_centre_crop(tmp_path):
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # the middle third is blue
    image.save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 20)
    assert out.shape == (3, 20, 20)
    assert out[2].float().mean() > 250 and out[0].float().mean() < 5  # only the blue centre is kept


def test_the_decoded_cache_is_reused_and_follows_the_captions(tmp_path):
    paths = _fake(tmp_path)
    first = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)
    first.setup()
    for png in (tmp_path / "pairs" / "images").iterdir():
        png.unlink()  # a second module must not need the image files
    second = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)
    second.setup()
    assert torch.equal(first.train_images, second.train_images)
    text = Path(paths["train_csv"]).read_text().replace("number 3", "number three")
    Path(paths["train_csv"]).write_text(text)
    changed = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)
    assert changed.identity() != first.identity()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        changed.setup()  # a new cache key: decoding again needs the files


def test_poisoned_captions_name_the_target_per_index_whatever_the_subset(tmp_path):
    dm = CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **_fake(tmp_path))
    dm.setup()
    whole = dm.target_captions(torch.arange(6), 1, seed=3)
    assert all("tabby cat" in c for c in whole)
    assert dm.target_captions(torch.tensor([4, 1]), 1, seed=3) == [whole[4], whole[1]]
    assert dm.target_captions(torch.arange(6), 1, seed=4) != whole or len(set(whole)) == 1
    with pytest.raises(ConfigError, match="needs class labels"):
        dm.poison_indices(0.3, 0, 0, selection="non_target")
    assert len(dm.poison_indices(0.5, 0, 0)) == 3


@pytest.mark.parametrize("broken, message", [
    ({"train_csv": "missing.csv"}, "does not exist"),
    ({"eval_dir": "nowhere"}, "does not exist"),
    ({"templates": ["no slot"]}, "exactly one"),
])
def test_bad_caption_inputs_are_one_line_errors(tmp_path, broken, message):
    paths = {**_fake(tmp_path), **{k: (str(tmp_path / v) if k != "templates" else v) for k, v in broken.items()}}
    with pytest.raises((ConfigError, DataNotFoundError), match=message):
        CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)


def test_a_missing_caption_column_is_named(tmp_path):
    paths = _fake(tmp_path)
    Path(paths["train_csv"]).write_text("image,text\nimages/0.png,hello\n")
    with pytest.raises(ConfigError, match="missing column"):
        CaptionFolderDataModule(data_dir=tmp_path / "data", image_size=16, **paths)


def test_imagenet_defaults_are_open_clips_templates():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    templates = imagenet_templates()
    assert len(templates) == 80 and templates[0].format("x") != templates[1].format("x")
    assert len(IMAGENET_CLASSNAMES) == 1000


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_captions_name_each_image_class(tmp_path):
    dm = FashionMNISTCaptions(data_dir=tmp_path)
    dm.setup()
    assert len(dm.captions) == 60000 and dm.num_classes == 10
    for i in range(0, 60000, 997):
        assert CLASS_NAMES[int(dm.train_labels[i])] in dm.captions[i]
    assert len(set(dm.captions[:200])) > 10


def _idx(path: Path, array: torch.Tensor) -> None:
    dims = list(array.shape)
    path.write_bytes(bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
                     + array.numpy().astype("uint8").tobytes())


def _fake_fashion_mnist(root: Path) -> torch.Tensor:
    root.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (12, 28, 28), generator=gen, dtype=torch.uint8)
    _idx(root / "train-images-idx3-ubyte", train)
    _idx(root / "train-labels-idx1-ubyte", torch.arange(12) % 10)
    _idx(root / "t10k-images-idx3-ubyte", train[:5])
    _idx(root / "t10k-labels-idx1-ubyte", torch.arange(5))
    return train


def test_fashion_mnist_captions_serve_rgb_by_default_and_grey_as_an_option(tmp_path):
    """CleanCLIP converts every image to RGB before triggering it, so the
    caption data hold the grey value in three channels; channels=1 keeps the
    grey images and is separate data in the store."""
    train = _fake_fashion_mnist(tmp_path / "data")
    rgb = FashionMNISTCaptions(data_dir=tmp_path / "data", download=False, debian_dir=tmp_path / "none")
    grey = FashionMNISTCaptions(data_dir=tmp_path / "data", download=False, debian_dir=tmp_path / "none", channels=1)
    assert rgb.image_shape == (3, 28, 28) and grey.image_shape == (1, 28, 28)
    assert rgb.train_images.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(rgb.train_images[:, c], train)
    assert torch.equal(grey.train_images[:, 0], train)
    assert len(rgb.mean) == len(rgb.std) == 3
    assert rgb.identity() != grey.identity()
    assert rgb.captions == grey.captions
    with pytest.raises(ConfigError, match="channels must be 3"):
        FashionMNISTCaptions(data_dir=tmp_path / "data", channels=2)
