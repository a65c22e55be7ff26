"""Local executor: runs the ready jobs of a job graph in parallel, one
long-lived worker process per slot (`sweeps/worker.py --serve`), each pinned
to a GPU through CUDA_VISIBLE_DEVICES (`jobs_per_gpu` slots per GPU, all GPUs
by default; `cpu_workers` slots when there is none). A worker imports the
suite and loads each dataset once and then takes job after job, so a job
does not pay a process start-up; a job that raises fails alone, and a worker
that dies (a segfault, the OOM killer) fails its current job and is replaced.

Resumable: jobs whose artifact is in the store are skipped, so re-running a
grid continues where it stopped. A failed job is reported with its log, its
dependents are skipped, everything else goes on; `run()` returns whether all
succeeded. Ctrl-C terminates the workers; the store stays intact because
artifacts appear only by an atomic rename.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
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


class Worker:
    """A `sweeps.worker --serve` process and a thread that turns its answer
    lines into events on the executor's queue."""

    def __init__(self, command: list[str], env: dict, log: Path, slot: int, events: queue.Queue):
        self.slot = slot
        handle = open(log, "a")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle,
                                        env=env, text=True, bufsize=1,
                                        start_new_session=True)  # its own group: Ctrl-C is ours to relay
        handle.close()
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    def _read(self, events: queue.Queue) -> None:
        for line in self.process.stdout:
            try:
                events.put((self, json.loads(line)))
            except json.JSONDecodeError:
                continue
        events.put((self, None))  # end of output: the process is gone

    def submit(self, request: dict) -> bool:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Running:
    job_id: str
    slot: int
    log: Path
    started: float


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, Path] = field(default_factory=dict)   # job id -> log
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    detached: bool = False   # jobs left running on a cluster, not followed (SLURM, wait: false)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted and not self.detached


class LocalExecutor:
    def __init__(self, graph: JobGraph, slots: list[str | None], console: Console | None = None,
                 poll_seconds: float = 0.3, checkpoint_every: int = 5, compile: bool = False):
        self.graph = graph
        self.checkpoint_every, self.compile = checkpoint_every, compile
        self.slots = slots
        self.console = console or Console(stderr=True)
        self.poll = poll_seconds
        self.output = Path(graph.grid.output)
        self.log_dir = self.output / "logs"
        self.spec_dir = self.output / "specs"
        self.workers: dict[int, Worker] = {}
        self.events: queue.Queue = queue.Queue()
        self.running: dict[str, Running] = {}

    # ---- one job -------------------------------------------------------------
    def _spec_file(self, job_id: str) -> Path:
        node = self.graph.nodes[job_id]
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.spec_dir / f"{node.cell.name.replace('/', '_')}.json"
        text = self.graph.spec_json(job_id)
        if not spec_file.is_file() or spec_file.read_text() != text:
            spec_file.write_text(text)
        return spec_file

    def _worker(self, slot: int) -> Worker:
        """The slot's worker, started (again) when it has none or it died."""
        worker = self.workers.get(slot)
        if worker is not None and worker.alive():
            return worker
        grid = self.graph.grid
        env = dict(os.environ)
        device = self.slots[slot]
        if device is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            # share the cores between concurrent CPU workers
            env["BDBENCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(self.slots)))
        else:
            env["CUDA_VISIBLE_DEVICES"] = device
        command = [sys.executable, "-m", "sweeps.worker", "--serve", "--store", str(self.graph.store.root),
                   "--data-dir", str(grid.data_dir), "--output", str(self.output), "--project", grid.wandb_project,
                   "--grid", grid.name, "--checkpoint-every", str(self.checkpoint_every)]
        command += ["--compile"] if self.compile else []
        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker = Worker(command, env, self.log_dir / f"worker-{slot}.log", slot, self.events)
        self.workers[slot] = worker
        return worker

    def _start(self, job_id: str, slot: int) -> Running:
        kind, key = job_id.split("/")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{kind}-{key}.log"
        request = {"spec": str(self._spec_file(job_id)), "job": job_id, "log": str(log)}
        if not self._worker(slot).submit(request):  # died since its last answer: one fresh try
            self.workers.pop(slot, None)
            self._worker(slot).submit(request)
        return Running(job_id, slot, log, time.time())

    def _finished(self) -> list[tuple[Running, bool, str | None]]:
        """Jobs that ended since the last call: (job, ok, reason)."""
        ended = []
        while True:
            try:
                worker, answer = self.events.get_nowait()
            except queue.Empty:
                break
            slot = worker.slot
            job = next((r for r in self.running.values() if r.slot == slot), None)
            if job is None or self.workers.get(slot) is not worker:
                continue  # an idle worker's exit, or a replaced worker's last words
            if answer is None:  # the worker died mid-job
                code = worker.process.wait()
                self.workers.pop(slot, None)
                with open(job.log, "a") as fh:
                    fh.write(f"\nworker process died (exit code {code}) while running this job\n")
                ended.append((job, False, f"worker died, exit {code}"))
            elif answer.get("job") == job.job_id:
                ended.append((job, bool(answer.get("ok")), answer.get("error")))
        return ended

    # ---- the loop --------------------------------------------------------------
    def run(self) -> Outcome:
        out = Outcome()
        graph = self.graph
        pending = []
        for job_id in graph.nodes:
            (out.cached if graph.stored(job_id) else pending).append(job_id)
        finished = set(out.cached)
        running = self.running
        free = list(range(len(self.slots)))
        start = time.time()
        durations: list[float] = []

        def view():
            return self._view(out, pending, running, start, durations)

        try:
            with Live(view(), console=self.console, refresh_per_second=2, transient=False) as live:
                while pending or running:
                    for r, ok, reason in self._finished():
                        job_id = r.job_id
                        del running[job_id]
                        free.append(r.slot)
                        durations.append(time.time() - r.started)
                        if ok and graph.stored(job_id):
                            out.done.append(job_id)
                            finished.add(job_id)
                        else:
                            out.failed[job_id] = r.log
                            blocked = graph.dependents(job_id) & set(pending)
                            out.skipped += sorted(blocked)
                            pending = [p for p in pending if p not in blocked]
                            node = graph.nodes[job_id].job
                            live.console.print(f"[red]failed[/] {node.kind} {node.label} [{node.cell}] "
                                               f"({reason}); log: {r.log}; skipping {len(blocked)} dependent job(s)")
                    for job_id in [p for p in pending if graph.nodes[p].deps <= finished]:
                        if not free:
                            break
                        pending.remove(job_id)
                        running[job_id] = self._start(job_id, free.pop(0))
                    live.update(view())
                    time.sleep(self.poll)
            self._close()
        except KeyboardInterrupt:
            out.interrupted = True
            self._stop(self.workers.values())
            self.workers.clear()
            self.console.print("[yellow]interrupted[/]: workers stopped; finished artifacts are kept and "
                               "half-finished ones were never published; run the grid again to resume")
        return out

    def _close(self) -> None:
        """End of the grid: close every worker's input; they exit on it."""
        for worker in self.workers.values():
            try:
                worker.process.stdin.close()
            except OSError:
                pass
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._stop([worker])
        self.workers.clear()

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
