"""One cell of the benchmark: dataset x architecture x attack x defenses x seed,
planned as a graph of stage jobs over the artifact store, for a model of any
family (benchmark/cell/family.py: a classifier, a CLIP).

    train   clean model f_C ──┬──▶ trigger  (a trigger with state: prepared once)
                              │        │
    attack  backdoored model f_A ◀─────┘        (these three: the family's)
    evaluate  f_C under f_A's trigger
    defense   f_D = defense(f_A)
    bec       S(f_A, f_X), X in {C, A, D}
    reactivation / guaa  (method, f_X): trigger + delta / clean + delta (control)
    controls  noise robustness, feature CKA

Every job's store key is known before anything runs (a hash of its kind,
config and its inputs' keys), so a grid can deduplicate jobs across cells
(one f_C per dataset x arch x seed, one f_A per attack shared by all its
defenses), print a dry run, and resume. The stage kinds live in
`benchmark/cell/stages/` (one module each); this module only composes them.
`Cell.run()` executes the plan in order in this process; the sweep executor
hands jobs to its worker processes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from benchmark.cell.context import CellContext
from benchmark.cell.job import Plan, StageJob
from benchmark.cell.rows import BACKDOORED_ROW, CLEAN_ROW, cell_rows
from benchmark.cell.spec import SpecBase
from benchmark.cell.stages import bec, controls, defense, evaluate, qra, reactivation, retune
from benchmark.storage.checkpoints import JobCheckpoints
from benchmark.storage.store import Artifact, ArtifactStore
from benchmark.training import TrainerFactory

__all__ = ["Cell", "make_cell", "build_cell_datamodule", "datamodule_key"]


def datamodule_key(spec: SpecBase) -> str:
    """Cells with equal keys can share one loaded data module."""
    return json.dumps([spec.dataset, spec.family.datamodule_args(spec)], sort_keys=True)


def build_cell_datamodule(spec: SpecBase, data_dir: str | Path):
    from datamodules import build_datamodule

    return build_datamodule(spec.dataset, data_dir=data_dir, **spec.family.datamodule_args(spec))


class Cell:
    """A cell of any model family (the spec's): its plan of stage jobs, and
    running them."""

    def __init__(self, spec: SpecBase, store: ArtifactStore, data_dir: str | Path = "data",
                 accelerator: str = "auto", progress: bool = True, console: Console | None = None,
                 trainers: TrainerFactory | None = None, datamodule=None, checkpoint_every: int = 5,
                 compile: bool = False):
        spec.validate()
        #: epochs between checkpoints of a job's fits (benchmark/storage/checkpoints.py)
        self.checkpoint_every = checkpoint_every
        self.spec = spec
        self.family = spec.family
        self.store = store
        self.console = console or Console(stderr=True, quiet=not progress)
        self.trainers = trainers or TrainerFactory(accelerator, progress, compile=compile)
        # A grid passes one loaded data module to all cells of a dataset.
        self.dm = datamodule or build_cell_datamodule(spec, data_dir)
        self.dm.setup()
        self.dm.device = self.trainers.device  # batches are served where the model trains
        if self.trainers.device.type == "cuda":
            # evaluation and queries: as large as a GPU takes without strain
            self.dm.eval_batch_size = max(self.dm.eval_batch_size, self.family.gpu_eval_batch_size)
        self.dm.check_target(spec.target_label)
        self.ctx = CellContext(spec, store, self.dm, self.trainers, self.console)
        self.poison_idx, self.clean_idx = self.ctx.poison_idx, self.ctx.clean_idx
        # Planning builds every stage module once on a throw-away model, so a
        # bad parameter or name fails now, before hours of training.
        self._plan = self.plan()
        self.jobs = self._plan.jobs

    @property
    def name(self) -> str:
        return self.ctx.name

    @property
    def trigger(self):
        return self.ctx.trigger

    @property
    def trigger_config(self) -> dict:
        return self.ctx.trigger_config

    # ---- the plan --------------------------------------------------------------
    def plan(self) -> Plan:
        """All jobs of this cell in dependency order."""
        s, ctx = self.spec, self.ctx
        plan = Plan(self.name)
        clean, attack = self.family.plan_models(ctx, plan)
        plan.add(evaluate.evaluate_job(ctx, clean, attack))
        models = {CLEAN_ROW: clean, BACKDOORED_ROW: attack}
        for name in s.defenses:
            # "none" is f_A itself: alias the attack job instead of copying the
            # weights, so its re-activation runs are the backdoored row's.
            models[name] = attack if name == "none" else plan.add(defense.defense_job(ctx, name, attack))
        for label, job in models.items():
            plan.add(bec.bec_job(ctx, attack, clean, job, label))

        def surrogate_jobs(method: str, model_label: str, params: dict) -> list[StageJob]:
            """A transfer method's surrogates: the attacker's own f_A (on its
            architecture) under the cell's other defenses."""
            arch, names = reactivation.surrogate_names(ctx, method, model_label, params, (CLEAN_ROW, BACKDOORED_ROW))
            if not names:
                return []
            source = self.family.surrogate_source(ctx, plan, method, arch)
            return [plan.add(defense.defense_job(ctx, name, source)) for name in names]

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
        # the ε curve: every method and its gUAA control at further budgets
        curve_models = [d for d in s.defenses
                        if s.epsilon_curve_defenses is None or d in s.epsilon_curve_defenses]
        for eps in s.epsilon_curve:
            for method in s.reactivations:
                for label in (CLEAN_ROW, BACKDOORED_ROW, *curve_models):
                    for use_trigger in (True, False) if label not in (CLEAN_ROW, BACKDOORED_ROW) else (True,):
                        react = reactivation.reactivation_job(ctx, method, attack, models[label], label, use_trigger,
                                                              surrogate_jobs, epsilon=eps)
                        if react is not None:
                            plan.add(react)
        if s.retunings:
            # weight-space re-activation of every row, and of its control EP
            purified = plan.add(retune.purify_job(ctx, attack))
            plan.add(bec.bec_job(ctx, attack, clean, purified, retune.EXACT_PURIFICATION))
            for method in s.retunings:
                for label, job in {**models, retune.EXACT_PURIFICATION: purified}.items():
                    retuned = plan.add(retune.retune_job(ctx, method, attack, job, label))
                    if s.qra and method == qra.RETUNER and label not in (CLEAN_ROW, BACKDOORED_ROW):
                        plan.add(qra.qra_job(ctx, job, retuned, clean, label))
        return plan

    def job(self, kind: str, label: str) -> StageJob:
        return self._plan.job(kind, label)

    # ---- what tests and contracts call directly ----------------------------------------
    def load_model(self, artifact: Artifact):
        return self.ctx.load_model(artifact)

    def model_spec(self, arch: str | None = None) -> dict:
        return self.ctx.model_spec(arch)

    def evaluate(self, model, clean: bool = True, poisoned: bool = True) -> dict:
        return self.ctx.evaluate(model, clean, poisoned)

    def train_defense(self, name: str, attack: Artifact):
        """Apply defense `name` to f_A: the defense gets the backdoored model and
        the defender's data only (the family's: clean subset, clean pairs)."""
        return defense.train_defense(self.ctx, name, attack)

    # ---- executing -------------------------------------------------------------------
    def execute(self, job: StageJob) -> Artifact:
        """Run one job whose inputs are in the store, and save its artifact."""
        if self.store.has(job.kind, job.key):
            return self.store.load(job.kind, job.key)
        inputs = {role: self.store.load(dep.kind, dep.key) for role, dep in job.deps.items()}
        start = time.perf_counter()
        self.console.print(f"[bold]{job.kind}[/] {job.label} ...", highlight=False)
        # fits checkpoint in the store's temporary area: a job run again after
        # a kill continues from there (benchmark/storage/checkpoints.py)
        checkpoints = JobCheckpoints(self.store.checkpoint_dir(job.kind, job.key), self.checkpoint_every)
        self.trainers.checkpoints = checkpoints
        try:
            metrics, tensors = job.run(inputs)
        finally:
            self.trainers.checkpoints = None
        artifact = self.store.save(job.kind, job.key, job.config, job.input_keys, metrics, tensors,
                                   extra={"label": job.label, "cell": self.name,
                                          "seconds": round(time.perf_counter() - start, 2)})
        checkpoints.remove()
        self.console.print(f"  done in {time.perf_counter() - start:.1f} s  {artifact.path}", highlight=False)
        return artifact

    def run(self) -> list[dict]:
        for job in self.jobs:
            self.execute(job)
        return self.rows()

    def rows(self) -> list[dict]:
        return cell_rows(self.spec, self.store, self._plan)

    def describe(self) -> dict:
        return self.spec.to_dict()


def make_cell(spec: SpecBase, store: ArtifactStore, **kwargs) -> Cell:
    """The cell of a spec of any family (grids, the sweep worker, SLURM jobs)."""
    return Cell(spec, store, **kwargs)
