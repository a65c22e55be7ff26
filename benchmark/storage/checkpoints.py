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
has two); the directory goes when the job's artifact is published. Loops
written by hand (a trigger's preparation) checkpoint the same way through
`LoopCheckpoint`, into the job's next fit file.
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


def global_random_state() -> dict:
    """torch's global random state (CPU, and CUDA where it is in use)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
        state = global_random_state()
        if self.generator is not None:
            state["loader"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        restore_global_random_state(state)
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


# Scheduler entries that say where the schedule is; the rest (milestones,
# T_max, base rates) comes from the constructor the loop calls again, and
# MultiStepLR's milestones are a Counter that JSON would turn into a dict.
SCHEDULE_POSITION = ("last_epoch", "_step_count", "_last_lr")


class LoopCheckpoint:
    """Resumable hand-written training loops (the trigger preparations:
    Input-Aware's mask generator, SSBA's encoder, LC's robust model), saved
    at epoch ends like a Lightning fit, so a stage killed in epoch k starts
    again at the start of epoch k with the state it had then.

    `holders` are what the loop changes: modules and optimisers (state
    dicts), learning-rate schedules (their position), and torch generators
    (their state). The loop's own counters travel as `position` keyword
    arguments. torch's global random state is saved and restored too. A
    loop is resumed bit for bit when everything it draws comes from these
    holders or from an epoch-seeded order. With no path every call does
    nothing, so the same loop runs outside a job.
    """

    def __init__(self, path: Path | None, every: int = 1, **holders):
        if every < 1:
            raise ValueError(f"checkpoint interval must be a positive number of epochs, got {every}")
        self.path, self.every, self.holders = (Path(path) if path is not None else None), every, holders

    def resume(self) -> dict:
        """The saved `position` (empty when there is nothing to resume), with
        every holder restored to its saved state."""
        if self.path is None or not self.path.is_file():
            return {}
        saved = load_checkpoint_file(self.path)
        for name, holder in self.holders.items():
            state = saved["holders"][name]
            if isinstance(holder, torch.Generator):
                holder.set_state(state)
            elif isinstance(holder, torch.optim.lr_scheduler.LRScheduler):
                holder.load_state_dict({**holder.state_dict(), **state})
            else:
                holder.load_state_dict(state)
        restore_global_random_state(saved)
        print(f"resuming this loop from its checkpoint {self.path.name} at epoch {saved['position'].get('epoch')} "
              f"(a run of this job was interrupted)", flush=True)
        return saved["position"]

    def epoch_end(self, epochs_done: int, last: bool = False, **position) -> None:
        """Save after `epochs_done` epochs when it is a multiple of the
        interval or the loop's last; `position` must hold what the loop needs
        to go on (at least where it goes on: conventionally `epoch`)."""
        if self.path is None or not (last or epochs_done % self.every == 0):
            return
        holders = {}
        for name, holder in self.holders.items():
            if isinstance(holder, torch.Generator):
                holders[name] = holder.get_state()
            elif isinstance(holder, torch.optim.lr_scheduler.LRScheduler):
                schedule = holder.state_dict()
                holders[name] = {key: schedule[key] for key in SCHEDULE_POSITION}
            else:
                holders[name] = holder.state_dict()
        save_checkpoint_file({"holders": holders, "position": position, **global_random_state()}, self.path)
