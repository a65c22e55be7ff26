"""The tiny grid through a real SLURM cluster (`make test-slurm` starts a
one-node cluster with slurm/local-cluster-up.sh and runs this): every job a
SLURM job with afterok dependencies; the grid killed mid-stage (the driver
SIGKILLed and every job scancel'ed, as a preemption of the whole cluster
would) and run again; the results identical, tensor for tensor and metric
for metric, to a local run, with the interrupted stage continued from its
checkpoint rather than started over."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "tiny.yaml"


def _cluster_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.returncode == 0 and any(s.strip().rstrip("*") in ("idle", "mixed", "allocated")
                                          for s in result.stdout.splitlines())


def _grid(tmp_path: Path, name: str, executor: dict) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    # long enough training that a kill lands between two of a fit's checkpoints
    raw["cell"].update(epochs=12)
    raw.update(store=str(tmp_path / name / "store"), output=str(tmp_path / name / "out"),
               data_dir=str(tmp_path / "data"), executor={"checkpoint_every": 1, **executor})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wbcfg"),
               WANDB_CACHE_DIR=str(tmp_path / "wbcache"))
    env.pop("WANDB_API_KEY", None)
    return env


def _run(grid: Path, env, timeout=1200):
    return subprocess.run([sys.executable, "-m", "sweeps", "run", str(grid)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _results(store: Path) -> dict:
    out = {}
    for meta in store.glob("*/*/meta.json"):
        record = json.loads(meta.read_text())
        tensors = meta.parent / "tensors.safetensors"
        out[f"{meta.parent.parent.name}/{meta.parent.name}"] = (
            record["metrics"], load_file(str(tensors)) if tensors.is_file() else {})
    return out


@pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster: run `make test-slurm` (starts a local one)")
def test_tiny_grid_through_slurm_killed_and_resumed_matches_a_local_run(tmp_path):
    env = _env(tmp_path)
    # one thread per job on both sides: the same arithmetic, so the same bits
    local = _grid(tmp_path, "local", {"cpu_workers": 2})
    slurm = _grid(tmp_path, "slurm", {"backend": "slurm", "cpus_per_job": 1, "time_min": 30})
    result = _run(local, env)
    assert result.returncode == 0, result.stderr[-3000:]

    driver = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(slurm)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = tmp_path / "slurm" / "store" / ".tmp" / "checkpoints"
    deadline = time.time() + 600
    while not list(checkpoints.glob("*/fit-*.safetensors")) and time.time() < deadline:
        time.sleep(0.1)
    interrupted = [p.parent.name for p in checkpoints.glob("*/fit-*.safetensors")]
    assert interrupted, "no stage wrote a checkpoint within 10 minutes"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    # this grid's jobs only (a developer's cluster may run others)
    ours = [entry["slurm"] for entry in json.loads((tmp_path / "slurm" / "out" / "slurm" / "jobs.json").read_text())
            .values()]
    subprocess.run(["scancel", *ours], check=True)
    while subprocess.run(["squeue", "-h", "-j", ",".join(ours)], capture_output=True, text=True).stdout.strip():
        time.sleep(0.5)
    store = tmp_path / "slurm" / "store"
    assert any((checkpoints / name).is_dir() for name in interrupted)  # the kill left a stage half-done
    kind, _, key = interrupted[0].partition("-")
    assert not (store / kind / key).exists()

    result = _run(slurm, env)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "slurm" / "out" / "slurm").glob("*/*_log.out"))
    assert "resuming this fit from its checkpoint" in logs, "the interrupted stage started over"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())

    expected, got = _results(tmp_path / "local" / "store"), _results(store)
    assert got.keys() == expected.keys()
    for job, (metrics, tensors) in expected.items():
        assert got[job][0] == metrics, job
        assert got[job][1].keys() == tensors.keys(), job
        for name, value in tensors.items():
            assert (got[job][1][name] == value).all(), f"{job}: {name}"
