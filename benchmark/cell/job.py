"""A stage job (one unit of work whose store key is known before it runs)
and a cell's plan (its jobs, deduplicated by key, found by label)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from benchmark.storage.store import Artifact, stage_key


@dataclass(eq=False)
class StageJob:
    """`run(inputs)` receives the artifacts of `deps` by role and returns
    (metrics, tensors or None). The key hashes kind, config and the inputs'
    keys, so it is known before anything runs."""
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


class Plan:
    """The jobs of one cell in dependency order. A job added twice (same
    key, e.g. f_A as the attacker's surrogate source) is kept once; every
    label it was added under finds it."""

    def __init__(self, cell: str):
        self.cell = cell
        self._jobs: dict[str, StageJob] = {}
        self._by_label: dict[str, StageJob] = {}

    def add(self, job: StageJob) -> StageJob:
        job.cell = self.cell
        label = f"{job.kind}/{job.label}"
        job = self._jobs.setdefault(job.id, job)
        self._by_label.setdefault(label, job)  # an aliased label finds the job that runs
        return job

    def find(self, kind: str, label: str) -> StageJob | None:
        return self._by_label.get(f"{kind}/{label}")

    def job(self, kind: str, label: str) -> StageJob:
        found = self.find(kind, label)
        if found is None:
            raise KeyError(f"no {kind} job {label!r} in {self.cell}")
        return found

    @property
    def jobs(self) -> list[StageJob]:
        return list(self._jobs.values())
