"""Content-addressed artifact store.

An artifact is a directory ``<root>/<kind>/<key>/`` holding ``meta.json``
(stage kind, resolved config, input keys, metrics) and, for stages that
produce tensors, ``tensors.safetensors``. The key is a hash of (kind, config,
input keys, code-version salt), so the same work is never done twice and one
attack model serves every defense of its cell.

Writes are atomic: the directory is built under ``<root>/.tmp/`` and renamed
into place, so a killed run never leaves a half artifact. Reads never unpickle:
JSON and safetensors only.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from benchmark import __version__
from benchmark.errors import StoreError

# Bump when a change makes earlier artifacts wrong (training, metrics, data rules).
CODE_SALT = f"{__version__}-1"
META = "meta.json"
TENSORS = "tensors.safetensors"
_META_FIELDS = {"kind", "key", "config", "inputs", "metrics"}


def stage_key(kind: str, config: dict, inputs: dict[str, str]) -> str:
    payload = json.dumps({"kind": kind, "config": config, "inputs": inputs, "salt": CODE_SALT},
                         sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class Artifact:
    path: Path
    meta: dict
    _tensors: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def metrics(self) -> dict:
        return self.meta["metrics"]

    @property
    def config(self) -> dict:
        return self.meta["config"]

    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            file = self.path / TENSORS
            try:
                self._tensors = load_file(str(file))
            except (SafetensorError, OSError, ValueError) as exc:
                raise StoreError(f"artifact {self.path} has an unreadable {TENSORS} ({exc}); "
                                 f"delete that directory to recompute it") from None
        return self._tensors


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / META).is_file()

    def load(self, kind: str, key: str) -> Artifact:
        path = self.path(kind, key)
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            raise StoreError(f"no artifact {kind}/{key} in {self.root}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"artifact {path} has a corrupted {META} ({exc}); "
                             f"delete that directory to recompute it") from None
        if not isinstance(meta, dict) or not _META_FIELDS <= meta.keys() or meta["key"] != key or meta["kind"] != kind:
            raise StoreError(f"{path / META} was not written by this suite for {kind}/{key}; "
                             f"delete that directory to recompute it")
        return Artifact(path, meta)

    def save(self, kind: str, key: str, config: dict, inputs: dict[str, str], metrics: dict,
             tensors: dict[str, torch.Tensor] | None = None, extra: dict | None = None) -> Artifact:
        final = self.path(kind, key)
        tmp_root = self.root / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        # The writer's pid in the name lets `remove_stale_temporaries` tell a
        # killed writer's leftovers from a live one's work in progress.
        tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-{key}-{os.getpid()}-", dir=tmp_root))
        meta = {"kind": kind, "key": key, "config": config, "inputs": inputs, "metrics": metrics,
                "code_salt": CODE_SALT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
        try:
            if tensors:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
            (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                # Someone else finished the same key first; theirs is as good.
                if not self.has(kind, key):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.load(kind, key)

    def checkpoint_dir(self, kind: str, key: str) -> Path:
        """Where a running job's fits checkpoint (benchmark/storage/checkpoints.py):
        in the temporary area, so it is never mistaken for an artifact."""
        return self.root / ".tmp" / "checkpoints" / f"{kind}-{key}"

    def remove_stale_temporaries(self) -> int:
        """Delete half-written directories left by writers that no longer run."""
        removed = 0
        for tmp in (self.root / ".tmp").glob("*-*-*-*"):
            try:
                pid = int(tmp.name.split("-")[2])
                os.kill(pid, 0)
                continue  # still writing
            except ProcessLookupError:
                pass
            except (ValueError, IndexError, PermissionError):
                continue  # not ours to judge
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        # checkpoints of jobs whose artifact got published anyway (a job killed
        # between publishing and cleaning up); the others are kept to resume from
        for ckpt in (self.root / ".tmp" / "checkpoints").glob("*-*"):
            kind, _, key = ckpt.name.partition("-")
            if self.has(kind, key):
                shutil.rmtree(ckpt, ignore_errors=True)
                removed += 1
        return removed

    def get_or_run(self, kind: str, config: dict, inputs: dict[str, str],
                   run: Callable[[], tuple[dict, dict[str, torch.Tensor] | None]]) -> tuple[Artifact, bool]:
        """Load the artifact of this (kind, config, inputs) or compute and save it.
        Returns (artifact, cached)."""
        key = stage_key(kind, config, inputs)
        if self.has(kind, key):
            return self.load(kind, key), True
        metrics, tensors = run()
        return self.save(kind, key, config, inputs, metrics, tensors), False


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
