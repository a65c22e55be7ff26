"""What every stage of one cell shares, whatever its model family: the
spec, the loaded data with the cell's seeded selections, the store, the
trainer settings, models (built, loaded and viewed as classifiers through
the family), the trigger and the evaluation sets.

The trigger is built from its parameters; a trigger with state (prepared in
its own stage, or learned while training f_A) is completed from the store
the first time a job needs it, which is always after the jobs holding that
state have run (they are its inputs, directly or through f_A).
"""
from __future__ import annotations

from functools import cached_property

import lightning as L
import torch
from rich.console import Console

from benchmark.errors import StoreError
from benchmark.storage.store import Artifact, ArtifactStore
from benchmark.training import TrainerFactory
from benchmark.triggers import Trigger, build_trigger, takes_seed
from benchmark.triggers.base import STATE_PREFIX
from lightning_modules.base import BackdoorStage
from lightning_modules.reactivation.base import DeltaEvaluation


class CellContext:
    def __init__(self, spec, store: ArtifactStore, dm, trainers: TrainerFactory, console: Console):
        self.spec, self.store, self.dm, self.trainers, self.console = spec, store, dm, trainers, console
        self.family = spec.family
        self.preset = self.family.attacks.get(spec.attack)
        params = {**self.preset.trigger_params, **spec.trigger_params}
        self.trigger_params = params
        # The seed is part of the trigger's identity when its pattern is drawn from it.
        self.trigger_config = {"name": self.preset.trigger, **params,
                               **({"seed": spec.seed} if takes_seed(self.preset.trigger) else {})}
        # A bad trigger parameter fails here, at planning time.
        self.trigger_class = type(self.new_trigger())
        # Clean-label attacks poison target-class samples only (labels unchanged).
        self.poison_selection = "target" if getattr(self.preset, "clean_label", False) else spec.poison_selection
        self.poison_idx = dm.poison_indices(spec.poison_rate, spec.target_label, spec.seed,
                                            selection=self.poison_selection)
        # The defender's clean subset: clean pixels of any training index
        # (BackdoorBench), or of never-poisoned ones only.
        self.clean_idx = dm.clean_subset_indices(
            spec.clean_ratio, spec.seed, exclude=self.poison_idx if spec.clean_subset == "non_poisoned" else None)
        # Where the re-activation attacker's samples come from (non-target
        # images by default: for SIG/LC the poisoned ones are all target-class).
        self.attacker_pool = dm.attacker_pool(self.poison_idx, spec.target_label, spec.attacker_samples)
        # The jobs whose artifacts hold the trigger's state (set by the plan).
        self.trigger_job = None
        self.attack_job = None
        self._planned: dict[str, object] = {}

    @property
    def name(self) -> str:
        s = self.spec
        return f"{self.family.name_prefix}{s.dataset}/{s.arch}/{s.attack}/seed{s.seed}"

    def seed_everything(self) -> None:
        L.seed_everything(self.spec.seed, workers=True, verbose=False)

    def planned(self, what: tuple, make):
        """`make()` once per plan-time question (a defense's or a method's
        config for a model): the plan asks again for every surrogate use."""
        key = repr(what)
        if key not in self._planned:
            self._planned[key] = make()
        return self._planned[key]

    # ---- models (the family's) --------------------------------------------------------
    def model_spec(self, arch: str | None = None) -> dict:
        return self.family.model_spec(self, arch or self.spec.arch)

    def new_model(self, model_spec: dict):
        """A freshly initialised trainable model."""
        return self.family.new_model(self, model_spec)

    def plan_model(self, model_spec: dict):
        """The classifier view without weights (meta device): layer names and
        parameter checks at planning time."""
        return self.family.plan_model(self, model_spec)

    def plan_trainable(self, model_spec: dict):
        return self.family.plan_trainable(self, model_spec)

    def load_trainable(self, artifact: Artifact):
        """The stored model as its family trains it (a CLIP, a classifier)."""
        try:
            model_spec = artifact.config["model"]
            model = self.family.new_model(self, model_spec)
        except (KeyError, TypeError):
            raise StoreError(f"{artifact.path} holds no model description; delete that directory") from None
        try:
            self.family.load_weights(model, artifact.tensors())
        except RuntimeError as exc:
            raise StoreError(f"weights in {artifact.path} do not fit {model_spec['arch']} "
                             f"({str(exc).splitlines()[0]}); delete that directory to recompute it") from None
        return model.to(self.trainers.device)

    def load_model(self, artifact: Artifact):
        """The stored model's classifier view: what every shared stage measures."""
        return self.classifier_view(self.load_trainable(artifact))

    def classifier_view(self, model):
        return self.family.classifier_view(self, model)

    # ---- the trigger -----------------------------------------------------------------
    def new_trigger(self) -> Trigger:
        """The trigger built from its parameters, without prepared or learned state."""
        return build_trigger(self.preset.trigger, self.dm.image_shape, seed=self.spec.seed, **self.trigger_params)

    def trigger_with_state(self, prepared: Artifact | None = None, learned: Artifact | None = None) -> Trigger:
        trigger = self.new_trigger()
        state = dict(prepared.tensors()) if prepared is not None else {}
        if learned is not None:
            state.update({k[len(STATE_PREFIX):]: v for k, v in learned.tensors().items()
                          if k.startswith(STATE_PREFIX)})
        if state or trigger.has_stage:
            trigger.load_state_dict(state)
        return trigger

    @cached_property
    def trigger(self) -> Trigger:
        """The attacker's trigger, complete (read from the store on first use)."""
        prepared = self._load(self.trigger_job) if self.trigger_job is not None else None
        learned = self._load(self.attack_job) if self.trigger_class.learned_in_attack else None
        return self.trigger_with_state(prepared, learned)

    def _load(self, job) -> Artifact:
        if not self.store.has(job.kind, job.key):
            raise StoreError(f"the trigger of {self.name} needs {job.kind} job {job.label!r}, which has not run")
        return self.store.load(job.kind, job.key)

    # ---- evaluation ------------------------------------------------------------------
    # The evaluation sets, built once per cell: every stage evaluates on them.
    @cached_property
    def poisoned_test(self):
        return self.dm.poisoned_test_set(self.trigger, self.spec.target_label)

    @cached_property
    def clean_non_target_test(self):
        return self.dm.non_target_clean_test_set(self.spec.target_label)

    def evaluate(self, model, clean: bool = True, poisoned: bool = True, trigger: Trigger | None = None) -> dict:
        """C-Acc on the clean test set, ASR and RA on the poisoned one (made
        with `trigger` when given, else the cell's)."""
        stage = BackdoorStage(model, self.dm.num_classes, self.spec.target_label)
        poisoned_set = None
        if poisoned:
            poisoned_set = (self.poisoned_test if trigger is None
                            else self.dm.poisoned_test_set(trigger, self.spec.target_label))
        return self.trainers.evaluate(stage, self.dm.loader(self.dm.clean_test_set()) if clean else None,
                                      self.dm.loader(poisoned_set) if poisoned else None)

    def evaluate_delta(self, model, delta: torch.Tensor, use_trigger: bool) -> dict:
        """ASR of trigger + delta on the poisoned test set, or (gUAA control)
        of clean + delta on clean non-target test images."""
        eval_set = self.poisoned_test if use_trigger else self.clean_non_target_test
        stage = DeltaEvaluation(model, self.dm.num_classes, self.spec.target_label, delta)
        return self.trainers.evaluate(stage, poisoned_loader=self.dm.loader(eval_set))
