"""Text utilities for CLIP defenses: EDA caption augmentation with synonyms
from the WordNet 3.0 database on disk (works offline)."""
