"""One cell of the benchmark: dataset x architecture x attack x defenses x seed,
planned as a graph of stage jobs over the artifact store.

    train   clean model f_C ────────────┐
    attack  backdoored model f_A ───────┼──▶ evaluate  f_C under f_A's trigger
    defense f_D = defense(f_A) ─────────┤
    bec     S(f_A, f_X), X in {C, A, D} ┤
    reactivation / guaa  (method, f_X) ─┘   trigger + delta / clean + delta (control)

Every job's store key is known before anything runs (a hash of its kind,
config and its inputs' keys), so a grid can deduplicate jobs across cells
(one f_C per dataset x arch x seed, one f_A per attack shared by all its
defenses), print a dry run, and resume. `Cell.run()` executes the plan in
order in this process; the sweep executor runs jobs one per subprocess.
"""
from __future__ import annotations

import dataclasses
import inspect
import time
import typing
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Literal

import lightning as L
import torch
from rich.console import Console

import benchmark.bec as bec_module
import benchmark.controls as controls_module
import benchmark.training as training_module
import lightning_modules.reactivation.oracle as oracle_module
from benchmark.bec import (backdoor_existence_coefficient, backdoor_similarity, min_max_bec,
                           rank_backdoor_channels, selected_features)
from benchmark.controls import NOISE_LEVELS, mechanism_similarity, noise_robustness
from benchmark.errors import ConfigError, StoreError
from benchmark.fingerprint import code_fingerprint
from benchmark.metrics import defense_effectiveness_rating
from benchmark.models import ImageClassifier, backbone_class, build_model
from benchmark.schema import Fraction, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, check_value, \
    validate_params
from benchmark.store import Artifact, ArtifactStore, stage_key
from benchmark.training import TrainerFactory
from benchmark.triggers import TRIGGERS, build_trigger
from datamodules import DATASETS, build_datamodule
from lightning_modules.attacks import ATTACKS
from lightning_modules.base import BackdoorStage
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import QUERY, TRANSFER, WHITE_BOX, DeltaEvaluation
from lightning_modules.reactivation.norms import check_budget

CLEAN_ROW, BACKDOORED_ROW = "clean", "backdoored"
# Parameters of transfer methods that choose surrogates; the runner, not the
# module, consumes them.
SURROGATE_KEYS = ("surrogates", "surrogate_arch")
# __init__ arguments the runner supplies; the rest of a method's typed
# signature is what a user may set.
DEFENSE_RUNNER_ARGS = ("model", "num_classes", "target_label", "augment")
REACTIVATION_RUNNER_ARGS = ("model", "oracle", "surrogates", "image_shape", "target_label", "epsilon", "norm",
                            "seed")
