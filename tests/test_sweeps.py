import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.errors import ConfigError, UnknownNameError
from sweeps.__main__ import main as sweeps_main
from sweeps.graph import build_graph
from sweeps.grid import load_grid

TINY = Path(__file__).resolve().parents[1] / "sweeps" / "tiny.yaml"


def _grid_file(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    raw.update(store=str(tmp_path / "store"), output=str(tmp_path / "out"), data_dir=str(tmp_path / "data"))
    raw.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wbcfg"),
               WANDB_CACHE_DIR=str(tmp_path / "wbcache"), HOME=str(tmp_path))
    env.pop("WANDB_API_KEY", None)
    return env


def test_expansion_and_deduplication(tmp_path):
    grid = load_grid(_grid_file(tmp_path, attacks=["badnets", "blended"], seeds=[0, 1]))
    assert len(grid.cells()) == 4
    graph = build_graph(grid)
    kinds = [n.job.kind for n in graph.nodes.values()]
    assert kinds.count("train") == 2            # one clean model per seed, shared by both attacks
    assert kinds.count("attack") == 4
    assert kinds.count("defense") == 4          # ft per attack x seed; "none" is the attack model itself
    # the defense jobs of a cell depend on that cell's attack job
    for node in graph.nodes.values():
        if node.job.kind == "defense":
            assert node.deps == {node.job.deps["attack"].id}


