"""Resumable training stages: a stage's fits write a checkpoint every few
epochs into the store's temporary area, and a stage started again (after a
kill, a preemption, a SLURM time limit) continues from the last one instead
of from epoch 0. The stage's result is the same as without the interruption:
the checkpoint holds the weights, the optimiser and scheduler states, the
training loop's position, and the random state (torch's global generator and
the loader's shuffling generator) at the end of the saved epoch.

Checkpoints are safetensors files: the tensors, plus the structure around
them (dicts, lists, numbers, strings) as JSON in the file's metadata. Loading
one reads tensors and JSON and never unpickles, so a checkpoint left in a
shared store cannot run code. Lightning's `hyper_parameters` entry (arbitrary
objects) is not written: a resumed stage builds its module from its config.

Layout: ``<store>/.tmp/checkpoints/<kind>-<key>/fit-<n>.safetensors``, one
file per fit of the job (a defense that fine-tunes a teacher and then trains
has two); the directory goes when the job's artifact is published.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import save_file

# Lightning checkpoint entries that hold arbitrary Python objects and that a
# resumed stage does not need (it rebuilds its module from the job config).
NOT_SAVED = ("hyper_parameters", "datamodule_hyper_parameters", "hparams_name", "hparams_type")
SKELETON = "skeleton"


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str, names: dict[int, str]):
    """JSON-able description of `value`; tensors go to `tensors` by name.
    The same tensor reached twice (a module registered under two names) is
    stored once and comes back as one tensor."""
    if isinstance(value, torch.Tensor):
        if id(value) not in names:
            names[id(value)] = f"t{len(tensors)}"
            # a copy: safetensors refuses tensors that share memory (views)
            tensors[names[id(value)]] = value.detach().to("cpu", copy=True).contiguous()
        return {"tensor": names[id(value)]}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # keeps nan/inf and every bit of the value
    if isinstance(value, dict):
        return {"dict": [[_encode(k, tensors, where, names), _encode(v, tensors, f"{where}.{k}", names)]
                         for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple":
                [_encode(v, tensors, f"{where}[{i}]", names) for i, v in enumerate(value)]}
    raise TypeError(f"checkpoint entry {where} is a {type(value).__name__}; only tensors, numbers, strings, "
                    f"None and dicts/lists/tuples of them can be checkpointed without pickling")


def _decode(node, tensors: dict[str, torch.Tensor]):
    """The inverse of `_encode`."""
    if not isinstance(node, dict):
        return node
    (kind, body), = node.items()
    if kind == "tensor":
        return tensors[body]
    if kind == "float":
        return float(body)
    if kind == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in body}
    items = [_decode(v, tensors) for v in body]
    return items if kind == "list" else tuple(items)


def save_checkpoint_file(checkpoint: dict, path: str | Path) -> None:
    """Write atomically (a half-written file is never seen under `path`)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode({k: v for k, v in checkpoint.items() if k not in NOT_SAVED}, tensors, "checkpoint", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file(tensors, str(partial), metadata={SKELETON: json.dumps(skeleton)})
    os.replace(partial, path)


def load_checkpoint_file(path: str | Path, map_location=None) -> dict:
    device = "cpu" if map_location is None or callable(map_location) or isinstance(map_location, dict) \
        else str(map_location)
    with safe_open(str(path), framework="pt", device=device) as f:
        metadata = f.metadata() or {}
        if SKELETON not in metadata:
            raise ValueError(f"{path} is not a checkpoint written by this suite (no {SKELETON!r} metadata)")
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return _decode(json.loads(metadata[SKELETON]), tensors)


class SafeCheckpointIO(CheckpointIO):
    """Lightning's checkpoint reader/writer, through safetensors + JSON."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


class EpochCheckpoint(L.Callback):
    """Saves the fit every `every` epochs and at its last epoch, with the
    random state that the next epoch will draw from."""

    def __init__(self, path: Path, every: int, generator: torch.Generator | None):
        self.path, self.every, self.generator = Path(path), every, generator

    @property
    def state_key(self) -> str:
        return "EpochCheckpoint"  # independent of the path: a moved store still resumes

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if done % self.every == 0 or done >= trainer.max_epochs:
            # the full state (optimiser, loops, this callback's random state):
            # "weights only" here would be Lightning's notion, not a safety one
            trainer.save_checkpoint(self.path, weights_only=False)

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self.generator is not None:
            state["loader"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if self.generator is not None and "loader" in state:
            self.generator.set_state(state["loader"])


class JobCheckpoints:
    """The checkpoint files of one job: one per fit, in call order."""

    def __init__(self, directory: Path, every: int = 1):
        if every < 1:
            raise ValueError(f"checkpoint interval must be a positive number of epochs, got {every}")
        self.directory, self.every = Path(directory), every
        self.fits = 0

    def next_fit(self) -> Path:
        self.fits += 1
        return self.directory / f"fit-{self.fits}.safetensors"

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            self.directory.parent.rmdir()  # the last job's leaves no empty area behind
        except OSError:
            pass  # other jobs' checkpoints are still there
