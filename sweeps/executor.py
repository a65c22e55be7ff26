"""Local executor: runs the ready jobs of a job graph in parallel, one
subprocess per job, each pinned to a GPU slot through CUDA_VISIBLE_DEVICES
(`jobs_per_gpu` slots per GPU, all GPUs by default; `cpu_workers` slots when
there is none).

Resumable: jobs whose artifact is in the store are skipped, so re-running a
grid continues where it stopped. A failed job is reported with its log, its
dependents are skipped, everything else goes on; `run()` returns whether all
succeeded. Ctrl-C terminates the workers; the store stays intact because
artifacts appear only by an atomic rename.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweeps.graph import JobGraph


def gpu_slots(jobs_per_gpu: int, cpu_workers: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES value per slot; None means CPU-only."""
    count = torch.cuda.device_count()
    if count == 0:
        return [None] * cpu_workers
    return [str(i) for i in range(count) for _ in range(jobs_per_gpu)]


@dataclass
class Running:
    job_id: str
    slot: int
    process: subprocess.Popen
    log: Path
    started: float


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, Path] = field(default_factory=dict)   # job id -> log
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


class LocalExecutor:
    def __init__(self, graph: JobGraph, slots: list[str | None], console: Console | None = None,
                 poll_seconds: float = 0.3):
        self.graph = graph
        self.slots = slots
        self.console = console or Console(stderr=True)
        self.poll = poll_seconds
        self.output = Path(graph.grid.output)
        self.log_dir = self.output / "logs"
        self.spec_dir = self.output / "specs"

    # ---- one job -------------------------------------------------------------
    def _command(self, job_id: str) -> list[str]:
        node = self.graph.nodes[job_id]
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.spec_dir / f"{node.cell.name.replace('/', '_')}.json"
        spec_file.write_text(self.graph.spec_json(job_id))
        grid = self.graph.grid
        return [sys.executable, "-m", "sweeps.worker", "--spec", str(spec_file), "--job", job_id,
                "--store", str(self.graph.store.root), "--data-dir", str(grid.data_dir),
                "--output", str(self.output), "--project", grid.wandb_project]

    def _start(self, job_id: str, slot: int) -> Running:
        kind, key = job_id.split("/")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{kind}-{key}.log"
        env = dict(os.environ)
        device = self.slots[slot]
        if device is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            # share the cores between concurrent CPU workers
            env["BDBENCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(self.slots)))
        else:
            env["CUDA_VISIBLE_DEVICES"] = device
        handle = open(log, "w")
        process = subprocess.Popen(self._command(job_id), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)  # its own group: Ctrl-C is ours to relay
        handle.close()
        return Running(job_id, slot, process, log, time.time())

    # ---- the loop --------------------------------------------------------------
    def run(self) -> Outcome:
        out = Outcome()
        graph = self.graph
        pending = []
        for job_id in graph.nodes:
            (out.cached if graph.stored(job_id) else pending).append(job_id)
        finished = set(out.cached)
        running: dict[str, Running] = {}
        free = list(range(len(self.slots)))
        start = time.time()
        durations: list[float] = []

        def view():
            return self._view(out, pending, running, start, durations)

        try:
            with Live(view(), console=self.console, refresh_per_second=2, transient=False) as live:
                while pending or running:
                    for job_id, r in list(running.items()):
                        code = r.process.poll()
                        if code is None:
                            continue
                        del running[job_id]
                        free.append(r.slot)
                        durations.append(time.time() - r.started)
                        if code == 0 and graph.stored(job_id):
                            out.done.append(job_id)
                            finished.add(job_id)
                        else:
                            out.failed[job_id] = r.log
                            blocked = graph.dependents(job_id) & set(pending)
                            out.skipped += sorted(blocked)
                            pending = [p for p in pending if p not in blocked]
                            node = graph.nodes[job_id].job
                            live.console.print(f"[red]failed[/] {node.kind} {node.label} [{node.cell}] "
                                               f"(exit {code}); log: {r.log}; skipping {len(blocked)} dependent job(s)")
                    for job_id in [p for p in pending if graph.nodes[p].deps <= finished]:
                        if not free:
                            break
                        pending.remove(job_id)
                        running[job_id] = self._start(job_id, free.pop(0))
                    live.update(view())
                    time.sleep(self.poll)
        except KeyboardInterrupt:
            out.interrupted = True
            self._stop(running.values())
            self.console.print("[yellow]interrupted[/]: workers stopped; finished artifacts are kept and "
                               "half-finished ones were never published; run the grid again to resume")
        return out

    @staticmethod
    def _stop(running) -> None:
        for r in running:
            try:
                os.killpg(r.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for r in running:
            try:
                r.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(r.process.pid, signal.SIGKILL)

    def _view(self, out: Outcome, pending, running, start, durations):
        elapsed = time.time() - start
        left = len(pending) + len(running)
        eta = ""
        if durations and left:
            eta = f"  ETA ~{_clock(sum(durations) / len(durations) * left / len(self.slots))}"
        head = Text.from_markup(
            f"[bold]{self.graph.grid.name}[/]  done {len(out.done)}  in store {len(out.cached)}  "
            f"running {len(running)}  failed [red]{len(out.failed)}[/]  skipped {len(out.skipped)}  "
            f"pending {len(pending)}  elapsed {_clock(elapsed)}{eta}")
        table = Table(show_header=False, box=None, padding=(0, 1))
        for r in running.values():
            node = self.graph.nodes[r.job_id].job
            device = self.slots[r.slot] or "cpu"
            table.add_row(f"[cyan]{device}[/]", node.kind, node.label, node.cell, _clock(time.time() - r.started))
        return Group(head, table)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
