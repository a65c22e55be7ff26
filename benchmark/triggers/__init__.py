"""Triggers: batched tensor ops on [0, 1] images of shape (B, C, H, W)."""
from benchmark.registry import Registry
from benchmark.triggers.base import Trigger

TRIGGERS: Registry[type[Trigger]] = Registry("trigger")

from benchmark.triggers import badnets, blended  # noqa: E402,F401  (registers)


def build_trigger(name: str, image_shape: tuple[int, int, int], **params) -> Trigger:
    cls = TRIGGERS.get(name)
    try:
        return cls(image_shape, **params)
    except TypeError as exc:
        from benchmark.errors import ConfigError

        raise ConfigError(f"bad parameter for trigger {name!r}: {exc}") from None


__all__ = ["Trigger", "TRIGGERS", "build_trigger"]
