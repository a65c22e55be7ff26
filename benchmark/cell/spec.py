"""What defines a cell: `CellSpec`, its typed fields (the schema the CLI and
grids are derived from) and the validation of every value and method
parameter before anything is planned."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Literal

from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, check_value, \
    schema, validate_params
from benchmark.triggers import TRIGGER_RUNNER_ARGS, TRIGGERS
from datamodules import DATASETS
from lightning_modules.attacks import ATTACKS
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.norms import check_budget

# Parameters of transfer methods that choose surrogates; the runner, not the
# module, consumes them.
SURROGATE_KEYS = ("surrogates", "surrogate_arch")
# __init__ arguments the runner supplies; the rest of a method's typed
# signature is what a user may set.
DEFENSE_RUNNER_ARGS = ("model", "num_classes", "target_label", "augment")
ATTACK_RUNNER_ARGS = ("model", "num_classes", "trigger", "poison_indices", "num_train", "target_label", "lr",
                      "augment")
REACTIVATION_RUNNER_ARGS = ("model", "oracle", "surrogates", "image_shape", "target_label", "epsilon", "norm",
                            "seed")


def _field(default, help: str):
    """A CellSpec field with its command-line help (the CLI is derived from
    these fields, their type hints and defaults)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class CellSpec:
    """Everything that defines a cell. Defaults follow PAPER.md except the
    training length, which the user sets (`epochs`). The type hints are the
    schema: `validate` checks every value against them (benchmark.extension.schema)."""
    dataset: str = _field("fashion_mnist", "dataset name")
    arch: str = _field("small_cnn", "architecture: preact_resnet18, small_cnn, either with a width "
                                   "(preact_resnet18-w16, small_cnn-w64), or timm:<name>")
    attack: str = _field("badnets", "attack name, or a plugin package.module:Name / file.py:Name")
    defenses: tuple[str, ...] = _field(("ft", "nad"), "defense names or plugins (package.module:Class, "
                                       "path/to/file.py:Class)")
    seed: NonNegativeInt = _field(0, "seed of data selections, initialisation and data order")
    epochs: PositiveInt = _field(3, "training epochs of the clean and backdoored models")
    batch_size: PositiveInt = _field(128, "batch size of the clean and backdoored models")
    lr: PositiveFloat = _field(0.01, "learning rate of the clean and backdoored models")
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
    # the noise-robustness and feature-CKA controls per method x defense (the
    # gUAA control always runs)
    controls: bool = _field(True, "run the noise-robustness and feature-CKA controls")
    bec_samples: PositiveInt = _field(500, "triggered test images whose features BEC compares")
    bec_rank_samples: PositiveInt = _field(2200, "clean/triggered test pairs that rank BEC's channels "
                                                 "(the authors' ~2,200)")
    bec_ratio: Fraction = _field(0.1, "fraction of channels BEC keeps per layer")
    # f_C starts from f_A's seeded initialisation (BackdoorBench's seed-0
    # convention) but sees the data in its own order, as a separate training
    # run would ("own"); "shared" gives it f_A's exact data order as well.
    clean_data_order: Literal["own", "shared"] = _field(
        "own", "the clean model's data order: its own (a separate run) or the backdoored model's")
    trigger_params: dict = _field({}, "JSON overrides of the attack's trigger, e.g. '{\"size\": 4}'")
    attack_params: dict = _field({}, "JSON options of the attack: its training module's (e.g. wanet "
                                     "'{\"cross_ratio\": 1}') and its trigger's")
    defense_params: dict = _field({}, "JSON {defense: {param: value}}, e.g. '{\"ft\": {\"epochs\": 20}}'")
    reactivation_params: dict = _field({}, "JSON {method: {param: value}}, e.g. '{\"wba\": {\"epochs\": 10}}'")
    data_params: dict = _field({}, "JSON extra data-module arguments")

    def validate(self) -> None:
        """Every value against its type hint, every name against its registry
        (plugins included), every method parameter against the method's
        typed __init__: one-line ConfigErrors, before anything runs."""
        hints = typing.get_type_hints(CellSpec)
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value("cell", f.name, getattr(self, f.name), hints[f.name]))
        DATASETS.get(self.dataset)
        if ATTACKS.get(self.attack).trigger is None:
            raise ConfigError(f"attack {self.attack!r} has no trigger: the clean model is the control every "
                              f"cell trains itself; choose one of: "
                              f"{', '.join(n for n in ATTACKS.names() if ATTACKS.get(n).trigger)}")
        trigger = ATTACKS.get(self.attack).trigger
        module_params, trigger_params = split_attack_params(self.attack, self.attack_params, self.trigger_params)
        self.trigger_params = validate_params(f"trigger {trigger!r}", TRIGGERS.get(trigger), trigger_params,
                                              TRIGGER_RUNNER_ARGS)
        self.attack_params = validate_params(f"attack {self.attack!r}", ATTACKS.get(self.attack).module_class(),
                                             module_params, ATTACK_RUNNER_ARGS)
        for name in self.reactivations:
            REACTIVATIONS.get(name)
        for name in self.defenses:
            DEFENSES.get(name)
        if len(set(self.defenses)) != len(self.defenses):
            raise ConfigError(f"defenses listed twice: {list(self.defenses)}")
        check_budget(self.norm, self.epsilon)
        for section in ("defense_params", "reactivation_params"):
            for name, params in getattr(self, section).items():
                if not isinstance(params, dict):
                    raise ConfigError(f"cell: {section}[{name!r}] must map parameter names to values, "
                                      f"got {params!r}")
        self.defense_params = {name: validate_params(f"defense {name!r}", DEFENSES.get(name), params,
                                                     DEFENSE_RUNNER_ARGS)
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
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CellSpec":
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"cell: unknown field(s) {unknown}; allowed: "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        for key in ("defenses", "reactivations"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)


def attack_options(attack: str) -> tuple[dict, dict]:
    """(the attack module's user parameters, its trigger's), each name ->
    inspect.Parameter: what `attack_params` may set."""
    preset = ATTACKS.get(attack)
    module = schema(preset.module_class(), ATTACK_RUNNER_ARGS)
    trigger = schema(TRIGGERS.get(preset.trigger), TRIGGER_RUNNER_ARGS) if preset.trigger else {}
    return module, trigger


def split_attack_params(attack: str, attack_params: dict, trigger_params: dict) -> tuple[dict, dict]:
    """Route `attack_params` to the attack's training module or its trigger
    by name (a name both accept is refused); `trigger_params` always go to
    the trigger. Returns (module params, trigger params)."""
    if not isinstance(attack_params, dict):
        raise ConfigError(f"cell: attack_params must map parameter names to values, got {attack_params!r}")
    module_names, trigger_names = attack_options(attack)
    module, trigger = {}, dict(trigger_params)
    for name, value in attack_params.items():
        if name in module_names and name in trigger_names:
            raise ConfigError(f"attack {attack!r}: parameter {name!r} exists in both its training module and "
                              f"its trigger; set the trigger's through trigger_params")
        if name in module_names:
            module[name] = value
        elif name in trigger_names:
            if name in trigger and trigger[name] != value:
                raise ConfigError(f"attack {attack!r}: {name!r} given twice with different values "
                                  f"({trigger[name]!r} in trigger_params, {value!r} in attack_params)")
            trigger[name] = value
        else:
            allowed = sorted(module_names) + sorted(trigger_names)
            raise ConfigError(f"attack {attack!r}: unknown parameter {name!r}; allowed: "
                              f"{', '.join(allowed) or 'none'}")
    return module, trigger


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
