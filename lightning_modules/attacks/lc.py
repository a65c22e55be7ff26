"""Label-Consistent (LC; Turner, Tsipras & Madry 2019): clean-label. The
poisoned samples are drawn from the target class and keep their label; each
is replaced by a PGD adversarial example of a robust model and stamped with
the all-corners trigger at amplitude 1 (BackdoorBench
config/attack/lc/default.yaml: reduced_amplitude 1, pratio 0.1, target 0;
attack/lc.py). The trigger's preparation stage trains the robust model and
crafts the images (benchmark/triggers/label_consistent.py); training itself
is the plain `AttackModule`, whose relabelling to the target changes nothing
here."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("lc")(AttackPreset(name="lc", trigger="lc", trigger_params={"amplitude": 1.0},
                                    clean_label=True))
