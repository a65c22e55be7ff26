"""What every cell's spec has, whatever its model family: the fields the
paper's protocol defines for any model (dataset, attack, defenses, seed,
poisoning and the defender's and attacker's data, the re-activation budget,
BEC), their validation, and reading a spec back from its dict.

A family's spec (`families/classifier.py`'s `CellSpec`, `families/clip.py`'s
`ClipCellSpec`) subclasses `SpecBase`, adds its own fields (how its models
are trained), may change a field's default, and checks its own names
(dataset, attack, trigger) in `validate_family`. Everything else is
validated here once: the type hints are the schema (benchmark.extension.schema).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, \
    check_value, validate_params

# Parameters of transfer methods that choose surrogates; the runner, not the
# module, consumes them.
SURROGATE_KEYS = ("surrogates", "surrogate_arch")
# __init__ arguments of a re-activation method the runner supplies; the rest
# of its typed signature is what a user may set.
REACTIVATION_RUNNER_ARGS = ("model", "oracle", "surrogates", "image_shape", "target_label", "epsilon", "norm",
                            "seed")
RETUNING_RUNNER_ARGS = ("model", "num_classes", "target_label", "augment")
QRA_RUNNER_ARGS = ("model", "retuned", "clean_model", "image_shape")


def _field(default, help: str):
    """A spec field with its command-line help (the CLI is derived from these
    fields, their type hints and defaults)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SpecBase:
    """The fields every family's cell has. Defaults follow PAPER.md; a family
    redeclares a field to change its default (its position stays)."""
    dataset: str = _field("fashion_mnist", "dataset name")
    arch: str = _field("small_cnn", "architecture")
    attack: str = _field("badnets", "attack name, or a plugin package.module:Name / file.py:Name")
    defenses: tuple[str, ...] = _field(("ft", "nad"), "defense names or plugins (package.module:Class, "
                                       "path/to/file.py:Class)")
    seed: NonNegativeInt = _field(0, "seed of data selections, initialisation and data order")
    poison_rate: OpenUnitInterval = _field(0.1, "fraction of training samples poisoned")
    # "all": poisoned indices drawn from every training sample (BackdoorBench);
    # "non_target": from non-target samples only, so every one is label-flipped
    poison_selection: Literal["all", "non_target"] = _field(
        "all", "draw poisoned samples from all training samples (BackdoorBench) or non-target ones; "
               "clean-label attacks (sig, lc) always draw from the target class")
    target_label: NonNegativeInt = _field(0, "the backdoor's target class")
    clean_ratio: Fraction = _field(0.05, "the defender's clean subset, fraction of the training set")
    # "any": drawn from every training index, served with clean pixels and
    # true labels (BackdoorBench); "non_poisoned": never a poisoned index
    # (for SIG/LC at rate 0.1 that is no target-class image at all)
    clean_subset: Literal["any", "non_poisoned"] = _field(
        "any", "where the defender's clean subset is drawn from: any training index (clean pixels; "
               "BackdoorBench) or only never-poisoned ones")
    reactivations: tuple[str, ...] = _field(("wba",), "re-activation methods or plugins")
    # "non_target": non-target images with the trigger (poisoned ones where
    # there are, any non-target image for clean-label attacks); "poisoned":
    # the poisoned indices as drawn (target-class images included)
    attacker_samples: Literal["non_target", "poisoned"] = _field(
        "non_target", "the re-activation attacker's samples: non-target training images (poisoned ones "
                      "first) or the poisoned indices as drawn")
    epsilon: PositiveFloat = _field(0.05, "re-activation budget in [0, 1] pixel units (L-inf: below 1)")
    norm: Literal["linf", "l2", "l1"] = _field("linf", "norm of the re-activation budget")
    # one budget hides how close a defense is to failing: the same methods at
    # a ladder of budgets, with the smallest ε where re-activation beats gUAA
    epsilon_curve: tuple[PositiveFloat, ...] = _field((), "further re-activation budgets (same norm) at which "
                                                          "every method and its gUAA control also run")
    epsilon_curve_defenses: tuple[str, ...] | None = _field(None, "the defenses the ε curve runs on, of "
                                                                  "those the cell has (default: all of them)")
    epsilon_margin: Fraction = _field(0.1, "the ε curve's threshold: the smallest budget at which "
                                           "re-activation ASR exceeds its gUAA control by this much")
    # weight-space re-activation (Min et al. 2024): retune a copy of every
    # model on a small attacker-held set; EP (exact purification) is its control
    retunings: tuple[str, ...] = _field((), "weight-space re-activation methods (ra) or plugins; adds the "
                                            "exact-purification control row")
    qra: bool = _field(False, "run QRA (a per-input generator carrying the ra-retuned model's backdoor into "
                              "the defended one) against every defense and exact purification; needs ra")
    # the noise-robustness and feature-CKA controls per method x defense (the
    # gUAA control always runs)
    controls: bool = _field(True, "run the noise-robustness and feature-CKA controls")
    bec_samples: PositiveInt = _field(500, "triggered test images whose features BEC compares")
    bec_rank_samples: PositiveInt = _field(2200, "clean/triggered test pairs that rank BEC's channels "
                                                 "(the authors' ~2,200)")
    bec_ratio: Fraction = _field(0.1, "fraction of channels BEC keeps per layer")
    trigger_params: dict = _field({}, "JSON overrides of the attack's trigger, e.g. '{\"size\": 4}'")
    defense_params: dict = _field({}, "JSON {defense: {param: value}}, e.g. '{\"ft\": {\"epochs\": 20}}'")
    reactivation_params: dict = _field({}, "JSON {method: {param: value}}, e.g. '{\"wba\": {\"epochs\": 10}}'")
    retuning_params: dict = _field({}, "JSON {method, qra or exact-purification: {param: value}}, e.g. "
                                       "'{\"ra\": {\"epochs\": 5}}'")
    data_params: dict = _field({}, "JSON extra data-module arguments")

    #: the model family's name (benchmark.cell.family.FAMILIES); a spec's dict
    #: carries it as "kind" unless it is the default family
    kind: ClassVar[str] = "classifier"
    #: how error messages name this kind of cell
    label: ClassVar[str] = "cell"

    @property
    def family(self):
        from benchmark.cell.family import family

        return family(self.kind)

    def validate_family(self) -> None:
        """The family's own checks (dataset, attack, trigger): a subclass's."""

    def validate(self) -> None:
        """Every value against its type hint, every name against its registry
        (plugins included), every method parameter against the method's
        typed __init__: one-line ConfigErrors, before anything runs."""
        from lightning_modules.reactivation import REACTIVATIONS
        from lightning_modules.reactivation.norms import check_budget
        from lightning_modules.retuning import RETUNINGS

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(self.label, f.name, getattr(self, f.name), hints[f.name]))
        family = self.family
        self.validate_family()
        for name in self.reactivations:
            REACTIVATIONS.get(name)
        for name in self.defenses:
            family.defenses.get(name)
        if len(set(self.defenses)) != len(self.defenses):
            raise ConfigError(f"defenses listed twice: {list(self.defenses)}")
        check_budget(self.norm, self.epsilon)
        for eps in self.epsilon_curve:
            check_budget(self.norm, eps)
        if len(set(self.epsilon_curve) | {self.epsilon}) != len(self.epsilon_curve) + 1:
            raise ConfigError(f"epsilon_curve {list(self.epsilon_curve)} repeats a budget (the cell's epsilon "
                              f"{self.epsilon} is always a point of the curve)")
        # a filter on the cell's defenses (a derived cell, e.g. `bdbench score`'s
        # candidate, keeps the grid's list): a name must exist, need not be here
        for name in self.epsilon_curve_defenses or ():
            family.defenses.get(name)
        for name in self.retunings:
            RETUNINGS.get(name)
        if self.qra and "ra" not in self.retunings:
            raise ConfigError("qra imitates the model the retuning attack made: add 'ra' to retunings")
        if len(set(self.retunings)) != len(self.retunings):
            raise ConfigError(f"retunings listed twice: {list(self.retunings)}")
        for section in ("defense_params", "reactivation_params", "retuning_params"):
            for name, params in getattr(self, section).items():
                if not isinstance(params, dict):
                    raise ConfigError(f"{self.label}: {section}[{name!r}] must map parameter names to values, "
                                      f"got {params!r}")
        self.defense_params = {name: validate_params(f"{family.defense_label} {name!r}", family.defenses.get(name),
                                                     params, family.defense_runner_args)
                               for name, params in self.defense_params.items()}
        self.reactivation_params = {
            name: {**validate_params(f"re-activation {name!r}", REACTIVATIONS.get(name),
                                     {k: v for k, v in params.items() if k not in SURROGATE_KEYS},
                                     REACTIVATION_RUNNER_ARGS),
                   **_surrogate_params(name, params)}
            for name, params in self.reactivation_params.items()}
        self.retuning_params = {name: validate_params(f"weight-space re-activation {name!r}",
                                                      _retuning_class(name), params,
                                                      QRA_RUNNER_ARGS if name == "qra" else RETUNING_RUNNER_ARGS)
                                for name, params in self.retuning_params.items()}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["defenses"], out["reactivations"] = list(self.defenses), list(self.reactivations)
        out["retunings"], out["epsilon_curve"] = list(self.retunings), list(self.epsilon_curve)
        if self.epsilon_curve_defenses is not None:
            out["epsilon_curve_defenses"] = list(self.epsilon_curve_defenses)
        if self.kind != SpecBase.kind:
            out["kind"] = self.kind
        return out

    @classmethod
    def from_dict(cls, data: dict):
        data = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{cls.label}: unknown field(s) {unknown}; allowed: "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        for key in ("defenses", "reactivations", "retunings", "epsilon_curve", "epsilon_curve_defenses"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)


def spec_from_dict(data: dict) -> SpecBase:
    """A cell spec from its dict: the family named by `kind` (default: the
    image classifiers) reads it."""
    from benchmark.cell.family import family

    return family(data.get("kind", SpecBase.kind)).spec_class.from_dict(data)


def _retuning_class(name: str):
    """A weight-space method, QRA, or the exact-purification control."""
    from lightning_modules.retuning import RETUNINGS
    from lightning_modules.retuning.exact_purification import NAME, ExactPurification
    from lightning_modules.retuning.qra import QueryReactivationAttack

    return {NAME: ExactPurification, "qra": QueryReactivationAttack}.get(name) or RETUNINGS.get(name)


def _surrogate_params(method: str, params: dict) -> dict:
    """The transfer runner's own parameters (which defenses, which arch)."""
    out = {k: params[k] for k in SURROGATE_KEYS if k in params}
    if "surrogates" in out:
        out["surrogates"] = check_value(f"re-activation {method!r}", "surrogates", out["surrogates"],
                                        list[str] | None)
    if "surrogate_arch" in out:
        out["surrogate_arch"] = check_value(f"re-activation {method!r}", "surrogate_arch",
                                            out["surrogate_arch"], str | None)
    return out