# f_C's shuffling seed is offset from f_A's by this much when it has its own order.
CLEAN_ORDER_OFFSET = 1_000_003
# Re-activation search and every evaluation run in full precision, as the
# authors' code does; bf16 autocast is for training weights only.
SEARCH_PRECISION = "32-true"


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
    schema: `validate` checks every value against them (benchmark.schema)."""
    dataset: str = _field("fashion_mnist", "dataset name")
    arch: str = _field("small_cnn", "architecture: preact_resnet18, small_cnn or timm:<name>")
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
        "all", "draw poisoned samples from all training samples (BackdoorBench) or non-target ones")
    target_label: NonNegativeInt = _field(0, "the backdoor's target class")
    clean_ratio: Fraction = _field(0.05, "the defender's clean subset, fraction of the training set")
    reactivations: tuple[str, ...] = _field(("wba",), "re-activation methods or plugins")
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
        self.trigger_params = validate_params(f"trigger {trigger!r}", TRIGGERS.get(trigger), self.trigger_params,
                                              ("image_shape",))
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


@dataclass(eq=False)
class StageJob:
    """One unit of work with a store key known in advance."""
    kind: str
    label: str
    config: dict
    deps: dict[str, "StageJob"]
    run: Callable[[dict[str, Artifact]], tuple[dict, dict | None]] = field(repr=False)
    cell: str = ""
    key: str = field(init=False)

    def __post_init__(self):
        self.key = stage_key(self.kind, self.config, self.input_keys)

    @property
    def input_keys(self) -> dict[str, str]:
        return {role: dep.key for role, dep in self.deps.items()}

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"


class Cell:
    def __init__(self, spec: CellSpec, store: ArtifactStore, data_dir: str | Path = "data",
                 accelerator: str = "auto", progress: bool = True, console: Console | None = None,
                 trainers: TrainerFactory | None = None, datamodule=None):
        spec.validate()
        self.spec = spec
        self.store = store
        self.console = console or Console(stderr=True, quiet=not progress)
        self.trainers = trainers or TrainerFactory(accelerator, progress)
        # A grid passes one loaded data module to all cells of a dataset.
        self.dm = datamodule or build_datamodule(spec.dataset, data_dir=data_dir, batch_size=spec.batch_size,
                                                 **spec.data_params)
        self.dm.setup()
        self.dm.check_target(spec.target_label)
        preset = ATTACKS.get(spec.attack)
        params = {**preset.trigger_params, **spec.trigger_params}
        self.trigger = build_trigger(preset.trigger, self.dm.image_shape, **params)
        self.trigger_config = {"name": preset.trigger, **params}
        self.poison_idx = self.dm.poison_indices(spec.poison_rate, spec.target_label, spec.seed,
                                                 selection=spec.poison_selection)
        self.clean_idx = self.dm.clean_subset_indices(spec.clean_ratio, spec.seed, exclude=self.poison_idx)
        # Planning builds every stage module once on a throw-away model, so a
        # bad parameter or name fails now, before hours of training.
        self.jobs = self.plan()

    # The evaluation sets, built once per cell: every stage evaluates on them.
    @cached_property
    def poisoned_test(self):
        return self.dm.poisoned_test_set(self.trigger, self.spec.target_label)

    @cached_property
    def clean_non_target_test(self):
        return self.dm.non_target_clean_test_set(self.spec.target_label)

    @property
    def name(self) -> str:
        s = self.spec
        return f"{s.dataset}/{s.arch}/{s.attack}/seed{s.seed}"

    # ---- configuration pieces that go into store keys --------------------------
    def model_spec(self, arch: str | None = None) -> dict:
        c, h, _ = self.dm.image_shape
        return {"arch": arch or self.spec.arch, "num_classes": self.dm.num_classes, "in_channels": c,
                "image_size": h, "mean": list(self.dm.mean), "std": list(self.dm.std)}

    def train_spec(self) -> dict:
        s = self.spec
        return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed}

    @staticmethod
    def new_model(model_spec: dict) -> ImageClassifier:
        m = model_spec
        return build_model(m["arch"], m["num_classes"], m["in_channels"], m["image_size"], m["mean"], m["std"])

    def load_model(self, artifact: Artifact) -> ImageClassifier:
        try:
            model_spec = artifact.config["model"]
            model = self.new_model(model_spec)
        except (KeyError, TypeError):
            raise StoreError(f"{artifact.path} holds no model description; delete that directory") from None
        try:
            model.load_state_dict(artifact.tensors(), strict=True)
        except RuntimeError as exc:
            raise StoreError(f"weights in {artifact.path} do not fit {model_spec['arch']} "
                             f"({str(exc).splitlines()[0]}); delete that directory to recompute it") from None
        return model.to(self.trainers.device)

    # ---- the plan --------------------------------------------------------------
    def plan(self) -> list[StageJob]:
        """All jobs of this cell in dependency order."""
        s = self.spec
        jobs: dict[str, StageJob] = {}      # by store id: a job shared by two roles runs once
        by_label: dict[str, StageJob] = {}

        def add(job: StageJob) -> StageJob:
            job.cell = self.name
            label = f"{job.kind}/{job.label}"
            job = jobs.setdefault(job.id, job)
            by_label.setdefault(label, job)  # an aliased label finds the job that runs
            return job

        clean = add(self._train_job(None))
        attack = add(self._train_job(s.arch))
        add(StageJob("evaluate", "clean model under the trigger",
                     {"what": "clean model vs trigger", "code": code_fingerprint(BackdoorStage, training_module)},
                     {"model": clean, "attack": attack}, self._run_evaluate))
        models = {CLEAN_ROW: clean, BACKDOORED_ROW: attack}
        for name in s.defenses:
            # "none" is f_A itself: alias the attack job instead of copying the
            # weights, so its re-activation runs are the backdoored row's.
            models[name] = attack if name == "none" else add(self._defense_job(name, attack))
        for label, job in models.items():
            add(self._bec_job(attack, clean, job, label))
        for method in s.reactivations:
            for label, job in models.items():
                for use_trigger in (True, False):
                    if not use_trigger and label in (CLEAN_ROW, BACKDOORED_ROW):
                        continue  # the gUAA control is asked of defense models
                    react = self._reactivation_job(method, attack, job, label, use_trigger, add)
                    if react is not None:
                        add(react)
            for label in (s.defenses if s.controls else ()):
                rba, guaa = by_label.get(f"reactivation/{method} vs {label}"), by_label.get(f"guaa/{method} vs {label}")
                if rba and guaa:
                    add(StageJob("controls", f"{method} vs {label}",
                                 {"noise_levels": list(NOISE_LEVELS), "samples": s.bec_samples, "seed": s.seed,
                                  "features": "TAC-ranked channels of the BEC layers", "channel_ratio": s.bec_ratio,
                                  "code": code_fingerprint(controls_module, bec_module)},
                                 {"attack": attack, "model": models[label], "rba": rba, "guaa": guaa},
                                 self._run_controls))
        self._by_label = by_label
        return list(jobs.values())

    def job(self, kind: str, label: str) -> StageJob:
        try:
            return self._by_label[f"{kind}/{label}"]
        except KeyError:
            raise KeyError(f"no {kind} job {label!r} in {self.name}") from None

    def _train_job(self, arch: str | None) -> StageJob:
        """arch None: the clean model f_C (no trigger); else f_A of that arch."""
        s = self.spec
        config = {"data": self.dm.identity(), "model": self.model_spec(arch), "train": self.train_spec()}
        if arch is None:
            code = self._training_code(config["model"], "clean")
            return StageJob("train", "clean model",
                            {"attack": "clean", "data_order": s.clean_data_order, **config, "code": code},
                            {}, lambda inputs: self._train_model(config["model"], None))
        config = {"attack": s.attack, "trigger": self.trigger_config, "poison_rate": s.poison_rate,
                  "poison_selection": s.poison_selection, "target_label": s.target_label, **config,
                  "code": self._training_code(config["model"], s.attack)}
        label = s.attack if arch == s.arch else f"{s.attack} ({arch})"
        return StageJob("attack", label, config, {}, lambda inputs: self._train_model(config["model"], self.trigger))

    # ---- code fingerprints (benchmark.fingerprint): part of every job's key -------------
    def _training_code(self, model_spec: dict, attack: str) -> str:
        """The code that trains f_C / f_A: the attack's module, preset and
        trigger, the architecture, the data module and the trainer."""
        preset = ATTACKS.get(attack)
        objects = [preset.module_class(), ATTACKS.origin(attack), ImageClassifier, backbone_class(model_spec["arch"]),
                   type(self.dm), training_module]
        if preset.trigger is not None:
            objects += [TRIGGERS.get(preset.trigger), TRIGGERS.origin(preset.trigger)]
        return code_fingerprint(*objects)

    def _defense_job(self, name: str, attack: StageJob) -> StageJob:
        model_spec = attack.config["model"]
        config = {"defense": name, "params": self._defense_module(name, self.new_model(model_spec)).config(),
                  "clean_ratio": self.spec.clean_ratio, "seed": self.spec.seed, "model": model_spec,
                  "code": code_fingerprint(DEFENSES.get(name), DEFENSES.origin(name), training_module)}
        label = name if model_spec["arch"] == self.spec.arch else f"{name} ({model_spec['arch']})"
        return StageJob("defense", label, config, {"attack": attack}, lambda inputs: self._run_defense(name, inputs))

    def _bec_job(self, attack: StageJob, clean: StageJob, other: StageJob, label: str) -> StageJob:
        s = self.spec
        layers = self.new_model(attack.config["model"]).bec_layers
        config = {"samples": s.bec_samples, "rank_samples": s.bec_rank_samples, "channel_ratio": s.bec_ratio,
                  "seed": s.seed, "layers": layers, "code": code_fingerprint(bec_module)}
        return StageJob("bec", f"S(f_A, {label})", config, {"attack": attack, "clean": clean, "model": other},
                        self._run_bec)

    def _reactivation_job(self, method: str, attack: StageJob, victim: StageJob, label: str, use_trigger: bool,
                          add) -> StageJob | None:
        s = self.spec
        cls = REACTIVATIONS.get(method)
        params = dict(s.reactivation_params.get(method, {}))
        runner_params = {k: params.pop(k) for k in SURROGATE_KEYS if k in params}
        if runner_params and cls.access != TRANSFER:
            raise ConfigError(f"{', '.join(runner_params)} only apply to transfer methods, not {method!r}")
        deps = {"model": victim, "attack": attack}
        if cls.access == TRANSFER:
            surrogates = self._surrogate_jobs(method, victim, label, runner_params, add)
            if not surrogates:
                return None  # nothing to transfer from (e.g. a cell with one defense)
            deps.update({f"surrogate:{j.label}": j for j in surrogates})
        probe = self._reactivation_module(method, self._attack_target(cls, self.new_model(victim.config["model"]),
                                                                      params, surrogates=None), params)
        config = {"method": method, "params": probe.config(), "inputs": "trigger" if use_trigger else "clean",
                  **({"surrogates": runner_params} if runner_params else {}),
                  "code": code_fingerprint(cls, REACTIVATIONS.origin(method), oracle_module, training_module)}
        kind = "reactivation" if use_trigger else "guaa"
        return StageJob(kind, f"{method} vs {label}", config, deps,
                        lambda inputs: self._run_reactivation(method, params, use_trigger, inputs))

    def _surrogate_jobs(self, method: str, victim: StageJob, label: str, params: dict, add) -> list[StageJob]:
        """The attacker's own defended copies of its backdoored model."""
        s = self.spec
        if label in (CLEAN_ROW, BACKDOORED_ROW):
            return []
        arch = params.get("surrogate_arch") or s.arch
        names = params.get("surrogates")
        if names is None:  # default: every other defense of this cell
            names = [d for d in s.defenses if d not in (label, "none")]
        for name in names:
            DEFENSES.get(name)
            if name == label and arch == s.arch:
                raise ConfigError(f"{method}: surrogate {name!r} is the victim's own defense on the same "
                                  f"architecture; that is white-box re-activation, not transfer")
            if name == "none":
                raise ConfigError(f"{method}: surrogate 'none' is the attacker's undefended model; name a defense")
        attack = add(self._train_job(arch))
        return [add(self._defense_job(name, attack)) for name in names]

    # ---- building stage modules -------------------------------------------------
    def _defense_module(self, name: str, model):
        params = dict(self.spec.defense_params.get(name, {}))
        try:
            return DEFENSES.get(name)(model, self.dm.num_classes, self.spec.target_label, self.dm.augment, **params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for defense {name!r}: {exc}") from None

    def _reactivation_module(self, method: str, target, params: dict):
        """`target` is the victim model (white-box), a query oracle (query) or
        a list of surrogate models (transfer)."""
        s = self.spec
        try:
            return REACTIVATIONS.get(method)(target, self.dm.image_shape, s.target_label, epsilon=s.epsilon,
                                             norm=s.norm, seed=s.seed, **params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for re-activation {method!r}: {exc}") from None

    @staticmethod
    def _attack_target(cls, victim, params: dict, surrogates: list | None):
        """What a method may touch: the victim itself (white-box), a counting
        query oracle around it (query), or only the attacker's surrogates
        (transfer; the victim is then used for evaluation alone). With
        surrogates=None a stand-in is built for validating parameters."""
        from lightning_modules.reactivation.oracle import QueryOracle

        if cls.access == WHITE_BOX:
            return victim
        if cls.access == QUERY:
            budget = params.get("max_queries", inspect.signature(cls).parameters["max_queries"].default)
            if not isinstance(budget, int) or budget <= 0:
                raise ConfigError(f"query budget max_queries must be a positive integer, got {budget!r}")
            return QueryOracle(victim, budget)
        if cls.access == TRANSFER:
            return [victim] if surrogates is None else surrogates
        raise ConfigError(f"re-activation {cls.__name__} declares unknown access {cls.access!r}")

    # ---- running jobs ----------------------------------------------------------------
    def _evaluate(self, model, clean=True, poisoned=True) -> dict:
        stage = BackdoorStage(model, self.dm.num_classes, self.spec.target_label)
        return self.trainers.evaluate(
            stage, self.dm.loader(self.dm.clean_test_set()) if clean else None,
            self.dm.loader(self.poisoned_test) if poisoned else None)

    def _train_model(self, model_spec: dict, trigger) -> tuple[dict, dict]:
        L.seed_everything(self.spec.seed, workers=True, verbose=False)
        preset = ATTACKS.get(self.spec.attack if trigger is not None else "clean")
        poison_idx = self.poison_idx if trigger is not None else torch.empty(0, dtype=torch.long)
        module = preset.module_class()(self.new_model(model_spec), self.dm.num_classes, trigger, poison_idx,
                                       self.dm.num_train, self.spec.target_label, lr=self.spec.lr,
                                       augment=self.dm.augment)
        order_seed = self.spec.seed
        if trigger is None and self.spec.clean_data_order == "own":
            order_seed += CLEAN_ORDER_OFFSET
        loader = self.dm.loader(self.dm.train_set(), shuffle=True, seed=order_seed)
        self.trainers.fit(module, loader, self.spec.epochs)
        return self._evaluate(module.model, poisoned=trigger is not None), module.export_weights()

    def _run_evaluate(self, inputs) -> tuple[dict, None]:
        return self._evaluate(self.load_model(inputs["model"])), None

    def train_defense(self, name: str, attack: Artifact):
        """Apply defense `name` to f_A. The defense gets the backdoored model and
        the clean subset only: no trigger, no poisoned index, no data module."""
        L.seed_everything(self.spec.seed, workers=True, verbose=False)
        module = self._defense_module(name, self.load_model(attack))
        clean_set = self.dm.train_set(self.clean_idx)

        def fit(m, dataset):
            loader = self.dm.loader(dataset, shuffle=True, batch_size=m.hparams.batch_size, seed=self.spec.seed)
            self.trainers.fit(m, loader, m.hparams.epochs)

        module.prepare(clean_set, fit)
        if module.hparams.epochs > 0:
            fit(module, clean_set)
        module.finalize()
        return module

    def _run_defense(self, name: str, inputs) -> tuple[dict, dict]:
        module = self.train_defense(name, inputs["attack"])
        metrics = self._evaluate(module.model)
        if module.report:  # what the defense decided: flagged labels, pruned units...
            metrics["defense"] = module.report
        return metrics, module.export_weights()

    def _run_bec(self, inputs) -> tuple[dict, None]:
        """Raw S(f_A, f_X) with per-layer CKA values."""
        s = self.spec
        # As the authors do: ~2,200 random non-target test pairs rank the
        # channels, and the features are those of `bec_samples` of them.
        idx = self.dm.non_target_test_indices(s.target_label)
        order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(s.seed))
        idx = idx[order[:max(s.bec_rank_samples, s.bec_samples)]]
        clean_x = self.dm.test_images[idx].float().div(255)
        poisoned_x = self.trigger(clean_x)
        model_a = self.load_model(inputs["attack"])
        layers = model_a.bec_layers
        channels = rank_backdoor_channels(model_a, layers, clean_x[:s.bec_rank_samples],
                                          poisoned_x[:s.bec_rank_samples], s.bec_ratio)
        compared = poisoned_x[:s.bec_samples]
        reference = selected_features(model_a, channels, compared)
        features = selected_features(self.load_model(inputs["model"]), channels, compared)
        similarity, per_layer = backdoor_similarity(reference, features)
        return {"similarity": similarity, "per_layer": dict(zip(layers, per_layer)),
                "channels_per_layer": {n: len(c) for n, c in channels.items()}}, None

    def _run_controls(self, inputs) -> tuple[dict, None]:
        """Noise robustness of OBA / RBA / gUAA and the CKA of their features."""
        s = self.spec
        f_a, f_d = self.load_model(inputs["attack"]), self.load_model(inputs["model"])
        rba_delta, guaa_delta = inputs["rba"].tensors()["delta"], inputs["guaa"].tensors()["delta"]
        poisoned = self.poisoned_test
        clean = self.clean_non_target_test
        clean_x = clean.images.float().div(255)
        cases = {"OBA": (f_a, poisoned.images), "RBA": (f_d, (poisoned.images + rba_delta).clamp(0, 1)),
                 "gUAA": (f_d, (clean_x + guaa_delta).clamp(0, 1))}
        labels = {"OBA": poisoned.labels, "RBA": poisoned.labels, "gUAA": clean.labels}
        metrics = {"noise_asr": noise_robustness(cases, labels, s.target_label, NOISE_LEVELS, s.seed)}
        # CKA needs the same images in every case: the first `samples` non-target test images.
        n = min(s.bec_samples, len(clean_x))
        channels = rank_backdoor_channels(f_a, f_a.bec_layers, clean_x[:n], poisoned.images[:n], s.bec_ratio)
        metrics["feature_cka"] = mechanism_similarity(
            {name: selected_features(model, channels, images[:n]) for name, (model, images) in cases.items()})
        return metrics, None

    def _evaluate_delta(self, model, delta: torch.Tensor, use_trigger: bool) -> dict:
        s = self.spec
        eval_set = (self.poisoned_test if use_trigger
                    else self.clean_non_target_test)
        stage = DeltaEvaluation(model, self.dm.num_classes, s.target_label, delta)
        return self.trainers.evaluate(stage, poisoned_loader=self.dm.loader(eval_set))

    def _run_reactivation(self, method: str, params: dict, use_trigger: bool, inputs) -> tuple[dict, dict]:
        """Trigger + delta against the victim; with use_trigger=False the gUAA
        control: the same optimisation on clean inputs, evaluated on clean
        non-target test images."""
        s = self.spec
        L.seed_everything(s.seed, workers=True, verbose=False)
        victim = self.load_model(inputs["model"])
        cls = REACTIVATIONS.get(method)
        surrogates = [self.load_model(art) for role, art in sorted(inputs.items()) if role.startswith("surrogate:")]
        target = self._attack_target(cls, victim, params, surrogates)
        module = self._reactivation_module(method, target, params)
        h = module.hparams
        idx = self.dm.attacker_indices(self.poison_idx, h.num_samples, s.seed)
        data = self.dm.attacker_set(idx, self.trigger if use_trigger else None)
        loader = self.dm.loader(data, shuffle=True, batch_size=min(h.batch_size, len(data)), drop_last=True,
                                seed=s.seed)
        self.trainers.fit(module, loader, h.epochs, precision=SEARCH_PRECISION)
        delta = module.final_delta()
        metrics = self._evaluate_delta(victim, delta, use_trigger)
        for tag, snapshot in module.checkpoints().items():
            metrics[f"test/asr@{tag}"] = self._evaluate_delta(victim, snapshot, use_trigger)["test/asr"]
        metrics["delta_linf"] = float(delta.abs().max())
        if cls.access == QUERY:
            metrics["queries"] = target.queries  # the oracle's own count
        return metrics, {"delta": delta}

    # ---- executing -------------------------------------------------------------------
    def execute(self, job: StageJob) -> Artifact:
        """Run one job whose inputs are in the store, and save its artifact."""
        if self.store.has(job.kind, job.key):
            return self.store.load(job.kind, job.key)
        inputs = {role: self.store.load(dep.kind, dep.key) for role, dep in job.deps.items()}
        start = time.perf_counter()
        self.console.print(f"[bold]{job.kind}[/] {job.label} ...", highlight=False)
        metrics, tensors = job.run(inputs)
        artifact = self.store.save(job.kind, job.key, job.config, job.input_keys, metrics, tensors,
                                   extra={"label": job.label, "cell": self.name,
                                          "seconds": round(time.perf_counter() - start, 2)})
        self.console.print(f"  done in {time.perf_counter() - start:.1f} s  {artifact.path}", highlight=False)
        return artifact

    def run(self) -> list[dict]:
        for job in self.jobs:
            self.execute(job)
        return self.rows()

    # ---- results ---------------------------------------------------------------------
    def _metrics(self, job: StageJob) -> dict:
        return self.store.load(job.kind, job.key).metrics

    def _metrics_if_run(self, job: StageJob | None) -> dict | None:
        """Optional columns (re-activation, controls) may be missing when such
        a job failed or was not run; the row simply lacks them."""
        if job is None or not self.store.has(job.kind, job.key):
            return None
        return self._metrics(job)

    def rows(self) -> list[dict]:
        """One row per model of the cell, read from the store. The clean and
        backdoored models and their BEC must be there (StoreError otherwise);
        a defense appears when its model and BEC are; re-activation and
        control columns appear for the jobs that have run."""
        s = self.spec
        model_jobs = {CLEAN_ROW: self.job("train", "clean model"), BACKDOORED_ROW: self.job("attack", s.attack)}
        model_jobs.update({d: model_jobs[BACKDOORED_ROW] if d == "none" else self.job("defense", d)
                           for d in s.defenses})
        # A defense whose model or BEC is missing (its job failed or has not
        # run) has no row; the references and the other defenses still do.
        labels = [CLEAN_ROW, BACKDOORED_ROW] + [
            d for d in s.defenses
            if self._metrics_if_run(model_jobs[d]) is not None
            and self._metrics_if_run(self.job("bec", f"S(f_A, {d})")) is not None]
        sims = {label: self._metrics(self.job("bec", f"S(f_A, {label})"))["similarity"] for label in labels}
        minmax = min_max_bec(sims, CLEAN_ROW, BACKDOORED_ROW, aliases_of_backdoored=("none",))
        base = self._metrics(model_jobs[BACKDOORED_ROW])
        rows = []
        for label in labels:
            metrics = (self._metrics(self.job("evaluate", "clean model under the trigger")) if label == CLEAN_ROW
                       else self._metrics(model_jobs[label]))
            model_meta = self.store.load(model_jobs[label].kind, model_jobs[label].key).meta
            row = {"dataset": s.dataset, "arch": s.arch, "attack": s.attack, "model": label, "seed": s.seed,
                   "clean_acc": metrics["test/clean_acc"], "asr": metrics["test/asr"], "ra": metrics["test/ra"],
                   "der": None, "bec": backdoor_existence_coefficient(sims[label], sims[CLEAN_ROW]),
                   "bec_minmax": minmax[label], "similarity": sims[label],
                   "seconds": 0.0 if label == "none" else model_meta.get("seconds")}
            if label not in (CLEAN_ROW, BACKDOORED_ROW):
                row["der"] = defense_effectiveness_rating(base["test/asr"], base["test/clean_acc"],
                                                          metrics["test/asr"], metrics["test/clean_acc"])
                decided = metrics.get("defense") or {}
                for key, value in decided.items():
                    row[f"defense:{key}"] = value
                if decided.get("unchanged"):
                    row["note"] = "nothing flagged: model returned unchanged"
            for method in s.reactivations:
                for kind, prefix in (("reactivation", "react"), ("guaa", "guaa")):
                    m = self._metrics_if_run(self._by_label.get(f"{kind}/{method} vs {label}"))
                    if m is None:
                        continue
                    row[f"{prefix}_asr:{method}"] = m["test/asr"]
                    if prefix == "react":
                        row[f"react_ra:{method}"] = m["test/ra"]
                    for key, value in m.items():
                        if key.startswith("test/asr@"):
                            row[f"{prefix}_asr:{method}@{key.split('@', 1)[1]}"] = value
                m = self._metrics_if_run(self._by_label.get(f"controls/{method} vs {label}"))
                if m is not None:
                    for case, curve in m["noise_asr"].items():
                        for level, value in curve.items():
                            row[f"noise_asr:{method}:{case}@{level}"] = value
                    for pair, value in m["feature_cka"].items():
                        row[f"feature_cka:{method}:{pair}"] = value
            rows.append(row)
        return rows

    def describe(self) -> dict:
        return self.spec.to_dict()

