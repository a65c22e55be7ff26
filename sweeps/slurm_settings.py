"""The SLURM backend's grid settings (`executor:` with `backend: slurm`; the
keys are documented in sweeps/slurm.py) and their validation.

Kept apart from the executor in sweeps/slurm.py so that reading a grid file
(sweeps/grid.py) can check these settings without importing the executor,
which imports the job graph, which imports sweeps/grid.py back. This module
imports nothing from sweeps."""
from __future__ import annotations

from benchmark.errors import ConfigError

SLURM_FIELDS = {"backend": "slurm", "partition": None, "account": None, "qos": None, "constraint": None,
                "gpus_per_job": 0, "cpus_per_job": 2, "mem_gb": None, "time_min": 240, "setup": [],
                "additional": {}, "max_requeues": 3, "wait": True}


def check_settings(settings: dict, where: str) -> dict:
    """The grid's SLURM settings with defaults, each value checked."""
    unknown = sorted(set(settings) - set(SLURM_FIELDS) - {"jobs_per_gpu", "cpu_workers", "checkpoint_every", "compile"})
    if unknown:
        raise ConfigError(f"{where}: unknown executor key(s) {unknown} for backend slurm; allowed: "
                          f"{', '.join(sorted(SLURM_FIELDS))}")
    out = {**SLURM_FIELDS, **settings}
    for key in ("partition", "account", "qos", "constraint"):
        if out[key] is not None and not isinstance(out[key], str):
            raise ConfigError(f"{where}: executor.{key} must be a string, got {out[key]!r}")
    for key, low in (("gpus_per_job", 0), ("cpus_per_job", 1), ("max_requeues", 0)):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < low:
            raise ConfigError(f"{where}: executor.{key} must be an integer >= {low}, got {out[key]!r}")
    if out["mem_gb"] is not None and (not isinstance(out["mem_gb"], (int, float)) or out["mem_gb"] <= 0):
        raise ConfigError(f"{where}: executor.mem_gb must be a positive number, got {out['mem_gb']!r}")
    times = out["time_min"] if isinstance(out["time_min"], dict) else {"default": out["time_min"]}
    if "default" not in times or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                         for v in times.values()):
        raise ConfigError(f"{where}: executor.time_min is minutes per job (a positive integer) or a mapping "
                          f"from stage kind to minutes with a 'default', got {out['time_min']!r}")
    out["time_min"] = times
    if not isinstance(out["setup"], list) or not all(isinstance(line, str) for line in out["setup"]):
        raise ConfigError(f"{where}: executor.setup must be a list of shell lines")
    if not isinstance(out["additional"], dict):
        raise ConfigError(f"{where}: executor.additional maps sbatch option names to values")
    if not isinstance(out["wait"], bool):
        raise ConfigError(f"{where}: executor.wait must be true or false")
    return out
