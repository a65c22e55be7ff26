"""Caption data for CLIP: image–caption pairs for training and a labelled
zero-shot set for evaluation, behind the suite's data rules.

`CaptionDataModule` is a `BackdoorDataModule`: the training images are the
pairs' images (uint8 in memory, with `captions[i]` the caption of image i and
the label its class where known, -1 for web pairs), the test set is the
labelled zero-shot set. Poisoned indices, the defender's clean subset, the
attacker's samples and the triggered test set therefore follow the classifier
cells' seeded rules unchanged. A poisoned pair's caption is a template drawn
per dataset index (from the cell's seed) naming the target class, as
CleanCLIP builds its poisoned captions (nishadsinghi/CleanCLIP
backdoor/create_backdoor_data.py: a random ImageNet template with the target's
name).

`CaptionFolderDataModule` ("captions") reads a user's pairs in CleanCLIP's
CSV format and an ImageNet-style (or CleanCLIP `labels.csv`) zero-shot folder.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import torch

from benchmark.errors import ConfigError, DataNotFoundError
from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule
from datamodules.cache import read_cache, write_cache

#: CLIP's normalisation (OpenAI)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def imagenet_templates() -> tuple[str, ...]:
    """open_clip's 80 OpenAI ImageNet templates as "{}" format strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


