"""LF (Low Frequency attack): a smooth universal adversarial perturbation of
the clean model f_C toward the target, added to 10 % random training images
relabelled to the target (dirty label). The trigger's generator defaults are
BackdoorBench's (resource/lowFrequency/generate_pattern.py,
config/attack/lf/default.yaml); see benchmark/triggers/low_frequency.py."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("lf")(AttackPreset(name="lf", trigger="lf",
                                    trigger_params={"num_images": 100, "max_passes": 50, "delta": 0.8,
                                                    "value_range": 0.2}))
