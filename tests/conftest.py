import os

import pytest
import torch

from benchmark.cell import Cell, CellSpec
from benchmark.storage.store import ArtifactStore

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
    "bti-dbf": {"preround": 1, "mround": 1, "uround": 1, "nround": 2, "ul_round": 1, "unet_width": 4,
                "unet_depth": 2},
    "pam": {"preround": 1, "mround": 1, "uround": 1, "nround": 2, "ul_round": 1, "unet_width": 4,
            "unet_depth": 2},
}
FAST_REACTIVATION = {"wba": {"epochs": 2, "num_samples": 32, "batch_size": 16}}
# Every registered attack needs an entry here: trigger parameters that make
# its preparation stage (if any) take seconds on the synthetic data.
FAST_TRIGGER_PARAMS = {
    "badnets": {"size": 4}, "blended": {}, "wanet": {}, "sig": {},
    "ssba": {"max_steps": 20, "width": 8}, "lf": {"max_passes": 1, "num_images": 8, "deepfool_iterations": 20},
    "trojannn": {"iterations": 20}, "input_aware": {"max_mask_steps": 4, "mask_epochs": 1},
    "lc": {"robust_epochs": 1, "max_robust_steps": 4, "steps": 5},
}


def fast_spec(**overrides) -> CellSpec:
    base = dict(dataset="synthetic", arch="small_cnn", attack="badnets", defenses=("ft", "nad"), seed=0,
                epochs=3, batch_size=64, lr=0.05, bec_samples=64, defense_params=FAST_DEFENSE_PARAMS,
                reactivation_params=FAST_REACTIVATION, trigger_params={"size": 4})
    base.update(overrides)
    if "defense_params" not in overrides:  # only the defenses the cell runs (each name must exist)
        base["defense_params"] = {k: v for k, v in FAST_DEFENSE_PARAMS.items() if k in base["defenses"]}
    return CellSpec(**base)


@pytest.fixture(scope="module")
def all_cores():
    """Science tests run alone (CI, `make test-slow`): every core for torch,
    not the one thread the fast suite uses."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_cell(tmp_path):
    def make(store=None, **overrides):
        return Cell(fast_spec(**overrides), ArtifactStore(store or tmp_path / "store"), data_dir=tmp_path / "data",
                    accelerator="cpu", progress=False)
    return make


@pytest.fixture(scope="session")
def science_store(tmp_path_factory):
    """One store for every science test of a run, so models they share (the
    Fashion-MNIST clean model f_C, f_A of BadNets and Blended) train once.
    SCIENCE_STORE=store reuses `make demo`'s models."""
    return ArtifactStore(os.environ.get("SCIENCE_STORE") or tmp_path_factory.mktemp("science-store"))
