"""SIG: a clean-label attack with a horizontal sinusoid (delta 40 on the
0-255 scale, f 6), BackdoorBench `attack/sig.py` and
`config/attack/sig/default.yaml`.

Clean label: the poisoned samples are drawn from the target class only and
keep their label; `poison_rate` stays a share of the whole training set,
capped by the class size (pratio 0.1 on CIFAR-10 = every target-class image,
as in BackdoorBench). The plain `AttackModule` trains it."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("sig")(AttackPreset(name="sig", trigger="sig", trigger_params={"delta": 40.0, "frequency": 6.0},
                                     clean_label=True))
