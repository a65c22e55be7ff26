"""Triggers: batched tensor ops on [0, 1] images of shape (B, C, H, W)."""
import inspect

from benchmark.extension.registry import Registry, import_methods
from benchmark.triggers.base import AdditiveTrigger, PatternTrigger, Trigger

TRIGGERS: Registry[type[Trigger]] = Registry("trigger")

#: __init__ arguments the cell supplies (the image shape of the data, the
#: cell's seed for triggers drawn from it); the rest are trigger parameters
TRIGGER_RUNNER_ARGS = ("image_shape", "seed")

# Every trigger file of this package registers itself on import. Imported by
# discovery, not by name, so that a trigger's code fingerprint (its file and
# what it imports) does not cover every other trigger.
import_methods(__name__, __path__, ("base", "preparation"))


def build_trigger(name: str, image_shape: tuple[int, int, int], seed: int = 0, **params) -> Trigger:
    """Trigger `name` for images of `image_shape`; a trigger whose __init__
    takes `seed` gets the cell's seed (its pattern is drawn from it)."""
    cls = TRIGGERS.get(name)
    if "seed" in inspect.signature(cls).parameters:
        params = {**params, "seed": seed}
    try:
        return cls(image_shape, **params)
    except TypeError as exc:
        from benchmark.errors import ConfigError

        raise ConfigError(f"bad parameter for trigger {name!r}: {exc}") from None


def takes_seed(name: str) -> bool:
    return "seed" in inspect.signature(TRIGGERS.get(name)).parameters


__all__ = ["AdditiveTrigger", "PatternTrigger", "Trigger", "TRIGGERS", "TRIGGER_RUNNER_ARGS", "build_trigger",
           "takes_seed"]
