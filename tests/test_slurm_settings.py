"""The SLURM backend's settings and submission plan, without a cluster
(tests/test_slurm.py runs a grid through a real one)."""
import pytest
import yaml

from benchmark.errors import ConfigError
from sweeps.graph import build_graph
from sweeps.grid import load_grid
from sweeps.slurm import SlurmExecutor, check_settings
from test_sweeps import TINY


def _grid(tmp_path, executor):
    raw = yaml.safe_load(TINY.read_text())
    raw.update(store=str(tmp_path / "store"), output=str(tmp_path / "out"), data_dir=str(tmp_path / "data"),
               executor=executor)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_grid(path)


def test_grid_settings_with_defaults():
    s = check_settings({"backend": "slurm", "partition": "gpu", "gpus_per_job": 1,
                        "time_min": {"default": 30, "attack": 600}}, "grid.yaml")
    assert s["partition"] == "gpu" and s["gpus_per_job"] == 1 and s["cpus_per_job"] == 2
    assert s["time_min"] == {"default": 30, "attack": 600}
    assert check_settings({"backend": "slurm", "time_min": 45}, "g")["time_min"] == {"default": 45}


@pytest.mark.parametrize("bad,match", [
    ({"gpus_per_job": -1}, "gpus_per_job must be an integer >= 0"),
    ({"cpus_per_job": 0}, "cpus_per_job must be an integer >= 1"),
    ({"time_min": {"attack": 60}}, "with a 'default'"),
    ({"time_min": 0}, "positive integer"),
    ({"mem_gb": "lots"}, "mem_gb must be a positive number"),
    ({"partiton": "gpu"}, "unknown executor key"),
    ({"setup": "module load cuda"}, "list of shell lines"),
    ({"wait": "yes"}, "true or false"),
])
def test_bad_settings_name_the_key_and_what_is_allowed(bad, match):
    with pytest.raises(ConfigError, match=match):
        check_settings({"backend": "slurm", **bad}, "grid.yaml")


def test_a_grid_file_rejects_an_unknown_backend(tmp_path):
    with pytest.raises(ConfigError, match="backend must be one of local, slurm"):
        _grid(tmp_path, {"backend": "kubernetes"})


def test_jobs_are_submitted_after_everything_they_depend_on(tmp_path):
    grid = _grid(tmp_path, {"backend": "slurm"})
    graph = build_graph(grid)
    executor = SlurmExecutor(graph, grid.executor)
    pending = list(reversed(list(graph.nodes)))  # the worst order to start from
    order = executor._order(pending)
    assert sorted(order) == sorted(pending)
    position = {job: i for i, job in enumerate(order)}
    for job in order:
        assert all(position[d] < position[job] for d in graph.nodes[job].deps)


def test_sbatch_options_come_from_the_grid(tmp_path, monkeypatch):
    import submitit

    # submitit refuses to build an executor where `srun` is not on PATH; the sbatch text is what is tested here
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    grid = _grid(tmp_path, {"backend": "slurm", "partition": "gpu", "account": "lab", "gpus_per_job": 1,
                            "cpus_per_job": 8, "mem_gb": 32, "time_min": {"default": 30, "attack": 600},
                            "setup": ["module load cuda"], "additional": {"exclude": "node7"}})
    executor = SlurmExecutor(build_graph(grid), grid.executor)
    submitit = executor._executor(tmp_path / "slurm", "attack", ["12", "13"])
    text = submitit._make_submission_file_text("python -c pass", "uid")
    for line in ("--partition=gpu", "--account=lab", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--time=600", "--dependency=afterok:12:13", "--kill-on-invalid-dep=yes", "--exclude=node7",
                 "--job-name=bdbench-attack", "module load cuda"):
        assert line in text, line
    assert "--time=30" in executor._executor(tmp_path / "slurm", "defense", [])._make_submission_file_text(
        "python -c pass", "uid")