class CaptionDataModule(BackdoorDataModule):
    #: the zero-shot classes of the test set (index = label)
    class_names: tuple[str, ...] = ()
    #: caption templates, one "{}" for the class name
    templates: tuple[str, ...] = ("a photo of a {}.",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.captions: list[str] | None = None

    def load_captions(self) -> list[str]:
        """One caption per training image (called after `load()`)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.captions is None:
            captions = list(self.load_captions())
            if len(captions) != len(self.train_labels):
                raise ValueError(f"{self.name}: {len(captions)} captions for {len(self.train_labels)} images")
            self.captions = captions

    @property
    def num_classes(self) -> int:  # the zero-shot classes
        return len(self.class_names)

    @num_classes.setter
    def num_classes(self, value: int) -> None:  # set by parents; the class names decide
        pass

    def zero_shot_identity(self) -> str:
        return _digest([list(self.class_names), list(self.templates)])

    def target_captions(self, indices: torch.Tensor, target_label: int, seed: int) -> list[str]:
        """The caption replacing each poisoned pair's: a template drawn for
        each dataset index (the same whatever other indices are asked for)
        naming the target class."""
        self.check_target(target_label)
        name = self.class_names[target_label]
        out = []
        for i in torch.as_tensor(indices).tolist():
            draw = hashlib.sha256(f"{seed}:{i}".encode()).digest()
            out.append(self.templates[int.from_bytes(draw[:8], "little") % len(self.templates)].format(name))
        return out

    def poison_indices(self, poison_rate: float, target_label: int, seed: int, selection: str = "all"):
        self.setup()
        if selection != "all" and bool((self.train_labels < 0).any()):
            raise ConfigError(f"poison selection {selection!r} needs class labels of the training pairs; "
                              f"{self.name} has none; use 'all'")
        return super().poison_indices(poison_rate, target_label, seed, selection)


def _read_csv(path: Path, delimiter: str, keys: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DataNotFoundError(f"caption file {path} does not exist (CleanCLIP format: a CSV with columns "
                                f"{', '.join(keys)})")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [k for k in keys if k not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {missing}; has {reader.fieldnames}")
        return list(reader)


def decode_image(path: Path, size: int) -> torch.Tensor:
    """RGB uint8 (3, size, size): shorter side resized to `size` (bicubic)
    and centre-cropped, as CLIP's preprocessing."""
    from PIL import Image

    if not path.is_file():
        raise DataNotFoundError(f"image {path} does not exist")
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


@DATASETS.register("captions")
class CaptionFolderDataModule(CaptionDataModule):
    """A user's pairs (`train_csv`, CleanCLIP's format: columns image, caption;
    paths relative to the CSV's folder; src/parser.py defaults) and zero-shot
    set (`eval_dir`: one sub-folder per class, sorted names = labels, or a
    `labels.csv` with columns image, label). Class names: given (list or a
    file with one per line), open_clip's ImageNet names for a 1,000-class set,
    else the folder names. Templates: open_clip's 80 ImageNet templates unless
    given. Decoded once into a cache in the data directory (uint8 at
    `image_size`: 150 KB per 224-px image, held in memory)."""
    name = "captions"
    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, *args, train_csv: str, eval_dir: str, class_names: list[str] | str | None = None,
                 templates: list[str] | None = None, image_size: int = 224, delimiter: str = ",",
                 image_key: str = "image", caption_key: str = "caption", **kwargs):
        super().__init__(*args, **kwargs)
        self.train_csv, self.eval_dir = Path(train_csv), Path(eval_dir)
        self.image_size, self.delimiter = int(image_size), delimiter
        self.image_key, self.caption_key = image_key, caption_key
        self._class_names_arg = class_names
        if templates is not None:
            bad = [t for t in templates if t.count("{}") != 1]
            if bad:
                raise ConfigError(f"captions: every template needs exactly one '{{}}' for the class name; got {bad[:2]}")
        self.templates = tuple(templates) if templates is not None else imagenet_templates()
        self._pairs = _read_csv(self.train_csv, delimiter, (image_key, caption_key))
        self._eval = self._eval_listing()
        self.class_names = self._choose_class_names()

    def _eval_listing(self) -> list[tuple[str, int]]:
        root = self.eval_dir
        if not root.is_dir():
            raise DataNotFoundError(f"zero-shot folder {root} does not exist (one sub-folder per class, or a "
                                    f"labels.csv with columns image, label)")
        labels_csv = root / "labels.csv"
        if labels_csv.is_file():
            rows = _read_csv(labels_csv, ",", ("image", "label"))
            return [(r["image"], int(r["label"])) for r in rows]
        self._folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self._folders:
            raise DataNotFoundError(f"zero-shot folder {root} has no class sub-folders and no labels.csv")
        return [(f"{folder}/{f.name}", label) for label, folder in enumerate(self._folders)
                for f in sorted((root / folder).iterdir()) if f.suffix in IMAGE_SUFFIXES]

    def _choose_class_names(self) -> tuple[str, ...]:
        given = self._class_names_arg
        count = max(label for _, label in self._eval) + 1 if self._eval else 0
        if isinstance(given, str):
            path = Path(given)
            if not path.is_file():
                raise DataNotFoundError(f"class-name file {path} does not exist (one name per line)")
            given = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if given is not None:
            names = tuple(given)
        elif count == 1000:
            from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

            names = tuple(IMAGENET_CLASSNAMES)
        elif getattr(self, "_folders", None):
            names = tuple(f.replace("_", " ") for f in self._folders)
        else:
            raise ConfigError(f"captions: labels.csv in {self.eval_dir} gives {count} classes; pass class_names")
        if len(names) < count:
            raise ConfigError(f"captions: {len(names)} class names for labels up to {count - 1}")
        return names

    def identity(self) -> dict:
        return {"dataset": self.name, "pairs": _digest([[r[self.image_key], r[self.caption_key]] for r in self._pairs]),
                "eval": _digest(self._eval), "zero_shot": self.zero_shot_identity(), "image_size": self.image_size}

    def load(self):
        cache = self.data_dir / ".cache" / f"captions-{_digest(self.identity())}.safetensors"
        cached = read_cache(cache)
        if cached is not None:
            return cached
        root = self.train_csv.parent
        train = torch.stack([decode_image(root / r[self.image_key], self.image_size) for r in self._pairs])
        test = torch.stack([decode_image(self.eval_dir / p, self.image_size) for p, _ in self._eval])
        tensors = (train, torch.full((len(train),), -1, dtype=torch.long), test,
                   torch.tensor([label for _, label in self._eval], dtype=torch.long))
        write_cache(cache, tensors)
        return tensors

    def load_captions(self) -> list[str]:
        return [r[self.caption_key] for r in self._pairs]
