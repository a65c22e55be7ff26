"""SLURM executor: every job of a grid not yet in the store becomes one SLURM
job, submitted through submitit, with `afterok` dependencies that mirror the
job graph, so the cluster's scheduler orders and places the whole grid.

A SLURM job runs the same entry point as a local worker (`JobRunner` in
`sweeps/worker.py`) against the same store, which must therefore be on a
filesystem every node shares (as must the suite's Python environment and the
data directory). Results travel through the store only; submitit's folder
(`<output>/slurm/<run>/`) holds the submission scripts and each job's logs.

- Resume: run the grid again. Jobs in the store are skipped; jobs that an
  earlier submission left pending or running on the cluster are followed,
  not submitted twice (their SLURM ids are kept in `<output>/slurm/jobs.json`).
- Preemption and time limits: a job is requeued by submitit (up to
  `max_requeues` times) and its training continues from the checkpoint its
  fits keep in the store's temporary area (benchmark/storage/checkpoints.py).
- Failure: a job that ends without its artifact failed; its dependents are
  cancelled by SLURM (`--kill-on-invalid-dep=yes`) and reported as skipped;
  every other job goes on.
- Ctrl-C stops following, not the jobs: they keep running on the cluster.

Grid settings (`executor:` in the grid file, all optional but `backend`):

    executor:
      backend: slurm
      partition: gpu            # --partition
      account: my-lab           # --account
      qos: normal               # --qos
      constraint: a100          # --constraint
      gpus_per_job: 1           # --gpus-per-node
      cpus_per_job: 8           # --cpus-per-task (also the job's torch threads)
      mem_gb: 32                # --mem
      time_min: 240             # --time, or per stage kind: {default: 60, attack: 600, train: 600}
      setup: ["module load cuda"]   # shell lines run before the job
      additional: {exclude: node7}  # any other sbatch option
      max_requeues: 3           # preemptions / time-outs survived per job
      wait: true                # false: submit and return at once
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console

from benchmark.errors import ConfigError
from sweeps.executor import Outcome
from sweeps.graph import JobGraph
# The settings' checks live in sweeps/slurm_settings.py so that sweeps/grid.py can
# use them without importing this module, whose imports (executor, job graph)
# import grid.py back; imported here for SlurmExecutor and for code that still
# imports them from sweeps.slurm.
from sweeps.slurm_settings import SLURM_FIELDS, check_settings  # noqa: F401

ACTIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


def _checkpointable():
    import submitit

    class StageJobCall(submitit.helpers.Checkpointable):
        """What one SLURM job runs: one stage job through the local workers'
        `JobRunner`. Checkpointable: on preemption or time-out submitit
        requeues this same call, and the stage resumes from its checkpoint."""

        def __call__(self, store: str, data_dir: str, output: str, project: str, spec_text: str, job_id: str,
                     checkpoint_every: int, compile: bool = False, grid: str = "") -> str:
            import torch

            from sweeps.worker import JobRunner

            cpus = os.environ.get("SLURM_CPUS_PER_TASK")
            if cpus:
                torch.set_num_threads(int(cpus))
            runner = JobRunner(store, data_dir, output, project, checkpoint_every=checkpoint_every, compile=compile,
                               grid=grid)
            runner.run(spec_text, job_id)
            return job_id

    return StageJobCall()


class SlurmExecutor:
    def __init__(self, graph: JobGraph, settings: dict, console: Console | None = None,
                 poll_seconds: float = 5.0, checkpoint_every: int = 5, compile: bool = False):
        self.graph, self.console = graph, console or Console(stderr=True)
        self.settings = check_settings(settings, str(graph.grid.path))
        self.poll, self.checkpoint_every, self.compile = poll_seconds, checkpoint_every, compile
        self.output = Path(graph.grid.output).resolve()
        self.state_file = self.output / "slurm" / "jobs.json"

    # ---- submission -------------------------------------------------------------
    def _executor(self, folder: Path, kind: str, after: list[str]):
        import submitit

        s = self.settings
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=s["max_requeues"])
        params = {"job_name": f"bdbench-{kind}", "time": s["time_min"].get(kind, s["time_min"]["default"]),
                  "cpus_per_task": s["cpus_per_job"], "setup": list(s["setup"]),
                  # a job whose dependency failed is cancelled instead of pending forever
                  "additional_parameters": {"kill-on-invalid-dep": "yes", **s["additional"]}}
        for key in ("partition", "account", "qos", "constraint"):
            if s[key] is not None:
                params[key] = s[key]
        if s["gpus_per_job"]:
            params["gpus_per_node"] = s["gpus_per_job"]
        if s["mem_gb"] is not None:
            params["mem"] = f"{s['mem_gb']}GB"
        if after:
            params["dependency"] = "afterok:" + ":".join(after)
        executor.update_parameters(**params)
        return executor

    def _order(self, pending: list[str]) -> list[str]:
        """Pending jobs with every job after the pending jobs it depends on."""
        nodes, todo, out = self.graph.nodes, set(pending), []
        while todo:
            ready = [j for j in pending if j in todo and not (nodes[j].deps & todo)]
            if not ready:
                raise RuntimeError(f"the job graph has a cycle among {sorted(todo)[:5]}")
            for job_id in ready:
                todo.discard(job_id)
                out.append(job_id)
        return out

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _save_state(self, state: dict) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(partial, self.state_file)

    # ---- the loop ----------------------------------------------------------------
    def run(self) -> Outcome:
        graph, out = self.graph, Outcome()
        pending = []
        for job_id in graph.nodes:
            (out.cached if graph.stored(job_id) else pending).append(job_id)
        if not pending:
            return out
        state = self._load_state()
        active = active_jobs()
        folder = self.output / "slurm" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # a fresh one per run
        followed: dict[str, dict] = {}  # grid job id -> {"slurm": id, "log": path}
        earlier_ones = 0
        for job_id in self._order(pending):
            node = graph.nodes[job_id]
            earlier = state.get(job_id)
            if earlier and earlier["slurm"] in active:
                followed[job_id] = earlier  # still queued or running from an earlier submission
                earlier_ones += 1
                continue
            after = [followed[d]["slurm"] for d in node.deps if d in followed]
            job = self._executor(folder, node.job.kind, after).submit(
                _checkpointable(), str(graph.store.root.resolve()), str(Path(graph.grid.data_dir).resolve()),
                str(self.output), graph.grid.wandb_project, graph.spec_json(job_id), job_id, self.checkpoint_every,
                self.compile, graph.grid.name)
            followed[job_id] = state[job_id] = {"slurm": job.job_id, "log": str(job.paths.stderr)}
            self._save_state(state)
        self.console.print(f"SLURM: {len(pending) - earlier_ones} jobs submitted (logs under {folder}), "
                           f"{earlier_ones} followed from an earlier submission, {len(out.cached)} in the store")
        if not self.settings["wait"]:
            self.console.print("executor.wait is false: not waiting; run the grid again to follow the jobs "
                               "and write the report")
            out.detached = True
            return out
        return self._follow(followed, out)

    def _follow(self, followed: dict[str, dict], out: Outcome) -> Outcome:
        graph = self.graph
        waiting = dict(followed)
        start = time.time()
        last_line = ""
        try:
            while waiting:
                try:
                    active = active_jobs()
                except ConfigError as exc:  # a busy controller: ask again next round
                    self.console.print(f"[yellow]{exc}[/]; retrying")
                    time.sleep(self.poll)
                    continue
                for job_id, info in list(waiting.items()):
                    if info["slurm"] in active:
                        continue
                    del waiting[job_id]
                    if graph.stored(job_id):
                        out.done.append(job_id)
                    elif graph.nodes[job_id].deps & (set(out.failed) | set(out.skipped)):
                        out.skipped.append(job_id)
                    else:
                        out.failed[job_id] = Path(info["log"])
                        node = graph.nodes[job_id].job
                        self.console.print(f"[red]failed[/] {node.kind} {node.label} [{node.cell}] "
                                           f"(SLURM job {info['slurm']}); log: {info['log']}")
                line = (f"{graph.grid.name}: done {len(out.done)}  in store {len(out.cached)}  "
                        f"queued/running {len(waiting)}  failed {len(out.failed)}  skipped {len(out.skipped)}  "
                        f"elapsed {int(time.time() - start)} s")
                if line != last_line:
                    self.console.print(line, highlight=False)
                    last_line = line
                if waiting:
                    time.sleep(self.poll)
        except KeyboardInterrupt:
            out.interrupted = True
            self.console.print("[yellow]stopped following[/]: the jobs keep running on the cluster; run the grid "
                               "again to follow them (scancel --name=bdbench-* cancels them)")
        return out


def active_jobs() -> set[str]:
    """Ids of this user's jobs SLURM still holds (pending, running, completing)."""
    try:
        result = subprocess.run(["squeue", "-h", "--me", "-o", "%i %T", "--states", ",".join(ACTIVE_STATES)],
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot ask SLURM for the job queue (squeue): {exc}") from None
    if result.returncode != 0:
        raise ConfigError(f"squeue failed: {result.stderr.strip()}")
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
