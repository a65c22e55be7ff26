"""TrojanNN (BackdoorBench's data-poisoning variant): a masked patch optimised
on the clean model f_C to excite the two most connected head inputs, added to
10 % random training images relabelled to the target (dirty label). Defaults
from BackdoorBench config/attack/trojannn/preactresnet18.yaml and
attack/trojannn.py; see benchmark/triggers/trojannn.py."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("trojannn")(AttackPreset(name="trojannn", trigger="trojannn",
                                          trigger_params={"num_neurons": 2, "target_value": 100.0,
                                                          "iterations": 1000, "mask_shape": "apple"}))
