"""CLIP stages: poisoning (`poisoning.py`), the attacks' triggers
(`attacks.py`) and the multimodal defenses (`defenses/`)."""
