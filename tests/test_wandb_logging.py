"""W&B logging, checked against what wandb actually wrote to disk: the offline
runs' transaction logs (.wandb) are parsed back into protobuf records. Two
runs (one stage, one summary) are shared by all assertions to keep wandb's
start-up cost (about a second per run) low."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmark.reporting import wandb_logging as wl
CELL = "fashion_mnist/small_cnn/badnets/seed0"
CONFIG = {"dataset": "fashion_mnist", "arch": "small_cnn", "attack": "badnets", "defense": None, "seed": 0,
          "stage": {"lr": 0.1, "epochs": 2}}


def read_records(path: Path) -> list:
    """Records of a .wandb file: a 7-byte file header (":W&B", magic, version),
    then LevelDB-log style 32 KiB blocks of chunks, each with a 7-byte header
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last). The reader lived
    in wandb's Python package before the Go core took over; wandb 0.31 ships
    none, so the few lines are here."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def finished_records(run_dir: Path, timeout: float = 30.0) -> list:
    """The run's records once its exit record is on disk: wandb-core writes the
    transaction log asynchronously, so finish() can return a few milliseconds
    before the file is complete (at process exit the service is drained)."""
    (path,) = run_dir.glob("*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def parsed(records, kind: str) -> list[dict]:
    """History rows / summary updates as {key: value}, keys joined with "/"
    the way the W&B UI shows nested keys."""
    out = []
    for rec in records:
        if rec.WhichOneof("record_type") != kind:
            continue
        items = rec.history.item if kind == "history" else rec.summary.update
        out.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return out


def run_dirs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


def isolate(tmp_path: Path, monkeypatch) -> None:
    """No user W&B setup may leak in (key, netrc, settings), and wandb's own
    config/cache directories land in tmp."""
    for var in ("WANDB_API_KEY", "NETRC", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))


@pytest.fixture(autouse=True)
def offline_env(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("stage")
        isolate(tmp, mp)
        save_dir = tmp / "runs"
        logger = wl.stage_logger(project="bench-test", save_dir=save_dir, cell=CELL, kind="train",
                                 label="backdoored", run_config=CONFIG)
        torch.manual_seed(0)
        data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=4)
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
        trainer.fit(Tiny(), data)
        wl.finish_stage(logger, {"test/asr": 0.5, "test/clean_acc": torch.tensor(0.9),
                                 "bec": {"score": 0.25}, "note": "not a number"})
        (run_dir,) = run_dirs(save_dir)
        yield run_dir, finished_records(run_dir)


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("summary")
        isolate(tmp, mp)
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [0, 1])
        png = tmp / "bec_vs_asr.png"
        fig.savefig(png)
        plt.close(fig)
        rows = [{"dataset": "fashion_mnist", "test/asr": 0.9, "curve": [1, 2]}, {"dataset": "cifar10", "extra": "x", "test/asr": float("nan")}]
        summary = [{"dataset": "fashion_mnist", "test/asr_mean": 0.9, "test/asr_std": None}]
        run_dir = wl.log_summary(project="bench-test", save_dir=tmp / "runs", grid_name="grid-a", rows=rows,
                                 summary_rows=summary, figures={"bec_vs_asr": png, "csv": tmp / "results.csv"})
        assert Path(run_dir) in run_dirs(tmp / "runs")
        yield Path(run_dir), finished_records(Path(run_dir))


def test_stage_run_records_history_summary_and_config(stage_run):
    run_dir, records = stage_run
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type, run.display_name) == (CELL, "train", "train:backdoored")
    assert set(run.tags) == {"dataset:fashion_mnist", "arch:small_cnn", "attack:badnets"}  # defense None: no tag
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["dataset"] == "fashion_mnist" and config["attack"] == "badnets" and config["seed"] == 0
    assert config["stage"] == {"lr": 0.1, "epochs": 2}

    losses = [row["train/loss"] for row in parsed(records, "history") if "train/loss" in row]
    assert len(losses) == 2 and all(isinstance(v, float) for v in losses)  # one per epoch

    summary = {}
    for update in parsed(records, "summary"):
        summary.update(update)
    assert summary["test/asr"] == 0.5
    assert summary["test/clean_acc"] == pytest.approx(0.9)
    assert summary["bec/score"] == 0.25
    assert "note" not in summary
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # finished cleanly


def test_summary_run_logs_tables_and_figures(summary_run):
    run_dir, records = summary_run
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type) == ("grid-a", "summary")
    (row,) = parsed(records, "history")
    assert row["results/_type"] == row["summary/_type"] == "table-file"
    assert row["figures/bec_vs_asr/_type"] == "image-file"
    assert not any(k.startswith("figures/csv") for k in row)  # only PNGs are figures
    assert (run_dir / "files" / row["figures/bec_vs_asr/path"]).exists()

    table = json.loads((run_dir / "files" / row["results/path"]).read_text())
    assert table["columns"] == ["dataset", "test/asr", "curve", "extra"]  # union, first-seen order
    assert table["data"] == [["fashion_mnist", 0.9, "[1, 2]", None], ["cifar10", None, None, "x"]]
    table = json.loads((run_dir / "files" / row["summary/path"]).read_text())
    assert table["data"] == [["fashion_mnist", 0.9, None]]


def test_disabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    save_dir = tmp_path / "runs"
    assert wl.wandb_mode() == "disabled"
    assert wl.stage_logger(project="p", save_dir=save_dir, cell=CELL, kind="train", label="x",
                           run_config=CONFIG) is None
    wl.finish_stage(None, {"test/asr": 0.5})
    assert wl.log_summary(project="p", save_dir=save_dir, grid_name="g", rows=[], summary_rows=[], figures={}) is None
    assert not save_dir.exists()


def test_mode_is_offline_unless_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert wl.wandb_mode() == "offline"
    netrc = tmp_path / "home" / ".netrc"
    netrc.parent.mkdir(parents=True, exist_ok=True)
    netrc.write_text("machine example.org login user password secret\n")
    assert wl.wandb_mode() == "offline"  # a key for another host is not W&B
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wl.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wl.wandb_mode() == "offline"  # an explicit choice beats a configured key
    netrc.unlink()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wl.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wl.wandb_mode() == "disabled"


def test_sync_command_targets_the_offline_runs(tmp_path):
    cmd = wl.sync_command(tmp_path)
    assert cmd[1:4] == ["-m", "wandb", "sync"] and cmd[-1] == str(tmp_path / "wandb")
    assert "--no-include-online" in cmd
    (tmp_path / "score" / "mine" / "wandb").mkdir(parents=True)  # a `bdbench score` beside the grid
    assert wl.sync_command(tmp_path)[-2:] == [str(tmp_path / "wandb"), str(tmp_path / "score" / "mine" / "wandb")]
