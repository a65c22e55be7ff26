"""What a CLIP cell's stages share. It is a `CellContext` whose models are
CLIP: `load_model` gives a `ZeroShotClassifier` (the image tower against the
zero-shot classes' template-averaged text embeddings of that same model), so
the classifier stages (evaluate, BEC, re-activation and gUAA, controls) run
on CLIP unchanged; `load_clip` gives the `ClipModel` itself for the stages
that train it.

Zero-shot ASR, defined once: the fraction of triggered test images whose
true class is not the target that the zero-shot classifier assigns to the
target class (`benchmark.measures.metrics.AttackSuccessRate` on the data module's
poisoned test set, the classifier protocol). C-Acc: zero-shot top-1 accuracy
on the clean labelled test set.
"""
from __future__ import annotations

import hashlib
import json
from functools import cached_property

import torch
from rich.console import Console

from benchmark.cell.clip_spec import ClipCellSpec
from benchmark.errors import StoreError
from benchmark.models.clip_model import ClipModel, ZeroShotClassifier, build_clip, weights_identity
from benchmark.cell.stages.context import CellContext
from benchmark.storage.store import Artifact, ArtifactStore
from benchmark.training import TrainerFactory
from benchmark.triggers import Trigger, build_trigger, takes_seed
from lightning_modules.clip.attacks import CLIP_ATTACKS


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class ClipCellContext(CellContext):
    def __init__(self, spec: ClipCellSpec, store: ArtifactStore, dm, trainers: TrainerFactory, console: Console):
        self.spec, self.store, self.dm, self.trainers, self.console = spec, store, dm, trainers, console
        self.preset = CLIP_ATTACKS.get(spec.attack)
        self.trigger_params = {**self.preset.trigger_params, **spec.trigger_params}
        self.trigger_config = {"name": self.preset.trigger, **self.trigger_params,
                               **({"seed": spec.seed} if takes_seed(self.preset.trigger) else {})}
        self.trigger_class = type(self.new_trigger())  # a bad trigger parameter fails now
        self.poison_selection = spec.poison_selection
        self.poison_idx = dm.poison_indices(spec.poison_rate, spec.target_label, spec.seed,
                                            selection=self.poison_selection)
        # CLIP's defender holds clean pairs that were never poisoned (CleanCLIP
        # fine-tunes on a separate clean set); a poisoned pair's clean caption
        # is not what the attacker's data set holds.
        self.clean_idx = dm.clean_subset_indices(spec.clean_ratio, spec.seed, exclude=self.poison_idx)
        self.attacker_pool = dm.attacker_pool(self.poison_idx, spec.target_label, spec.attacker_samples)
        self.trigger_job = None
        self.attack_job = None
        self._planned: dict[str, object] = {}
        self.weights = weights_identity(spec.pretrained)  # a missing checkpoint fails at planning

    @property
    def name(self) -> str:
        s = self.spec
        return f"clip/{s.dataset}/{s.arch}/{s.attack}/seed{s.seed}"

    # ---- models --------------------------------------------------------------------
    def model_spec(self, arch: str | None = None) -> dict:
        """The architecture, the data's image geometry and the zero-shot head
        (class names and templates, by hash): everything a stored CLIP's
        classifier view depends on besides its weights."""
        c, h, _ = self.dm.image_shape
        return {"arch": arch or self.spec.arch, "family": "clip", "overrides": self.spec.model_params,
                "image_size": h, "in_channels": c,
                "zero_shot": _digest([list(self.dm.class_names), list(self.dm.templates)])}

    def class_prompts(self) -> list[list[str]]:
        return [[t.format(name) for t in self.dm.templates] for name in self.dm.class_names]

    def new_clip(self, model_spec: dict, pretrained: str | None = None, device="cpu") -> ClipModel:
        m = model_spec
        return build_clip(m["arch"], m["image_size"], m["in_channels"], pretrained=pretrained,
                          overrides=m["overrides"], device=device)

    def plan_model(self, model_spec: dict) -> ZeroShotClassifier:
        """The classifier view without weights (meta device): layer names and
        parameter checks at planning time."""
        return self.planned(("plan clip", model_spec),
                            lambda: ZeroShotClassifier(self.new_clip(model_spec, device="meta"), self.class_prompts()))

    def load_clip(self, artifact: Artifact) -> ClipModel:
        try:
            model = self.new_clip(artifact.config["model"])
        except (KeyError, TypeError):
            raise StoreError(f"{artifact.path} holds no CLIP model description; delete that directory") from None
        try:
            model.clip.load_state_dict(artifact.tensors(), strict=True)
        except RuntimeError as exc:
            raise StoreError(f"weights in {artifact.path} do not fit CLIP {artifact.config['model']['arch']} "
                             f"({str(exc).splitlines()[0]}); delete that directory to recompute it") from None
        return model.to(self.trainers.device)

    def load_model(self, artifact: Artifact) -> ZeroShotClassifier:
        return ZeroShotClassifier(self.load_clip(artifact), self.class_prompts()).to(self.trainers.device)

    def zero_shot(self, model: ClipModel) -> ZeroShotClassifier:
        return ZeroShotClassifier(model, self.class_prompts()).to(self.trainers.device)

    # ---- the trigger: a function of the image and the seed, no stage of its own --------
    def new_trigger(self) -> Trigger:
        return build_trigger(self.preset.trigger, self.dm.image_shape, seed=self.spec.seed, **self.trigger_params)

    @cached_property
    def trigger(self) -> Trigger:
        return self.new_trigger()

    # ---- captions --------------------------------------------------------------------
    def training_captions(self) -> list[str]:
        """Every training pair's caption, the poisoned ones replaced by a
        caption naming the target class."""
        captions = list(self.dm.captions)
        replaced = self.dm.target_captions(self.poison_idx, self.spec.target_label, self.spec.seed)
        for i, caption in zip(self.poison_idx.tolist(), replaced):
            captions[i] = caption
        return captions

    def poison_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.dm.num_train, dtype=torch.bool)
        mask[self.poison_idx] = True
        return mask
