"""No defense: the backdoored model as it is (the reference row of a grid)."""
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule, NoTraining


@DEFENSES.register("none")
class NoDefense(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None, epochs: NoTraining = 0):
        super().__init__(model, num_classes, target_label, augment, epochs=0)
