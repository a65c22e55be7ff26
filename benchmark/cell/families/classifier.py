"""The image-classifier family (the paper's setting): `CellSpec`, its
fields and checks, and the hooks the cell asks of it. Its models are
`benchmark.models.ImageClassifier`s (their own classifier view); f_C and f_A
are trained from scratch by the attack's LightningModule
(`benchmark/cell/stages/training.py`), after the trigger's own preparation
stage where it has one (`stages/trigger.py`)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from benchmark.cell.family import ModelFamily
from benchmark.cell.spec import SpecBase, _field
from benchmark.errors import ConfigError
from benchmark.extension.schema import PositiveFloat, PositiveInt, schema, validate_params
from benchmark.models import build_model
from benchmark.triggers import TRIGGER_RUNNER_ARGS, TRIGGERS
from benchmark.triggers.base import STATE_PREFIX
from lightning_modules.attacks import ATTACKS
from lightning_modules.defenses import DEFENSES

# __init__ arguments the runner supplies; the rest of a method's typed
# signature is what a user may set.
DEFENSE_RUNNER_ARGS = ("model", "num_classes", "target_label", "augment")
ATTACK_RUNNER_ARGS = ("model", "num_classes", "trigger", "poison_indices", "num_train", "target_label", "lr",
                      "augment")


@dataclass
class CellSpec(SpecBase):
    """Everything that defines a classifier cell. Defaults follow PAPER.md
    except the training length, which the user sets (`epochs`)."""
    arch: str = _field("small_cnn", "architecture: preact_resnet18, small_cnn, either with a width "
                                   "(preact_resnet18-w16, small_cnn-w64), or timm:<name>")
    epochs: PositiveInt = _field(3, "training epochs of the clean and backdoored models")
    batch_size: PositiveInt = _field(128, "batch size of the clean and backdoored models")
    lr: PositiveFloat = _field(0.01, "learning rate of the clean and backdoored models")
    # f_C starts from f_A's seeded initialisation (BackdoorBench's seed-0
    # convention) but sees the data in its own order, as a separate training
    # run would ("own"); "shared" gives it f_A's exact data order as well.
    clean_data_order: Literal["own", "shared"] = _field(
        "own", "the clean model's data order: its own (a separate run) or the backdoored model's")
    attack_params: dict = _field({}, "JSON options of the attack: its training module's (e.g. wanet "
                                     "'{\"cross_ratio\": 1}') and its trigger's")

    def validate_family(self) -> None:
        from datamodules import DATASETS

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


class ClassifierFamily(ModelFamily):
    kind = "classifier"
    spec_class = CellSpec
    attacks = ATTACKS
    defenses = DEFENSES
    defense_runner_args = DEFENSE_RUNNER_ARGS

    def datamodule_args(self, spec) -> dict:
        return {"batch_size": spec.batch_size, **spec.data_params}

    def defense_module(self, ctx, name: str, model, data_args: dict):
        params = dict(ctx.spec.defense_params.get(name, {}))
        try:
            return DEFENSES.get(name)(model, ctx.dm.num_classes, ctx.spec.target_label, ctx.dm.augment,
                                      **data_args, **params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for defense {name!r}: {exc}") from None

    def defender_data(self, ctx, planning: bool = False):
        # clean pixels and true labels of the clean subset (DeviceLoader
        # batches: images, labels, dataset indices)
        return (None if planning else ctx.dm.train_set(ctx.clean_idx)), {}

    def model_spec(self, ctx, arch: str) -> dict:
        c, h, _ = ctx.dm.image_shape
        return {"arch": arch, "num_classes": ctx.dm.num_classes, "in_channels": c,
                "image_size": h, "mean": list(ctx.dm.mean), "std": list(ctx.dm.std)}

    def new_model(self, ctx, model_spec: dict, device=None):
        # On the meta device nothing is allocated or initialised: a CIFAR-10
        # grid plans hundreds of jobs on PreAct-ResNet18, and real
        # initialisation (~0.3 s each on a CPU) made its dry run take minutes.
        m = model_spec
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return build_model(m["arch"], m["num_classes"], m["in_channels"], m["image_size"], m["mean"], m["std"])

    def load_weights(self, model, tensors: dict) -> None:
        # f_A's artifact may also hold a trigger learned with it (Input-Aware).
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}, strict=True)

    def plan_models(self, ctx, plan):
        from benchmark.cell.stages import training, trigger

        clean = plan.add(training.clean_job(ctx))
        prepared = trigger.trigger_job(ctx, clean)
        ctx.trigger_job = plan.add(prepared) if prepared is not None else None
        ctx.attack_job = plan.add(training.attack_job(ctx, ctx.spec.arch, ctx.trigger_job))
        return clean, ctx.attack_job

    def surrogate_source(self, ctx, plan, method: str, arch: str):
        # the attacker trains its own f_A on the surrogate architecture (the
        # cell's own f_A when the architecture is the same: same key)
        from benchmark.cell.stages import training

        return plan.add(training.attack_job(ctx, arch, ctx.trigger_job))


FAMILY = ClassifierFamily()
