"""The model families (benchmark/cell/family.py has the interface), one
module each: `classifier` (image classifiers trained from scratch, the
paper's setting) and `clip` (open_clip models poisoned by fine-tuning on
caption pairs, measured through their zero-shot classifier)."""
