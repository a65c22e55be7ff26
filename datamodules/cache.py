"""Decoded datasets cached as safetensors in the data directory, for
datasets stored as many small image files (GTSRB, Tiny-ImageNet): decoding
them takes minutes, loading the cache a second."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def read_cache(path: Path):
    """The four tensors of a cache file, or None when there is none."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        return tuple(tensors[key] for key in _KEYS)
    except Exception as exc:  # truncated or foreign file: decode again and overwrite it
        warnings.warn(f"ignoring unreadable dataset cache {path} ({type(exc).__name__}: {exc})")
        return None


def write_cache(path: Path, tensors) -> None:
    """Write atomically (temp name, then rename) so an interrupted run never
    leaves a truncated cache that a later run would trust."""
    from safetensors.torch import save_file

    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({key: t.contiguous() for key, t in zip(_KEYS, tensors)}, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # read-only data directory: still usable, only slower next time
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write the dataset cache {path}: {exc}")
