"""One cell of the benchmark: dataset x architecture x attack x defenses x seed.

Stage graph (each a content-addressed artifact, see benchmark/store.py):

    clean model f_C ───────────────┬──────────────▶ evaluate f_C under the trigger
    attack model f_A ──▶ defense f_D (one per defense)
    (f_A, f_C, f_X) ──▶ BEC of f_X          (X = C, A, each D)
    (f_X, attack) ──▶ re-activation of f_X  (trigger + delta; gUAA: clean + delta)

The clean model is shared by every attack, the attack model by every defense.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
from rich.console import Console

from benchmark.bec import (backdoor_existence_coefficient, backdoor_similarity, min_max_bec,
                           rank_backdoor_channels, selected_features)
from benchmark.errors import ConfigError, StoreError
from benchmark.metrics import defense_effectiveness_rating
from benchmark.models import ImageClassifier, build_model
from benchmark.store import Artifact, ArtifactStore
from benchmark.training import TrainerFactory
from benchmark.triggers import build_trigger
from datamodules import DATASETS, build_datamodule
from lightning_modules.attacks import ATTACKS
from lightning_modules.base import BackdoorStage
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import DeltaEvaluation
from lightning_modules.reactivation.norms import check_budget

CLEAN_ROW, BACKDOORED_ROW = "clean", "backdoored"


@dataclass
class CellSpec:
    """Everything that defines a cell. Defaults follow PAPER.md except the
    training length, which the user sets (`epochs`)."""
    dataset: str = "fashion_mnist"
    arch: str = "small_cnn"
    attack: str = "badnets"
    defenses: tuple[str, ...] = ("ft", "nad")
    seed: int = 0
    epochs: int = 3                 # clean and backdoored model training
    batch_size: int = 128
    lr: float = 0.01
    poison_rate: float = 0.1
    target_label: int = 0
    clean_ratio: float = 0.05      # the defender's clean subset
    reactivation: str = "wba"
    epsilon: float = 0.05
    norm: str = "linf"
    bec_samples: int = 500
    bec_ratio: float = 0.1
    trigger_params: dict = field(default_factory=dict)     # overrides of the attack preset
    defense_params: dict = field(default_factory=dict)     # {defense: {param: value}}
    reactivation_params: dict = field(default_factory=dict)
    data_params: dict = field(default_factory=dict)        # extra data-module arguments

    def validate(self) -> None:
        DATASETS.get(self.dataset)
        ATTACKS.get(self.attack)
        REACTIVATIONS.get(self.reactivation)
        for name in self.defenses:
            DEFENSES.get(name)
        unknown = set(self.defense_params) - set(DEFENSES.names())
        if unknown:
            DEFENSES.get(sorted(unknown)[0])
        if not 0.0 < self.poison_rate < 1.0:
            raise ConfigError(f"poison rate must be in (0, 1), got {self.poison_rate}")
        if not 0.0 < self.clean_ratio <= 1.0:
            raise ConfigError(f"clean ratio must be in (0, 1], got {self.clean_ratio}")
        check_budget(self.norm, self.epsilon)
        for name, value in (("epochs", self.epochs), ("batch size", self.batch_size),
                            ("BEC samples", self.bec_samples)):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if not 0.0 < self.bec_ratio <= 1.0:
            raise ConfigError(f"BEC channel ratio must be in (0, 1], got {self.bec_ratio}")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")


class Cell:
    def __init__(self, spec: CellSpec, store: ArtifactStore, data_dir: str | Path = "data",
                 accelerator: str = "auto", progress: bool = True, console: Console | None = None):
        spec.validate()
        self.spec = spec
        self.store = store
        self.console = console or Console(stderr=True, quiet=not progress)
        self.trainers = TrainerFactory(accelerator, progress)
        self.dm = build_datamodule(spec.dataset, data_dir=data_dir, batch_size=spec.batch_size, **spec.data_params)
        self.dm.setup()
        self.dm.check_target(spec.target_label)
        preset = ATTACKS.get(spec.attack)
        self.trigger_config = None
        self.trigger = None
        if preset.trigger is not None:
            params = {**preset.trigger_params, **spec.trigger_params}
            self.trigger = build_trigger(preset.trigger, self.dm.image_shape, **params)
            self.trigger_config = {"name": preset.trigger, **params}
        else:
            raise ConfigError("a cell needs a backdoor attack; 'clean' is the control every cell trains itself")
        self.poison_idx = self.dm.poison_indices(spec.poison_rate, spec.target_label, spec.seed)
        self.clean_idx = self.dm.clean_subset_indices(spec.clean_ratio, spec.seed, exclude=self.poison_idx)
        # Build every stage module once on a throw-away model so that a bad
        # parameter fails now, before hours of training.
        for name in spec.defenses:
            self._defense_module(name, self.new_model())
        self._reactivation_module(self.new_model())

    # ---- configuration pieces that go into store keys --------------------------
    def model_spec(self) -> dict:
        c, h, _ = self.dm.image_shape
        return {"arch": self.spec.arch, "num_classes": self.dm.num_classes, "in_channels": c,
                "image_size": h, "mean": list(self.dm.mean), "std": list(self.dm.std)}

    def train_spec(self) -> dict:
        s = self.spec
        return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed}

    def new_model(self) -> ImageClassifier:
        m = self.model_spec()
        return build_model(m["arch"], m["num_classes"], m["in_channels"], m["image_size"], m["mean"], m["std"])

    def load_model(self, artifact: Artifact) -> ImageClassifier:
        model = self.new_model()
        try:
            model.load_state_dict(artifact.tensors(), strict=True)
        except RuntimeError as exc:
            raise StoreError(f"weights in {artifact.path} do not fit {self.spec.arch} "
                             f"({str(exc).splitlines()[0]}); delete that directory to recompute it") from None
        return model

    # ---- helpers -------------------------------------------------------------
    def _stage(self, kind: str, label: str, config: dict, inputs: dict, run) -> Artifact:
        start = time.perf_counter()
        self.console.print(f"[bold]{kind}[/] {label} ...", highlight=False)
        artifact, cached = self.store.get_or_run(kind, config, inputs, run)
        took = time.perf_counter() - start
        self.console.print(f"  {'[dim]from store[/]' if cached else f'done in {took:.1f} s'}  {artifact.path}",
                           highlight=False)
        return artifact

    def _poisoned_loader(self):
        return self.dm.loader(self.dm.poisoned_test_set(self.trigger, self.spec.target_label))

    def _evaluate(self, model, clean=True, poisoned=True) -> dict:
        stage = BackdoorStage(model, self.dm.num_classes, self.spec.target_label)
        return self.trainers.evaluate(stage, self.dm.loader(self.dm.clean_test_set()) if clean else None,
                                      self._poisoned_loader() if poisoned else None)

    # ---- stages ------------------------------------------------------------------
    def _train_model(self, trigger, poison_idx) -> tuple[dict, dict]:
        L.seed_everything(self.spec.seed, workers=True, verbose=False)
        preset = ATTACKS.get(self.spec.attack if trigger is not None else "clean")
        module = preset.module_class()(self.new_model(), self.dm.num_classes, trigger, poison_idx,
                                       self.dm.num_train, self.spec.target_label, lr=self.spec.lr,
                                       augment=self.dm.augment)
        loader = self.dm.loader(self.dm.train_set(), shuffle=True, seed=self.spec.seed)
        self.trainers.fit(module, loader, self.spec.epochs)
        metrics = self._evaluate(module.model, poisoned=trigger is not None)
        return metrics, module.export_weights()

    def clean_model(self) -> Artifact:
        config = {"attack": "clean", "data": self.dm.identity(), "model": self.model_spec(), "train": self.train_spec()}
        return self._stage("train", "clean model", config, {},
                           lambda: self._train_model(None, torch.empty(0, dtype=torch.long)))

    def attack_model(self) -> Artifact:
        s = self.spec
        config = {"attack": s.attack, "trigger": self.trigger_config, "poison_rate": s.poison_rate,
                  "target_label": s.target_label, "data": self.dm.identity(), "model": self.model_spec(),
                  "train": self.train_spec()}
        return self._stage("attack", s.attack, config, {}, lambda: self._train_model(self.trigger, self.poison_idx))

    def clean_model_under_trigger(self, clean: Artifact, attack: Artifact) -> Artifact:
        """Metrics of f_C on the attack's poisoned test set (its ASR is the floor)."""
        def run():
            return self._evaluate(self.load_model(clean)), None
        return self._stage("evaluate", "clean model under the trigger", {"what": "clean model vs trigger"},
                           {"model": clean.key, "attack": attack.key}, run)

    def _defense_module(self, name: str, model):
        params = dict(self.spec.defense_params.get(name, {}))
        try:
            return DEFENSES.get(name)(model, self.dm.num_classes, self.spec.target_label, self.dm.augment, **params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for defense {name!r}: {exc}") from None

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

    def defense_model(self, name: str, attack: Artifact) -> Artifact:
        config = {"defense": name, "params": self._defense_module(name, self.new_model()).config(),
                  "clean_ratio": self.spec.clean_ratio, "seed": self.spec.seed}

        def run():
            module = self.train_defense(name, attack)
            return self._evaluate(module.model), module.export_weights()

        return self._stage("defense", name, config, {"attack": attack.key}, run)

    def bec(self, attack: Artifact, clean: Artifact, other: Artifact, label: str) -> Artifact:
        """Raw S(f_A, f_X) for one model, with per-layer CKA values."""
        s = self.spec
        config = {"samples": s.bec_samples, "channel_ratio": s.bec_ratio, "seed": s.seed}

        def run():
            idx = self.dm.non_target_test_indices(s.target_label)
            order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(s.seed))
            idx = idx[order[:s.bec_samples]].sort().values
            clean_x = self.dm.test_images[idx].float().div(255)
            poisoned_x = self.trigger(clean_x)
            device = self.trainers.device
            model_a = self.load_model(attack).to(device)
            layers = model_a.bec_layers
            channels = rank_backdoor_channels(model_a, layers, clean_x, poisoned_x, s.bec_ratio)
            ref = selected_features(model_a, channels, poisoned_x)
            feats = selected_features(self.load_model(other).to(device), channels, poisoned_x)
            sim, per_layer = backdoor_similarity(ref, feats)
            return {"similarity": sim, "per_layer": dict(zip(layers, per_layer)),
                    "channels_per_layer": {n: len(c) for n, c in channels.items()}}, None

        return self._stage("bec", f"S(f_A, {label})", config,
                           {"attack": attack.key, "clean": clean.key, "model": other.key}, run)

    def _reactivation_module(self, victim):
        s = self.spec
        cls = REACTIVATIONS.get(s.reactivation)
        try:
            return cls(victim, self.dm.image_shape, s.target_label, epsilon=s.epsilon, norm=s.norm, seed=s.seed,
                       **s.reactivation_params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for re-activation {s.reactivation!r}: {exc}") from None

    def _evaluate_delta(self, model, delta: torch.Tensor, use_trigger: bool) -> dict:
        s = self.spec
        eval_set = (self.dm.poisoned_test_set(self.trigger, s.target_label) if use_trigger
                    else self.dm.non_target_clean_test_set(s.target_label))
        stage = DeltaEvaluation(model, self.dm.num_classes, s.target_label, delta)
        return self.trainers.evaluate(stage, poisoned_loader=self.dm.loader(eval_set))

    def reactivate(self, attack: Artifact, victim: Artifact, label: str, use_trigger: bool = True) -> Artifact:
        """Re-activation (trigger + delta) against `victim`; with use_trigger=False,
        the gUAA control: the same optimisation on clean inputs (no trigger),
        evaluated on clean non-target test images."""
        s = self.spec
        config = {"method": s.reactivation, "params": self._reactivation_module(self.new_model()).config(),
                  "inputs": "trigger" if use_trigger else "clean"}

        def run():
            L.seed_everything(s.seed, workers=True, verbose=False)
            victim_model = self.load_model(victim)
            module = self._reactivation_module(victim_model)
            h = module.hparams
            idx = self.dm.attacker_indices(self.poison_idx, h.num_samples, s.seed)
            data = self.dm.attacker_set(idx, self.trigger if use_trigger else None)
            loader = self.dm.loader(data, shuffle=True, batch_size=min(h.batch_size, len(data)),
                                    drop_last=True, seed=s.seed)
            self.trainers.fit(module, loader, h.epochs)
            delta = module.final_delta()
            metrics = self._evaluate_delta(victim_model, delta, use_trigger)
            for tag, snapshot in module.checkpoints().items():
                for key, value in self._evaluate_delta(victim_model, snapshot, use_trigger).items():
                    metrics[f"{key}@{tag}"] = value
            metrics["delta_linf"] = float(delta.abs().max())
            return metrics, {"delta": delta}

        kind = "reactivation" if use_trigger else "guaa"
        return self._stage(kind, f"{s.reactivation} vs {label}", config,
                           {"model": victim.key, "attack": attack.key}, run)

    # ---- the whole cell ----------------------------------------------------------
    def run(self) -> list[dict]:
        clean = self.clean_model()
        attack = self.attack_model()
        clean_eval = self.clean_model_under_trigger(clean, attack)
        models = {CLEAN_ROW: clean, BACKDOORED_ROW: attack}
        for name in self.spec.defenses:
            models[name] = self.defense_model(name, attack)
        sims = {label: self.bec(attack, clean, art, label).metrics["similarity"] for label, art in models.items()}
        s_clean = sims[CLEAN_ROW]
        minmax = min_max_bec(sims, CLEAN_ROW, BACKDOORED_ROW)
        base = attack.metrics
        rows = []
        for label, art in models.items():
            metrics = clean_eval.metrics if label == CLEAN_ROW else art.metrics
            react = self.reactivate(attack, art, label, use_trigger=True).metrics
            row = {
                "model": label,
                "clean_acc": metrics["test/clean_acc"], "asr": metrics["test/asr"], "ra": metrics["test/ra"],
                "der": (defense_effectiveness_rating(base["test/asr"], base["test/clean_acc"],
                                                     metrics["test/asr"], metrics["test/clean_acc"])
                        if label not in (CLEAN_ROW, BACKDOORED_ROW) else None),
                "bec": backdoor_existence_coefficient(sims[label], s_clean),
                "bec_minmax": minmax[label],
                "similarity": sims[label],
                "react_asr": react["test/asr"], "react_ra": react["test/ra"],
                "guaa_asr": None,
                "key": art.key,
            }
            if label not in (CLEAN_ROW, BACKDOORED_ROW):
                row["guaa_asr"] = self.reactivate(attack, art, label, use_trigger=False).metrics["test/asr"]
            rows.append(row)
        return rows

    def describe(self) -> dict:
        return asdict(self.spec)
