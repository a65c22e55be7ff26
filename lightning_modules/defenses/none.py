"""No defense: the backdoored model as it is (the reference row of a grid)."""
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule


@DEFENSES.register("none")
class NoDefense(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None, epochs: int = 0):
        if epochs != 0:
            raise ValueError("the 'none' defense does not train (epochs must be 0)")
        super().__init__(model, num_classes, target_label, augment, epochs=0)
