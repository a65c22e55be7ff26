"""What the paper's CIFAR-10 grid costs on a machine, from measured rates.

`sweeps/cifar10.yaml` is planned on a CIFAR-10-sized synthetic data module
(planning only: nothing runs, content does not change compute), and every
job's work (images through the model, read from its config) is priced at
the rates `benchmark.speed.bench` measured. `ASSUMPTIONS` lists what is counted,
and which jobs are lower or upper bounds.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

GRID_FILE = Path(__file__).resolve().parent.parent / "sweeps" / "cifar10.yaml"
#: CIFAR-10's sizes, given to the synthetic data module that stands in for it
CIFAR10_DATA = {"num_train": 50_000, "num_test": 10_000, "num_classes": 10, "channels": 3, "size": 32}

@dataclass(frozen=True)
class PlannedJob:
    """What the estimate needs of a planned job: its kind, its config (as
    the store keys it) and how many surrogate models it trains against."""
    kind: str
    label: str
    config: dict
    surrogates: int = 0


@dataclass(frozen=True)
class GridData:
    num_train: int = 50_000
    num_test: int = 10_000
    num_classes: int = 10

    @property
    def non_target_test(self) -> int:
        """The poisoned test set: every test image outside the target class
        (classes are balanced: 9,000 of CIFAR-10's 10,000)."""
        return self.num_test - self.num_test // self.num_classes


@dataclass
class JobWork:
    """Images a job pushes through the model, per measured workload (the
    keys of `bench_loops.WORKLOADS`, whose rates price them)."""
    images: dict[str, float] = field(default_factory=dict)
    #: "estimate" (the same work as the measured loop), "lower bound" or "upper bound"
    bound: str = "estimate"
    estimated: bool = True

    def add(self, workload: str, images: float) -> None:
        self.images[workload] = self.images.get(workload, 0.0) + images


def defense_work(name: str, params: dict, clean_images: int) -> tuple[float, str]:
    """(images through a training step, bound) for defense `name`: its outer
    epochs over the clean subset, plus the inner loops its parameters state."""
    epochs = int(params.get("epochs", 0))
    outer = epochs * clean_images
    if name == "clp":  # data-free: prunes from the weights alone
        return 0.0, "estimate"
    if name == "ft-sam":  # two gradient passes per batch (the SAM ascent, then the step)
        return 2.0 * outer, "estimate"
    if name == "nad":  # the teacher's fine-tuning, then the student's
        return float((int(params.get("teacher_epochs", 0)) + epochs) * clean_images), "lower bound"
    if name == "nc":  # a trigger search of nc_epochs per class, then unlearning; early stop may cut the search
        search = int(params.get("num_classes", 10)) * int(params.get("nc_epochs", 0)) * clean_images
        return float(search + outer), "upper bound"
    if name == "anp":  # `iterations` batches, each with noise_steps ascent passes and a mask step
        passes = int(params.get("noise_steps", 1)) + 1
        return float(int(params.get("iterations", 0)) * int(params.get("batch_size", 256)) * passes), "lower bound"
    if name == "i-bau":  # per epoch: the inner maximisation pass and the outer pass (hypergradient not counted)
        return 2.0 * outer, "lower bound"
    if name == "sau":  # the unlearning steps only (the shared PGD steps are not counted)
        return float(outer * int(params.get("outer_steps", 1))), "lower bound"
    if name == "seam":  # forgetting on a fraction of the subset, then recovery; both may stop early
        forget = int(params.get("forget_epochs", 0)) * math.ceil(float(params.get("forget_fraction", 0.1))
                                                                 * clean_images)
        return float(forget + outer), "upper bound"
    return float(outer), "estimate" if name in ("ft", "fp", "fst") else "lower bound"


def reactivation_work(job: PlannedJob, data: GridData, work: JobWork) -> None:
    method, p = job.config.get("method"), job.config.get("params", {})
    if method in ("wba", "tbra"):
        batch = min(int(p["batch_size"]), int(p["num_samples"]))
        per_epoch = (int(p["num_samples"]) // batch) * batch  # drop_last
        if method == "wba":
            work.add("wba", int(p["epochs"]) * per_epoch * int(p.get("inner_steps", 1)))
        else:  # one forward/backward per surrogate and step ("sequential": one surrogate per step)
            models = 1 if p.get("ensemble") == "sequential" else max(1, job.surrogates)
            work.add("wba", int(p["epochs"]) * per_epoch * models)
        evaluations = 1
    elif method == "qbra":
        # the whole budget: a victim that resists never reaches stop_asr
        work.add("qbra", int(p["max_queries"]) * min(int(p["batch_size"]), int(p["num_samples"])))
        work.bound = "upper bound"
        evaluations = 1 + sum(1 for q in p.get("curve", ()) if q <= int(p["max_queries"]))
    else:
        work.estimated = False
        return
    work.add("evaluation", evaluations * data.non_target_test)


def job_work(job: PlannedJob, data: GridData) -> JobWork:
    work = JobWork()
    model_evaluation = data.num_test + data.non_target_test  # C-Acc on the clean set, ASR/RA on the poisoned one
    c = job.config
    if job.kind in ("train", "attack"):
        work.add("attack", int(c["train"]["epochs"]) * data.num_train)
        work.add("evaluation", model_evaluation)
        if job.kind == "attack" and c.get("attack") in ("input_aware", "wanet"):
            work.bound = "lower bound"  # a jointly trained generator / noise-mode samples add work
    elif job.kind == "defense":
        clean_images = math.ceil(float(c["clean_ratio"]) * data.num_train)
        images, work.bound = defense_work(c["defense"], c.get("params", {}), clean_images)
        work.add("defense", images)
        work.add("evaluation", model_evaluation)
    elif job.kind == "retune":  # weight-space re-activation: a fine-tune of every weight on a small split
        p = c["params"]
        work.add("defense", int(p["epochs"]) * max(1, round(float(p["split_ratio"]) * data.num_train)))
        work.add("evaluation", model_evaluation)
    elif job.kind == "purify":  # FT on the clean subset plus every poisoned sample
        p = c["params"]
        poisoned = round(float(c.get("poison_rate", 0.1)) * data.num_train)
        images = math.ceil(float(c["clean_ratio"]) * data.num_train) + poisoned
        work.add("defense", int(p["epochs"]) * images)
        work.add("evaluation", model_evaluation)
    elif job.kind == "evaluate":
        work.add("evaluation", model_evaluation)
    elif job.kind in ("reactivation", "guaa"):
        reactivation_work(job, data, work)
    elif job.kind == "bec":  # channel ranking on clean/triggered pairs, then features of f_A and f_X
        work.add("evaluation", 2 * int(c["rank_samples"]) + 2 * int(c["samples"]))
    elif job.kind == "controls":  # three cases at every noise level, then features of the three cases
        levels = len(c.get("noise_levels", ()))
        work.add("evaluation", 3 * levels * data.non_target_test + 5 * int(c["samples"]))
    else:  # trigger preparation: work that depends on the trigger's own optimiser
        work.estimated = False
    return work


@dataclass
class GridEstimate:
    seconds: float
    seconds_by_group: dict[str, float]
    jobs_by_group: dict[str, int]
    images_by_workload: dict[str, float]
    not_estimated: dict[str, int]
    bounds: dict[str, list[str]]

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def group(job: PlannedJob) -> str:
    """The row a job is summed into: its kind, split by method for
    re-activation (WBA, QBRA and TBRA differ by orders of magnitude)."""
    if job.kind in ("reactivation", "guaa") and job.config.get("method"):
        return f"{job.kind} {job.config['method']}"
    return job.kind


def estimate_grid(jobs: Iterable[PlannedJob], rates: Mapping[str, float], data: GridData) -> GridEstimate:
    """Serial device time of `jobs` (seconds) at `rates` (images/s per
    measured workload), in total and per `group`; jobs whose work cannot be
    read are counted apart, by kind."""
    seconds = 0.0
    seconds_by_group: dict[str, float] = {}
    jobs_by_group: dict[str, int] = {}
    images: dict[str, float] = {}
    skipped: dict[str, int] = {}
    bounds: dict[str, set[str]] = {}
    for job in jobs:
        work = job_work(job, data)
        if not work.estimated:
            skipped[job.kind] = skipped.get(job.kind, 0) + 1
            continue
        job_seconds = 0.0
        for workload, count in work.images.items():
            job_seconds += count / rates[workload]
            images[workload] = images.get(workload, 0.0) + count
        seconds += job_seconds
        row = group(job)
        seconds_by_group[row] = seconds_by_group.get(row, 0.0) + job_seconds
        jobs_by_group[row] = jobs_by_group.get(row, 0) + 1
        if work.bound != "estimate":
            name = job.config.get("defense") or job.config.get("method") or job.config.get("attack") or job.kind
            bounds.setdefault(work.bound, set()).add(f"{job.kind} {name}")
    return GridEstimate(seconds, seconds_by_group, jobs_by_group, images, skipped,
                        {k: sorted(v) for k, v in sorted(bounds.items())})


def planned_jobs(grid_file: Path = GRID_FILE) -> tuple[list[PlannedJob], GridData, str]:
    """The jobs of the grid planned on a CIFAR-10-sized synthetic data
    module (no download, no training: the planner builds configs only)."""
    from benchmark.storage.store import ArtifactStore
    from sweeps.graph import build_graph
    from sweeps.grid import load_grid

    grid = load_grid(grid_file)
    grid = dataclasses.replace(grid, datasets=["synthetic"], cell={**grid.cell, "data_params": dict(CIFAR10_DATA)})
    with tempfile.TemporaryDirectory() as store_dir:
        graph = build_graph(grid, ArtifactStore(store_dir))
    jobs = [PlannedJob(n.job.kind, n.job.label, n.job.config,
                       sum(role.startswith("surrogate:") for role in n.job.deps)) for n in graph.nodes.values()]
    data = GridData(CIFAR10_DATA["num_train"], CIFAR10_DATA["num_test"], CIFAR10_DATA["num_classes"])
    return jobs, data, ", ".join(grid.archs)


ASSUMPTIONS = [
    "serial time on one device at the measured suite rates (images/s); the executor's concurrent jobs "
    "(jobs_per_gpu) would shorten wall time on a GPU, not device time",
    "train/attack jobs: epochs x 50,000 images at the attack-training rate (batch 128); Input-Aware's "
    "generator and WaNet's noise samples add work not counted (lower bound)",
    "defense jobs: their epochs x the clean subset (clean_ratio x 50,000) at the FT rate, plus the inner "
    "loops their parameters state: NC's per-class trigger search at its full nc_epochs (early stop may cut it: "
    "upper bound), ANP's iterations x batch x (noise_steps + 1), i-BAU's inner pass (its hypergradient not "
    "counted), SAU's outer steps (its PGD steps not counted), NAD's teacher epochs; ANP, i-BAU, SAU and NAD are "
    "lower bounds, SEAM's early-stopping phases an upper bound; CLP reads no data; batch sizes other than "
    "FT's 256 (SEAM's 32) are priced at the FT rate",
    "WBA jobs: epochs x (num_samples // batch) x batch x inner_steps images at the WBA rate; TBRA the same "
    "per surrogate at the WBA rate (batch 500 instead of 128)",
    "QBRA jobs: the full query budget x images per query at the query rate (stop_asr may end it sooner: "
    "upper bound)",
    "evaluation: 10,000 clean + 9,000 poisoned test images per trained model; 9,000 per re-activation delta "
    "and per QBRA curve snapshot; BEC and controls as the images they read, at the evaluation rate",
    "trigger preparation jobs (SSBA's encoder, LC's robust model, Input-Aware's generator, LF, TrojanNN) are "
    "not estimated",
]
