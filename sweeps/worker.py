"""Runs stage jobs of a grid for the executor.

`--serve` (what the executor uses): a long-lived worker bound to one slot
(one GPU, or a share of the CPU cores). It imports the suite once and keeps
the loaded data modules and planned cells between jobs, so a job costs its
own work, not a Python start-up, a dataset decode and a plan (about 5-10 s
each on two cores). It reads one request per line on stdin,
``{"spec": <cell spec JSON file>, "job": <kind/key>, "log": <file>}``, runs
the job with its stdout/stderr going to that log, logs it to W&B, and
answers one line on its original stdout, ``{"job": ..., "ok": ..., "error": ...}``.
An exception fails that job only; a crash of the process fails its current
job and the executor starts a new worker. End of input ends the worker.

Without `--serve` it runs the single job given by `--spec`/`--job`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch


def stage_model(kind: str, label: str) -> str | None:
    """The model a stage made or measured, as the results rows name it
    ("clean", "backdoored" or the defense), read from the job's label
    (benchmark/cell/stages: reactivation.label, bec.label); None for stages that
    concern no single model (trigger preparation, the clean model under the
    trigger)."""
    if kind == "train":
        return "clean"
    if kind == "attack":
        return "backdoored"
    if kind in ("defense", "purify"):
        return label
    if kind in ("reactivation", "guaa", "controls", "retune", "qra") and " vs " in label:
        return label.split(" vs ", 1)[1]
    if kind == "bec" and label.startswith("S(f_A, ") and label.endswith(")"):
        return label[len("S(f_A, "):-1]
    return None


class JobRunner:
    """Runs jobs, caching data modules and cells across them."""

    def __init__(self, store: str, data_dir: str, output: str, project: str, checkpoint_every: int = 5,
                 compile: bool = False, grid: str = ""):
        from benchmark.storage.store import ArtifactStore

        #: the grid's name, in every stage run's W&B config (dashboards filter on it)
        self.grid = grid
        self.store = ArtifactStore(store)
        self.checkpoint_every, self.compile = checkpoint_every, compile
        self.data_dir, self.output, self.project = data_dir, Path(output), project
        self._modules: dict[str, object] = {}
        self._cells: dict[str, object] = {}

    def cell(self, spec_text: str):
        from benchmark.cell.cell import build_cell_datamodule, datamodule_key, make_cell
        from benchmark.cell.spec import spec_from_dict

        if spec_text not in self._cells:
            spec = spec_from_dict(json.loads(spec_text))
            key = datamodule_key(spec)
            if key not in self._modules:
                self._modules[key] = build_cell_datamodule(spec, self.data_dir)
            self._cells[spec_text] = make_cell(spec, self.store, data_dir=self.data_dir, progress=False,
                                               datamodule=self._modules[key],
                                               checkpoint_every=self.checkpoint_every, compile=self.compile)
        return self._cells[spec_text]

    def run(self, spec_text: str, job_id: str) -> None:
        from benchmark.reporting.wandb_logging import finish_stage, stage_logger

        cell = self.cell(spec_text)
        spec = cell.spec
        job = next((j for j in cell.jobs if j.id == job_id), None)
        if job is None:
            raise LookupError(f"job {job_id} is not in the plan of cell {cell.name}")
        # The config keys W&B panels filter and group on (README, "Weights & Biases");
        # benchmark/reporting/wandb_dashboard.py builds on these names.
        run_config = {"grid": self.grid, "dataset": spec.dataset,
                      "arch": job.config.get("model", {}).get("arch", spec.arch), "attack": spec.attack,
                      "seed": spec.seed, "stage": job.kind, "job": job.label,
                      "model": stage_model(job.kind, job.label),
                      "defense": job.config.get("defense"), "method": job.config.get("method"),
                      "key": job.key, "inputs": job.input_keys, "config": job.config}
        logger = stage_logger(project=self.project, save_dir=self.output, cell=cell.name, kind=job.kind,
                              label=job.label, run_config=run_config)
        cell.trainers.logger = logger
        print(f"{job.kind} {job.label} [{cell.name}] -> {job.key}", flush=True)
        try:
            artifact = cell.execute(job)
        finally:
            cell.trainers.logger = None
        finish_stage(logger, artifact.metrics)


def _redirect(fd_target: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd_target, 1)
    os.dup2(fd_target, 2)


def serve(runner: JobRunner) -> int:
    # The original stdout is the answer channel; fds 1 and 2 then point at the
    # current job's log (or nowhere between jobs), so nothing a job prints
    # (Lightning, W&B, tracebacks) can corrupt the answers.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    idle = os.open(os.devnull, os.O_WRONLY)
    _redirect(idle)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _redirect(log)
        ok, error = True, None
        try:
            runner.run(Path(request["spec"]).read_text(), request["job"])
        except Exception as exc:  # noqa: BLE001  (one job fails; the worker goes on)
            traceback.print_exc()
            ok, error = False, f"{type(exc).__name__}: {exc}"
        _redirect(idle)
        os.close(log)
        answers.write(json.dumps({"job": request["job"], "ok": ok, "error": error}) + "\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="take jobs from stdin until it closes")
    parser.add_argument("--spec", help="cell spec as a JSON file (single-job mode)")
    parser.add_argument("--job", help="job id <kind>/<key> (single-job mode)")
    parser.add_argument("--store", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", required=True, help="grid output directory (W&B runs go below it)")
    parser.add_argument("--project", default="backdoor-reactivation")
    parser.add_argument("--grid", default="", help="the grid's name (recorded in every stage run's W&B config)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="epochs between a fit's checkpoints")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model of f_C/f_A training")
    args = parser.parse_args(argv)
    if not args.serve and not (args.spec and args.job):
        parser.error("give --serve, or --spec and --job")

    threads = os.environ.get("BDBENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    runner = JobRunner(args.store, args.data_dir, args.output, args.project, args.checkpoint_every, args.compile,
                       grid=args.grid)
    if args.serve:
        return serve(runner)
    try:
        runner.run(Path(args.spec).read_text(), args.job)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
