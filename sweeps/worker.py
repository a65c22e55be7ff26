"""Runs one stage job of a grid in its own process (the executor starts one
per job): rebuilds the job's cell from its spec, executes the job, logs it to
W&B. A crash here fails this job only."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="cell spec as a JSON file")
    parser.add_argument("--job", required=True, help="job id <kind>/<key>")
    parser.add_argument("--store", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", required=True, help="grid output directory (W&B runs go below it)")
    parser.add_argument("--project", default="backdoor-reactivation")
    args = parser.parse_args(argv)

    threads = os.environ.get("BDBENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    from benchmark.cell import Cell, CellSpec
    from benchmark.store import ArtifactStore
    from benchmark.wandb_logging import finish_stage, stage_logger

    spec = CellSpec.from_dict(__import__("json").loads(Path(args.spec).read_text()))
    cell = Cell(spec, ArtifactStore(args.store), data_dir=args.data_dir, progress=False)
    job = next((j for j in cell.jobs if j.id == args.job), None)
    if job is None:
        print(f"error: job {args.job} is not in the plan of cell {cell.name}", file=sys.stderr)
        return 2
    run_config = {"dataset": spec.dataset, "arch": job.config.get("model", {}).get("arch", spec.arch),
                  "attack": spec.attack, "seed": spec.seed, "stage": job.kind, "job": job.label,
                  "defense": job.config.get("defense"), "method": job.config.get("method"),
                  "key": job.key, "inputs": job.input_keys, "config": job.config}
    logger = stage_logger(project=args.project, save_dir=Path(args.output), cell=cell.name, kind=job.kind,
                          label=job.label, run_config=run_config)
    cell.trainers.logger = logger
    print(f"{job.kind} {job.label} [{cell.name}] -> {job.key}", flush=True)
    artifact = cell.execute(job)
    finish_stage(logger, artifact.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
