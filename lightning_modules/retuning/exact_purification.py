"""EP, exact purification: the weight-space control of Min et al. (NeurIPS
2024): f_A fine-tuned on the poisoned training samples *with their true
labels*, beside the defender's clean subset. The defender who knows every
poisoned sample; the one model in the suite allowed to see the poisoned
indices. Retuning it (RA) should leave the ASR low, as on the clean model;
a defense whose P-ASR lies far above EP's only put the backdoor to sleep.

No public reference implements EP (the paper describes it in one sentence:
fine-tuning with the real poisoned samples relabelled correctly), so it is
FT with that oracle data: BackdoorBench's `config/defense/ft` defaults (SGD
lr 0.01, momentum 0.9, cosine schedule, batch 256, weight decay 5e-4, 100
epochs), the defender's augmentation. Not registered as a defense: it
breaks the defense contract on purpose."""
from __future__ import annotations

from lightning_modules.defenses.ft import FineTuning

#: its name as a row and in `retuning_params` (not BackdoorBench's unrelated
#: `ep` defense, which prunes on pre-activation distributions)
NAME = "exact-purification"


class ExactPurification(FineTuning):
    pass