@pytest.mark.parametrize("change,error,match", [
    ({"attacks": ["badnets", "sleeper"]}, UnknownNameError, "blended"),
    ({"defenses": ["fine-tune"]}, UnknownNameError, "nad"),
    ({"datasets": ["mnist3d"]}, UnknownNameError, "fashion_mnist"),
    ({"seeds": [-1]}, ConfigError, "non-negative"),
    ({"executor": {"cpu_workers": -2}}, ConfigError, "positive"),
    ({"cell": {"epochs": -1}}, ConfigError, "epochs"),
    ({"cell": {"epoch": 3}}, ConfigError, "accepts"),
    ({"flavour": "vanilla"}, ConfigError, "unknown key"),
    ({"reactivation_params": {"wba": {"stepz": 1}}}, ConfigError, "re-activation 'wba'"),
    ({"per_arch": {"preact_resnet18": {"seeds": [1]}}}, ConfigError, "not in 'archs'"),
    ({"per_arch": {"small_cnn": {"epochs": 3}}}, ConfigError, "unknown key"),
    ({"per_arch": {"small_cnn": {"defenses": ["fine-tune"]}}}, UnknownNameError, "nad"),
    ({"per_arch": {"small_cnn": {"cell": {"epoch": 3}}}}, ConfigError, "accepts"),
    ({"per_arch": {"small_cnn": {"seeds": [-1]}}}, ConfigError, "non-negative"),
    ({"archs": ["small_cnn-w0"]}, UnknownNameError, "width"),
])
def test_bad_grid_fails_before_any_job(tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        build_graph(load_grid(_grid_file(tmp_path, **change)))
    assert not (tmp_path / "store").exists()


def test_per_arch_settings_make_a_ladder(tmp_path):
    """A ladder gives each rung its own seeds, attacks, defenses and cell
    settings; the others keep the grid's."""
    grid = load_grid(_grid_file(tmp_path, archs=["small_cnn", "preact_resnet18-w2"], seeds=[0, 1],
                                attacks=["badnets", "blended"],
                                per_arch={"preact_resnet18-w2": {"seeds": [0], "attacks": ["badnets"],
                                                                 "defenses": ["ft"], "cell": {"epochs": 1}}}))
    cells = grid.cells()
    small = [c for c in cells if c.arch == "small_cnn"]
    ladder = [c for c in cells if c.arch == "preact_resnet18-w2"]
    assert len(small) == 4 and {(c.attack, c.seed) for c in small} == {(a, s) for a in ("badnets", "blended")
                                                                       for s in (0, 1)}
    assert all(c.defenses == ("none", "ft") and c.epochs == 2 and c.batch_size == 64 for c in small)
    assert len(ladder) == 1
    assert (ladder[0].attack, ladder[0].seed, ladder[0].defenses, ladder[0].epochs) == ("badnets", 0, ("ft",), 1)
    assert ladder[0].batch_size == 64  # the grid's cell settings still apply under the rung's own


def test_malformed_yaml_and_missing_dataset(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed\n")
    assert sweeps_main(["run", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    grid = _grid_file(tmp_path, datasets=["cifar10"])
    assert sweeps_main(["run", str(grid), "--data-dir", str(tmp_path / "nothing-here")]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def _run_sweep(grid_file, env, *extra, timeout=600):
    return subprocess.run([sys.executable, "-m", "sweeps", "run", str(grid_file), *extra], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])


def _artifacts(store: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(store)): json.loads(p.read_text())["created"] + str(p.stat().st_mtime_ns)
            for p in store.glob("*/*/meta.json")}


def test_sweep_end_to_end_wandb_and_report(tmp_path):
    grid_file = _grid_file(tmp_path)
    result = _run_sweep(grid_file, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    graph = build_graph(load_grid(grid_file))
    assert all(graph.stored(i) for i in graph.nodes)
    out = tmp_path / "out"
    rows = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in rows} == {"clean", "backdoored", "none", "ft"}
    assert (out / "results.csv").read_text().count("\n") == len(rows) + 1
    assert (out / "summary.md").is_file() and (out / "bec_vs_asr.png").stat().st_size > 1000
    # W&B offline runs: one per stage plus the summary, with metrics on disk
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == len(graph) + 1
    from test_wandb_logging import parsed, read_records  # the on-disk reader of the W&B tests
    summary_keys, history_keys, groups = set(), set(), set()
    for run in runs:
        records = read_records(next(run.glob("*.wandb")))
        for item in parsed(records, "summary"):
            summary_keys |= set(item)
        for item in parsed(records, "history"):
            history_keys |= set(item)
        groups |= {r.run.run_group for r in records if r.WhichOneof("record_type") == "run"}
    assert {"test/asr", "test/clean_acc", "similarity"} <= summary_keys
    assert "train/loss_epoch" in history_keys
    assert "synthetic/small_cnn/badnets/seed0" in groups
    # the summary run's table carries the statistics over seeds (intervals, the paired test)
    summary_run = next(r for r in runs if any(r.glob("files/media/table/summary_*.table.json")))
    table = json.loads(next(summary_run.glob("files/media/table/summary_*.table.json")).read_text())
    assert {"n_seeds", "asr_mean", "asr_low", "asr_high", "gap:wba_mean", "gap:wba_p"} <= set(table["columns"])
    # a second run is served from the store
    again = _run_sweep(grid_file, _env(tmp_path))
    assert again.returncode == 0 and f"{len(graph)} jobs" in again.stderr


def test_failing_job_does_not_stop_the_others(tmp_path):
    # A learning rate this large makes FT's loss non-finite: the defense job
    # fails, its dependents are skipped, every other job still completes.
    grid_file = _grid_file(tmp_path, defense_params={"ft": {"epochs": 3, "lr": 1e30}})
    result = _run_sweep(grid_file, _env(tmp_path))
    assert result.returncode == 1
    assert "failed" in result.stderr and "defense-" in result.stderr
    graph = build_graph(load_grid(grid_file))
    ft = next(i for i, n in graph.nodes.items() if n.job.kind == "defense")
    assert not graph.stored(ft)
    log = next((tmp_path / "out" / "logs").glob("defense-*.log")).read_text()
    assert "FloatingPointError" in log
    for job_id in set(graph.nodes) - graph.dependents(ft) - {ft}:
        assert graph.stored(job_id), job_id


def test_resume_after_kill(tmp_path):
    grid_file = _grid_file(tmp_path)
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(grid_file)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 300
    while len(list(store.glob("*/*/meta.json"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-stage
    proc.wait()
    before = _artifacts(store)
    assert len(before) >= 3
    # no half-written artifact is visible: every published directory is complete
    for d in store.glob("*/*"):
        if d.parent.name != ".tmp":
            assert (d / "meta.json").is_file()
    result = _run_sweep(grid_file, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    after = _artifacts(store)
    assert {k: after[k] for k in before} == before  # nothing finished was recomputed
    assert len(after) == len(build_graph(load_grid(grid_file)))
    assert not any((store / ".tmp").iterdir())  # the killed workers' leftovers were cleared


def test_a_worker_that_dies_fails_its_job_only_and_is_replaced(tmp_path, monkeypatch, capsys):
    # Kill the worker process the moment it is handed the defense job, as a
    # segfault or the OOM killer would: that job fails, its dependents are
    # skipped, a fresh worker takes every other job.
    from sweeps import executor

    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    submit = executor.Worker.submit
    killed = []

    def submit_then_die(self, request):
        ok = submit(self, request)
        if request["job"].startswith("defense/") and not killed:
            os.kill(self.process.pid, signal.SIGKILL)
            killed.append(request["job"])
        return ok

    monkeypatch.setattr(executor.Worker, "submit", submit_then_die)
    grid_file = _grid_file(tmp_path)
    assert sweeps_main(["run", str(grid_file)]) == 1
    assert "worker died" in capsys.readouterr().err
    graph = build_graph(load_grid(grid_file))
    (dead,) = killed
    assert not graph.stored(dead)
    assert "worker process died" in next((tmp_path / "out" / "logs").glob("defense-*.log")).read_text()
    for job_id in set(graph.nodes) - graph.dependents(dead) - {dead}:
        assert graph.stored(job_id), job_id
