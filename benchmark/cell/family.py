"""The model-family interface: everything that differs between an image
classifier and CLIP, so that the cell, its plan, its validation, its rows
and keys, and the stage kinds they share (evaluate, BEC, re-activation and
gUAA, controls, the defense stage's bookkeeping) are written once.

A family answers four questions:

- **its spec**: which fields a cell of it has (`spec_class`, a
  `benchmark.cell.spec.SpecBase`) and its data module's arguments;
- **its models**: how one is built from a model description, loaded from
  the store, and what its *classifier view* is (the function from [0, 1]
  images to class logits that every shared stage measures; a classifier is
  its own view, a CLIP its zero-shot classifier);
- **its methods**: the attack presets and defenses that apply to it, and how
  a defense module is built and fed (the defender's data);
- **its training stages**: the jobs that make the clean model f_C and the
  backdoored model f_A (and the attacker's f_A on another architecture, for
  transfer surrogates).

Families are registered by name in `FAMILIES` (`families/__init__.py`); a
spec names its family with its class attribute `kind`. A third family (a
segmentation or speech model) is one module in `families/` with its spec,
its hooks and its training stages, plus its methods.
"""
from __future__ import annotations

import importlib

from benchmark.errors import ConfigError


class ModelFamily:
    #: the family's name: a spec's `kind`, a grid's `kind`
    kind: str = ""
    #: how cell names start (cells of different families never share a name)
    name_prefix: str = ""
    #: how error messages name its defenses
    defense_label: str = "defense"
    #: __init__ arguments of its defenses that the runner supplies
    defense_runner_args: tuple[str, ...] = ()
    #: evaluation batch on a GPU (as large as its models take without strain)
    gpu_eval_batch_size: int = 4096
    #: the spec field a grid's per-attack options (`attack_params`) go to
    attack_options_field: str = "attack_params"

    #: the family's spec (a `benchmark.cell.spec.SpecBase` subclass)
    spec_class: type = None
    #: the registries of the attack presets (each with `trigger`,
    #: `trigger_params`; a classifier preset also `clean_label`) and the
    #: defenses that apply to this family
    attacks = None
    defenses = None

    # ---- the data ---------------------------------------------------------------------

    def datamodule_args(self, spec) -> dict:
        """Keyword arguments of `datamodules.build_datamodule` besides the
        dataset name and data directory."""
        return dict(spec.data_params)

    # ---- the defenses ------------------------------------------------------------------
    def defense_module(self, ctx, name: str, model, data_args: dict):
        """Defense `name` built on `model` (a trainable model of this family)
        with the defender's data arguments (`defender_data`)."""
        raise NotImplementedError

    def defender_data(self, ctx, planning: bool = False) -> tuple[object, dict]:
        """(the dataset a defense trains on, the extra arguments its module
        takes): the defender's clean subset and nothing else. `planning`:
        only the arguments are needed (the dataset may be None)."""
        raise NotImplementedError

    # ---- models ------------------------------------------------------------------------
    def model_spec(self, ctx, arch: str) -> dict:
        """Everything a stored model's classifier view depends on besides its
        weights (part of every key that holds a model)."""
        raise NotImplementedError

    def new_model(self, ctx, model_spec: dict, device=None):
        """A freshly initialised trainable model (on `device`; "meta" for
        planning: no weights allocated)."""
        raise NotImplementedError

    def load_weights(self, model, tensors: dict) -> None:
        """Load a stored model's tensors into `model` (strict: a mismatch
        raises RuntimeError)."""
        raise NotImplementedError

    def classifier_view(self, ctx, model):
        """The classifier every shared stage measures: logits of [0, 1]
        images, `bec_layers` named."""
        return model

    def plan_model(self, ctx, model_spec: dict):
        """The classifier view without weights, for planning (layer names, a
        method's parameter checks)."""
        return self.classifier_view(ctx, self.new_model(ctx, model_spec, device="meta"))

    def plan_trainable(self, ctx, model_spec: dict):
        """A trainable model without weights, for planning a defense."""
        return self.new_model(ctx, model_spec, device="meta")

    # ---- training stages ------------------------------------------------------------------
    def plan_models(self, ctx, plan):
        """Add the jobs that make f_C and f_A to `plan`; returns (clean job,
        attack job) and records in `ctx` the jobs that hold the trigger's state."""
        raise NotImplementedError

    def surrogate_source(self, ctx, plan, method: str, arch: str):
        """The attacker's own backdoored model on `arch`, which a transfer
        method's surrogates are defended copies of."""
        if arch != ctx.spec.arch:
            raise ConfigError(f"{method}: surrogate_arch is not supported in a {self.kind} cell "
                              f"(one architecture per cell)")
        return ctx.attack_job


#: family name -> the module that defines it (imported on first use)
FAMILY_MODULES = {
    "classifier": "benchmark.cell.families.classifier",
    "clip": "benchmark.cell.families.clip",
}
_LOADED: dict[str, ModelFamily] = {}


def family(kind: str) -> ModelFamily:
    """The model family called `kind`."""
    if kind not in _LOADED:
        if kind not in FAMILY_MODULES:
            raise ConfigError(f"unknown model family {kind!r}; known: {', '.join(FAMILY_MODULES)}")
        _LOADED[kind] = importlib.import_module(FAMILY_MODULES[kind]).FAMILY
    return _LOADED[kind]


def family_names() -> list[str]:
    return list(FAMILY_MODULES)
