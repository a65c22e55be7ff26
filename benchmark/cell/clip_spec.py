"""What defines a CLIP cell: `ClipCellSpec`, its typed fields and their
validation before anything is planned.

A CLIP cell is dataset (caption pairs + a labelled zero-shot set) x CLIP
architecture x attack x seed. Defaults follow the paper's setting as far as
it is known (METHODS.md section 7): the clean model f_C is the pretrained
CLIP (`pretrained`), poisoned by fine-tuning on pairs of which 0.3 % carry
the trigger and a target-class caption (CleanCLIP's 1,500 of 500K), 10
epochs at lr 1e-6, batch 128 (BadCLIP's README), 50 warm-up steps (the
CleanCLIP paper). Without pretrained weights f_C is trained from scratch on
the clean pairs with CleanCLIP's pre-training defaults (src/parser.py: lr
5e-4, batch 128, 10,000 warm-up steps, 64 epochs). The defender holds 20 % of
the pairs clean (100K of CleanCLIP's 500K, its issue #12).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass
from typing import Literal

from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, check_value, \
    validate_params
from benchmark.cell.spec import SURROGATE_KEYS, _field, _surrogate_params
from benchmark.triggers import TRIGGER_RUNNER_ARGS, TRIGGERS
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.norms import check_budget

#: __init__ arguments of a CLIP defense the runner supplies
CLIP_DEFENSE_RUNNER_ARGS = ("model", "captions", "seed")
REACTIVATION_RUNNER_ARGS = ("model", "oracle", "surrogates", "image_shape", "target_label", "epsilon", "norm",
                            "seed")
#: the discriminator a grid and the sweep worker read from a spec's dict
KIND = "clip"


@dataclass
class ClipCellSpec:
    dataset: str = _field("fashion_mnist_captions", "caption dataset: fashion_mnist_captions or captions "
                                                    "(your CSV + zero-shot folder, see data_params)")
    arch: str = _field("tiny", "CLIP architecture: tiny or an open_clip model name (RN50, ViT-B-32, ...)")
    pretrained: str | None = _field(None, "f_C's weights: a local checkpoint file, an open_clip hub tag "
                                          "(needs a network), or none (trained from scratch on the clean pairs)")
    model_params: dict = _field({}, "JSON open_clip config overrides (vision_cfg, text_cfg, embed_dim)")
    attack: str = _field("badnets", "CLIP attack: badnets, blended, sig, trojanvqa")
    defenses: tuple[str, ...] = _field(("cleanclip", "ft"), "CLIP defenses (cleanclip, ft, or plugins)")
    seed: NonNegativeInt = _field(0, "seed of data selections, initialisation and data order")
    target_label: NonNegativeInt = _field(0, "the target class (an index of the zero-shot classes)")
    pretrain_epochs: PositiveInt = _field(64, "epochs of f_C when trained from scratch")
    pretrain_lr: PositiveFloat = _field(5e-4, "lr of f_C when trained from scratch")
    pretrain_batch_size: PositiveInt = _field(128, "batch of f_C when trained from scratch")
    pretrain_warmup: NonNegativeInt = _field(10000, "warm-up steps of f_C when trained from scratch")
    poison_epochs: PositiveInt = _field(10, "epochs of the poisoning fine-tune")
    poison_lr: PositiveFloat = _field(1e-6, "lr of the poisoning fine-tune")
    poison_batch_size: PositiveInt = _field(128, "batch of the poisoning fine-tune")
    poison_warmup: NonNegativeInt = _field(50, "warm-up steps of the poisoning fine-tune")
    poison_rate: OpenUnitInterval = _field(0.003, "fraction of the pairs poisoned (CleanCLIP: 1,500 of 500K)")
    poison_selection: Literal["all", "non_target"] = _field(
        "all", "draw poisoned pairs from all pairs, or from non-target ones (needs labelled pairs)")
    clean_ratio: Fraction = _field(0.2, "the defender's clean pairs, fraction of the training pairs")
    reactivations: tuple[str, ...] = _field(("wba",), "re-activation methods (wba, qbra, tbra) or plugins")
    attacker_samples: Literal["non_target", "poisoned"] = _field(
        "non_target", "the re-activation attacker's samples: non-target poisoned pairs' images, or the "
                      "poisoned pairs as drawn")
    epsilon: PositiveFloat = _field(0.05, "re-activation budget in [0, 1] pixel units (L-inf: below 1)")
    norm: Literal["linf", "l2", "l1"] = _field("linf", "norm of the re-activation budget")
    controls: bool = _field(False, "run the noise-robustness and feature-CKA controls")
    bec_samples: PositiveInt = _field(500, "triggered test images whose features BEC compares")
    bec_rank_samples: PositiveInt = _field(2200, "clean/triggered test pairs that rank BEC's channels")
    bec_ratio: Fraction = _field(0.1, "fraction of channels BEC keeps per layer")
    trigger_params: dict = _field({}, "JSON overrides of the attack's trigger, e.g. '{\"size\": 4}'")
    defense_params: dict = _field({}, "JSON {defense: {param: value}}")
    reactivation_params: dict = _field({}, "JSON {method: {param: value}}")
    data_params: dict = _field({}, "JSON data-module arguments (captions: train_csv, eval_dir, ...)")

    kind = KIND

    def validate(self) -> None:
        from lightning_modules.clip.attacks import CLIP_ATTACKS
        from lightning_modules.clip.defenses import CLIP_DEFENSES
        from datamodules import DATASETS
        from datamodules.captions import CaptionDataModule

        hints = typing.get_type_hints(ClipCellSpec)
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value("clip cell", f.name, getattr(self, f.name), hints[f.name]))
        if not issubclass(DATASETS.get(self.dataset), CaptionDataModule):
            raise ConfigError(f"dataset {self.dataset!r} has no captions; a CLIP cell needs a caption dataset: "
                              f"{', '.join(n for n in DATASETS.names() if issubclass(DATASETS.get(n), CaptionDataModule))}")
        attack = CLIP_ATTACKS.get(self.attack)
        self.trigger_params = validate_params(f"trigger {attack.trigger!r}", TRIGGERS.get(attack.trigger),
                                              self.trigger_params, TRIGGER_RUNNER_ARGS)
        if "none" in self.defenses:
            raise ConfigError("'none' is not a CLIP defense: the backdoored row is always reported")
        for name in self.defenses:
            CLIP_DEFENSES.get(name)
        if len(set(self.defenses)) != len(self.defenses):
            raise ConfigError(f"defenses listed twice: {list(self.defenses)}")
        for name in self.reactivations:
            REACTIVATIONS.get(name)
        check_budget(self.norm, self.epsilon)
        for section in ("defense_params", "reactivation_params"):
            for name, params in getattr(self, section).items():
                if not isinstance(params, dict):
                    raise ConfigError(f"clip cell: {section}[{name!r}] must map parameter names to values, "
                                      f"got {params!r}")
        self.defense_params = {name: validate_params(f"CLIP defense {name!r}", CLIP_DEFENSES.get(name), params,
                                                     CLIP_DEFENSE_RUNNER_ARGS)
                               for name, params in self.defense_params.items()}
        self.reactivation_params = {
            name: {**validate_params(f"re-activation {name!r}", REACTIVATIONS.get(name),
                                     {k: v for k, v in params.items() if k not in SURROGATE_KEYS},
                                     REACTIVATION_RUNNER_ARGS),
                   **_surrogate_params(name, params)}
            for name, params in self.reactivation_params.items()}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["defenses"], out["reactivations"] = list(self.defenses), list(self.reactivations)
        out["kind"] = KIND
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ClipCellSpec":
        data = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"clip cell: unknown field(s) {unknown}; allowed: "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        for key in ("defenses", "reactivations"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)


def spec_from_dict(data: dict):
    """A CellSpec or ClipCellSpec from its dict (`kind` tells them apart)."""
    if data.get("kind") == KIND:
        return ClipCellSpec.from_dict(data)
    from benchmark.cell.spec import CellSpec

    return CellSpec.from_dict(data)
