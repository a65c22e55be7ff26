"""One CLIP cell: caption dataset x CLIP architecture x attack x defenses x
seed, planned as stage jobs over the same store as the classifier cells.

    train     f_C: the pretrained CLIP (or trained from scratch on clean pairs)
    attack    f_A: f_C fine-tuned on pairs, a fraction triggered + target caption
    evaluate  f_C under the trigger (zero-shot)
    defense   f_D = defense(f_A) on the defender's clean pairs (CleanCLIP, FT)
    bec       S(f_A, f_X) on the image tower's block outputs
    reactivation / guaa   WBA, QBRA, TBRA toward the target class's text
              embedding (the zero-shot classifier's target logit), and the
              gUAA control on clean images
    controls  noise robustness, feature CKA (optional)

The stage kinds, keys, rows, report and W&B are the classifier cells'; the
CLIP-specific stages are `benchmark/stages/clip_training.py` and
`clip_defense.py`, and `ClipCellContext` makes every model a zero-shot
classifier for the shared stages.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from benchmark.cell.cell import Cell
from benchmark.cell.clip_spec import ClipCellSpec
from benchmark.errors import ConfigError
from benchmark.cell.rows import BACKDOORED_ROW, CLEAN_ROW
from benchmark.cell.stages import bec, controls, evaluate, reactivation
from benchmark.cell.stages import clip_defense, clip_training
from benchmark.cell.stages.clip_context import ClipCellContext
from benchmark.cell.stages.job import Plan, StageJob
from benchmark.storage.store import ArtifactStore
from benchmark.training import TrainerFactory
from datamodules import build_datamodule
from lightning_modules.clip.defenses import CLIP_DEFENSES


class ClipCell(Cell):
    def __init__(self, spec: ClipCellSpec, store: ArtifactStore, data_dir: str | Path = "data",
                 accelerator: str = "auto", progress: bool = True, console: Console | None = None,
                 trainers: TrainerFactory | None = None, datamodule=None, checkpoint_every: int = 5,
                 compile: bool = False):
        spec.validate()
        self.checkpoint_every = checkpoint_every
        self.spec = spec
        self.store = store
        self.console = console or Console(stderr=True, quiet=not progress)
        self.trainers = trainers or TrainerFactory(accelerator, progress, compile=compile)
        self.dm = datamodule or build_datamodule(spec.dataset, data_dir=data_dir, **spec.data_params)
        self.dm.setup()
        self.dm.device = self.trainers.device
        if self.trainers.device.type == "cuda":
            self.dm.eval_batch_size = max(self.dm.eval_batch_size, 1024)
        self.dm.check_target(spec.target_label)
        self.ctx = ClipCellContext(spec, store, self.dm, self.trainers, self.console)
        self.poison_idx, self.clean_idx = self.ctx.poison_idx, self.ctx.clean_idx
        self._plan = self.plan()
        self.jobs = self._plan.jobs

    def plan(self) -> Plan:
        s, ctx = self.spec, self.ctx
        plan = Plan(self.name)
        clean = plan.add(clip_training.clean_job(ctx))
        attack = plan.add(clip_training.attack_job(ctx, clean))
        ctx.attack_job = attack
        plan.add(evaluate.evaluate_job(ctx, clean, attack))
        models = {CLEAN_ROW: clean, BACKDOORED_ROW: attack}
        for name in s.defenses:
            models[name] = plan.add(clip_defense.defense_job(ctx, name, attack))
        for label, job in models.items():
            plan.add(bec.bec_job(ctx, attack, clean, job, label))

        def surrogate_jobs(method: str, model_label: str, params: dict) -> list[StageJob]:
            """TBRA's attacker-side copies: the attacker's own f_A under the
            cell's other defenses (same architecture: one CLIP per cell)."""
            if model_label in (CLEAN_ROW, BACKDOORED_ROW):
                return []
            if params.get("surrogate_arch") not in (None, s.arch):
                raise ConfigError(f"{method}: surrogate_arch is not supported in a CLIP cell (one CLIP per cell)")
            names = params.get("surrogates")
            if names is None:
                names = [d for d in s.defenses if d != model_label]
            for name in names:
                CLIP_DEFENSES.get(name)
                if name == model_label:
                    raise ConfigError(f"{method}: surrogate {name!r} is the victim's own defense; that is "
                                      f"white-box re-activation, not transfer")
            return [plan.add(clip_defense.defense_job(ctx, name, attack)) for name in names]

        for method in s.reactivations:
            for label, job in models.items():
                for use_trigger in (True, False):
                    if not use_trigger and label in (CLEAN_ROW, BACKDOORED_ROW):
                        continue  # the gUAA control is asked of defense models
                    react = reactivation.reactivation_job(ctx, method, attack, job, label, use_trigger,
                                                          surrogate_jobs)
                    if react is not None:
                        plan.add(react)
            for label in (s.defenses if s.controls else ()):
                rba = plan.find("reactivation", reactivation.label(method, label))
                guaa = plan.find("guaa", reactivation.label(method, label))
                if rba and guaa:
                    plan.add(controls.controls_job(ctx, method, label, attack, models[label], rba, guaa))
        return plan

    def train_defense(self, name: str, attack):
        return clip_defense.train_defense(self.ctx, name, attack)

    def model_spec(self, arch: str | None = None) -> dict:
        return self.ctx.model_spec(arch)
