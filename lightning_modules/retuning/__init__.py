"""Weight-space re-activation (Min et al., NeurIPS 2024, "Uncovering,
Explaining, and Mitigating the Superficial Safety of Backdoor Defense"):
methods that may fine-tune the weights of a *copy* of the defended model on
a small attacker-held set, to see whether the backdoor comes back.

The access level is `RETUNE` (base.py): a method gets a freshly loaded copy
of the victim and the attacker's retuning set (a small split of clean
training images with a few poisoned ones); the victim's stored weights are
never written. Add one by subclassing `RetuningModule` in a new file of this
package decorated with ``@RETUNINGS.register("<name>")``.

`exact_purification.py` is the weight-space control (EP: the defender who
knows every poisoned sample), not a method of this registry."""
from benchmark.extension.registry import Registry, import_methods
from lightning_modules.retuning.base import RETUNE, RetuningModule

RETUNINGS: Registry[type[RetuningModule]] = Registry(
    "weight-space re-activation", group="bdbench.retunings",
    expects=("a RetuningModule subclass", lambda obj: isinstance(obj, type) and issubclass(obj, RetuningModule)))

import_methods(__name__, __path__, ("base", "exact_purification"))

__all__ = ["RETUNE", "RETUNINGS", "RetuningModule"]
