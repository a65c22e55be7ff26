"""The README's demo paragraph describes `sweeps/demo.yaml`: the grid file is
the one source of truth, and this test fails when the two part ways."""
import re
from pathlib import Path

import yaml

from lightning_modules.defenses import DEFENSES

ROOT = Path(__file__).resolve().parents[1]
# the reference budget the demo scales down: BackdoorBench's 100 attack epochs
REFERENCE_EPOCHS = 100


def _demo_paragraphs() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("`make demo` runs `sweeps/demo.yaml`")
    return " ".join(text[start:text.index("## One cell", start)].split())


def test_readme_demo_paragraph_matches_the_grid():
    grid = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text())
    text = _demo_paragraphs()
    epochs = grid["cell"]["epochs"]
    assert f"(small CNN, {epochs} epochs)" in text
    assert f"trains f_A {epochs} epochs instead of {REFERENCE_EPOCHS}" in text
    assert f"by the same 1/{REFERENCE_EPOCHS // epochs}" in text
    assert f"ε = {grid['cell']['epsilon']}" in text
    listed = re.search(r"the paper's defenses and CLP \(([^)]*)\)", text).group(1)
    names = {n.lower() for n in listed.split(", ")}  # "i-BAU" -> the registry's "i-bau"
    assert names == set(grid["defenses"]) and names <= set(DEFENSES.names())
    assert set(grid["attacks"]) == {"badnets", "blended"} and "BadNets- and Blended-backdoored" in text
    assert grid["cell"]["controls"] is False and "noise / CKA controls run in the full grids" in text
