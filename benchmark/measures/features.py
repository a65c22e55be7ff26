"""Capture intermediate outputs of named submodules with forward hooks."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from benchmark.errors import ConfigError


def resolve(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"{type(model).__name__} has no layer(s) {missing}")
    return [modules[n] for n in names]


@contextmanager
def capture(model: nn.Module, names: list[str],
            transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of `model` stores the output of each
    named layer (optionally passed through `transform(name, output)`) in the
    yielded dict, replacing the previous batch's."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in zip(names, resolve(model, names)):
        def hook(_m, _inp, out, name=name):
            store[name] = transform(name, out) if transform else out
        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
