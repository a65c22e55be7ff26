import pytest
import torch

from benchmark.cell import Cell, CellSpec
from benchmark.store import ArtifactStore

# One thread: the suite's tiny models gain nothing from a second, and tests may run beside other work.
torch.set_num_threads(1)

# A cell small enough for the fast suite: synthetic 16x16 data, the small CNN,
# a few epochs of everything.
# Every registered defense needs an entry here that makes it take seconds.
FAST_DEFENSE_PARAMS = {
    "ft": {"epochs": 2}, "nad": {"epochs": 2, "teacher_epochs": 1},
    "nc": {"epochs": 1, "nc_epochs": 2}, "fp": {"epochs": 1}, "clp": {},
    "i-bau": {"epochs": 1}, "sau": {"epochs": 1},
    "ft-sam": {"epochs": 1}, "fst": {"epochs": 1}, "seam": {"epochs": 1, "forget_epochs": 1},
    "anp": {"iterations": 5},
}
FAST_REACTIVATION = {"wba": {"epochs": 2, "num_samples": 32, "batch_size": 16}}


def fast_spec(**overrides) -> CellSpec:
    base = dict(dataset="synthetic", arch="small_cnn", attack="badnets", defenses=("ft", "nad"), seed=0,
                epochs=3, batch_size=64, lr=0.05, bec_samples=64, defense_params=FAST_DEFENSE_PARAMS,
                reactivation_params=FAST_REACTIVATION, trigger_params={"size": 4})
    base.update(overrides)
    if "defense_params" not in overrides:  # only the defenses the cell runs (each name must exist)
        base["defense_params"] = {k: v for k, v in FAST_DEFENSE_PARAMS.items() if k in base["defenses"]}
    return CellSpec(**base)


@pytest.fixture
def make_cell(tmp_path):
    def make(store=None, **overrides):
        return Cell(fast_spec(**overrides), ArtifactStore(store or tmp_path / "store"), data_dir=tmp_path / "data",
                    accelerator="cpu", progress=False)
    return make
