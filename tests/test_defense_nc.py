"""NC: trigger search, MAD outlier test, cost schedule, stamping and the
unchanged-model path, on hand-built models whose answer is known."""
import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.training import TrainerFactory
from datamodules.tensor_dataset import IndexedImages, keep_batch
from lightning_modules.defenses.nc import (CostSchedule, NeuralCleanse, mad_outliers, stamp,
                                           stamp_stretched)

S = slice
SIZE = 10
# Four 4x4 corner blocks of a 10x10 image, and a 2-pixel patch in the middle
# that touches none of them.
CORNERS = [(S(0, 4), S(0, 4)), (S(0, 4), S(6, 10)), (S(6, 10), S(0, 4)), (S(6, 10), S(6, 10))]
PATCH = (S(4, 6), S(4, 5))
# Regions of 4, 8, 12 and 16 pixels: evenly spread reversed-mask norms.
SPREAD = [(S(0, 1), S(0, 4)), (S(2, 4), S(0, 4)), (S(0, 3), S(6, 10)), (S(6, 10), S(6, 10))]


class RegionModel(nn.Module):
    """logit_k = gain * weight_k * (mean of region k), then a BatchNorm1d
    (identity at its initial statistics in eval mode; it would move if the
    model were ever trained)."""

    def __init__(self, regions, gain: float = 20.0):
        super().__init__()
        self.head = nn.Linear(SIZE * SIZE, len(regions), bias=False)
        self.norm = nn.BatchNorm1d(len(regions))
        w = torch.zeros(len(regions), SIZE, SIZE)
        for k, (rows, cols, weight) in enumerate(regions):
            w[k, rows, cols] = 1.0
            w[k] *= weight / w[k].sum()
        with torch.no_grad():
            self.head.weight.copy_(gain * w.flatten(1))

    def forward(self, x):
        return self.norm(self.head(x.flatten(1)))


def block_images(n: int, blocks, seed: int = 0) -> IndexedImages:
    """Dark noise with one bright block per image (block i for label i)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    labels = torch.arange(n) % len(blocks)
    for i in range(n):
        rows, cols = blocks[int(labels[i])]
        x[i, 0, rows, cols] = 0.8 + 0.2 * torch.rand(x[i, 0, rows, cols].shape, generator=g)
    # Dataset indices that are not positions, to catch position/index mix-ups.
    return IndexedImages(x.mul(255).round().to(torch.uint8), labels, torch.arange(n) * 3 + 5)



def fit(module, dataset, batch_size: int = 50):
    """The runner's fine-tuning step, on a hand-made dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=keep_batch,
                        generator=torch.Generator().manual_seed(0))
    TrainerFactory(accelerator="cpu", progress=False).fit(module, loader, module.hparams.epochs)


def run_defense(module, dataset):
    """What `Cell.train_defense` does: prepare, fine-tune if epochs > 0, finalize."""
    module.prepare(dataset, None)
    if module.hparams.epochs > 0:
        fit(module, dataset)
    module.finalize()
    return module


def test_nc_in_a_cell_reports_per_label_norms(make_cell):
    cell = make_cell(defenses=("nc",))
    attack = cell.execute(cell.job("attack", "badnets"))
    before = cell.load_model(attack).state_dict()
    module = cell.train_defense("nc", attack)
    r = module.report
    assert set(r) == {"anomaly_index", "flagged_labels", "mask_l1_norms", "search_epochs", "unchanged"}
    assert len(r["mask_l1_norms"]) == cell.dm.num_classes == len(r["search_epochs"])
    assert all(0 < e <= 2 for e in r["search_epochs"])  # nc_epochs=2 (conftest)
    assert set(r["flagged_labels"]) <= set(range(cell.dm.num_classes))
    assert r["unchanged"] == (not r["flagged_labels"])
    after = module.export_weights()
    same = all(torch.equal(before[k].cpu(), after[k]) for k in before)
    assert same == r["unchanged"]


def test_finds_the_planted_label_and_unlearns_with_its_trigger():
    # Label 0 answers a 2-pixel patch (weight 2 beats a bright 16-pixel block);
    # labels 1-4 each need a whole 4x4 block. No clean image shows the patch.
    regions = [(*PATCH, 2.0)] + [(r, c, 1.0) for r, c in CORNERS]
    data = block_images(200, CORNERS)
    nc = NeuralCleanse(RegionModel(regions), len(regions), nc_epochs=25, batch_size=50, epochs=1, lr=0.5)
    before = {k: v.clone() for k, v in nc.model.state_dict().items()}
    nc.prepare(data, None)
    r = nc.report
    norms = r["mask_l1_norms"]
    assert min(range(5), key=norms.__getitem__) == 0
    assert norms[0] < 3 and all(12 < n < 30 for n in norms[1:])
    assert r["flagged_labels"] == [0] and r["anomaly_index"] > 2 and not r["unchanged"]
    # The reversed trigger covers the patch, not the blocks.
    mask, pattern = nc.triggers[0]
    assert mask[0, PATCH[0], PATCH[1]].mean() > 0.3 and mask.sum() - mask[0, PATCH[0], PATCH[1]].sum() < 0.5
    # Unlearning set: int(200 * 0.8) = 160 samples stay clean, 40 get stamped, by dataset index.
    assert len(nc.unlearn_idx) == 40 and set(nc.unlearn_idx.tolist()) <= set(data.indices.tolist())
    fit(nc, data)
    nc.finalize()
    assert not torch.equal(before["head.weight"], nc.model.state_dict()["head.weight"])


@pytest.mark.parametrize("export", ["fine_tuned", "backdoorbench"])
def test_backdoorbench_export_saves_the_untouched_backdoored_weights(export):
    # BackdoorBench defense/nc.py fine-tunes one model object and, with a label
    # flagged, saves another built from f_A's weights (never trained).
    regions = [(*PATCH, 2.0)] + [(r, c, 1.0) for r, c in CORNERS]
    data = block_images(200, CORNERS)
    nc = NeuralCleanse(RegionModel(regions), len(regions), nc_epochs=25, batch_size=50, epochs=1, lr=0.5,
                       export=export)
    backdoored = {k: v.clone() for k, v in nc.model.state_dict().items()}
    run_defense(nc, data)
    assert nc.report["flagged_labels"] == [0]
    fine_tuned = nc.model.state_dict()
    assert not torch.equal(fine_tuned["head.weight"], backdoored["head.weight"])  # it did fine-tune
    exported = nc.export_weights()
    assert list(exported) == list(backdoored)
    if export == "backdoorbench":
        assert all(torch.equal(exported[k], backdoored[k]) for k in backdoored)
        assert nc.report["exported"] == "backdoored"
    else:
        assert all(torch.equal(exported[k], fine_tuned[k]) for k in fine_tuned)
        assert "exported" not in nc.report


def test_nothing_flagged_returns_the_model_bit_for_bit():
    # Masks of ~4, 8, 12, 16 pixels: evenly spread norms have no low outlier
    # (anomaly index 1/1.4826 = 0.674).
    model = RegionModel([(r, c, 1.0) for r, c in SPREAD])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nc = run_defense(NeuralCleanse(model, 4, nc_epochs=15, batch_size=50, epochs=2, lr=0.5),
                     block_images(200, SPREAD))
    r = nc.report
    assert r["flagged_labels"] == [] and r["unchanged"] is True
    assert r["anomaly_index"] == pytest.approx(1 / 1.4826, rel=0.2)
    assert sorted(range(4), key=r["mask_l1_norms"].__getitem__) == [0, 1, 2, 3]
    after = nc.export_weights()
    assert list(after) == list(before)
    for k in before:  # weights and BatchNorm statistics, num_batches_tracked included
        assert torch.equal(before[k], after[k]), k
    assert all(p.requires_grad for p in nc.model.parameters())


def test_mad_uses_torch_lower_median_and_flags_low_outliers_only():
    # Odd count: median 11, |dev| = [10, 1, 0, 1, 2] -> MAD = 1.4826 * 1.
    anomaly, flagged = mad_outliers(torch.tensor([1.0, 10.0, 11.0, 12.0, 13.0]))
    assert anomaly == pytest.approx(10 / 1.4826) and flagged == [0]
    # Even count: torch's median is the lower middle value (6, not 6.5), and
    # the median deviation too (1, not 3); with numpy's medians label 0 would
    # score 5.5 / 4.45 = 1.24 and not be flagged.
    anomaly, flagged = mad_outliers(torch.tensor([1.0, 6.0, 7.0, 30.0]))
    assert anomaly == pytest.approx(5 / 1.4826) and flagged == [0]
    # A high outlier is never flagged; several low ones come sorted by norm.
    assert mad_outliers(torch.tensor([10.0, 10.2, 10.5, 11.0, 40.0]))[1] == []
    _, flagged = mad_outliers(torch.tensor([3.0, 1.0, 10.0, 10.5, 11.0, 10.2]))
    assert flagged == [1, 0]
    # Evenly spread norms: index 0.674 < 2, nothing flagged.
    anomaly, flagged = mad_outliers(torch.tensor([4.0, 8.0, 12.0, 16.0]))
    assert anomaly == pytest.approx(1 / 1.4826) and flagged == []


def test_cost_schedule_follows_the_reference_bookkeeping():
    def run(accs, regs, **kw):
        s = CostSchedule(init_cost=1e-3, multiplier=2.0, threshold=98.0, patience=2, early_stop=True,
                         early_stop_threshold=0.99, early_stop_patience=3, **kw)
        costs, stops = [], []
        for e, (a, r) in enumerate(zip(accs, regs)):
            stops.append(s.end_epoch(a, r, torch.tensor([float(e)]), torch.tensor([0.0])))
            costs.append(s.cost)
            if stops[-1]:
                break
        return s, costs, stops

    # Two failures -> cost / 2**1.5; two successes -> cost * 2; the best mask is
    # the one of the successful epoch with the smallest mean reg.
    s, costs, stops = run([50, 50, 99, 99, 99], [9, 8, 7, 5, 6])
    assert costs == pytest.approx([1e-3, 1e-3 / 2 ** 1.5, 1e-3 / 2 ** 1.5, 2e-3 / 2 ** 1.5, 2e-3 / 2 ** 1.5])
    assert s.best_reg == 5 and float(s.best[0]) == 3.0 and not any(stops)
    # Never successful: the first epoch's mask is kept.
    s, _, _ = run([10, 20, 30], [3, 2, 1])
    assert float(s.best[0]) == 0.0 and s.best_reg == float("inf")
    # Early stop needs an up and a down move first, then 3 epochs in which the
    # best reg has not dropped below 0.99 x the best before: epoch 5 here
    # (counter 0 at epoch 2, then 1, 2, 3), before that epoch's cost update.
    s, costs, stops = run([50, 50, 99, 99, 99, 99, 99, 99], [9, 9, 5, 5, 4.99, 4.98, 4.97, 4.96])
    assert stops.index(True) == 5 and s.best_reg == 4.98 and costs[5] == costs[4]
    # Only raised, never lowered: no early stop however long the plateau.
    _, _, stops = run([99] * 12, [5] * 12)
    assert not any(stops)


def test_stamping_by_dataset_index_keeps_true_labels():
    nc = NeuralCleanse(RegionModel([(*PATCH, 1.0)] * 2), 2)
    mask = torch.zeros(1, 2, 2)
    mask[0, 0, 0] = 0.5
    pattern = torch.ones(1, 2, 2)
    other = (torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    x = torch.full((4, 1, 2, 2), 0.2)
    y = torch.tensor([0, 1, 1, 0])
    idx = torch.tensor([5, 8, 11, 14])
    nc.triggers, nc.unlearn_idx = [(mask, pattern)], torch.tensor([8, 14])
    out_x, out_y = nc.prepare_batch(x, y, idx)
    assert torch.equal(out_y, y)
    assert torch.equal(out_x[[0, 2]], x[[0, 2]])
    assert torch.allclose(out_x[[1, 3]], stamp(x[[1, 3]], mask, pattern))
    assert out_x[1, 0, 0, 0] == pytest.approx(0.6) and out_x[1, 0, 1, 1] == pytest.approx(0.2)
    # Two flagged labels: a second stamped copy of the unlearning samples.
    nc.triggers = [(mask, pattern), other]
    out_x, out_y = nc.prepare_batch(x, y, idx)
    assert len(out_x) == 6 and torch.equal(out_y, torch.tensor([0, 1, 1, 0, 1, 0]))
    assert torch.equal(out_x[4:], torch.zeros(2, 1, 2, 2))


def test_stretched_trigger_reproduces_the_png_round_trip():
    mask = torch.tensor([[[0.1, 0.3, 0.5]]])          # stretched: 0, 0.5, 1 -> 0, 128, 255
    pattern = torch.tensor([[[1.0, 1.0, 0.8]]])       # m * p = 0.1, 0.3, 0.4 -> 0, 170, 255
    x = torch.tensor([[[[100.0, 200.0, 50.0]]]]) / 255
    # pixel 1: floor(200 * (1 - 128/255) + 170) = floor(269.6) = 269 -> wraps to 13
    expected = torch.tensor([[[[100.0, 13.0, 255.0]]]]) / 255
    assert torch.allclose(stamp_stretched(x, mask, pattern), expected)
    # By default the trigger is stamped as found.
    assert NeuralCleanse(RegionModel([(*PATCH, 1.0)] * 2), 2).hparams.stretched_trigger is False
    assert torch.allclose(stamp(x, mask, pattern), (1 - mask) * x + mask * pattern)


def test_defaults_are_backdoorbench_cifar10():
    defaults = {k: p.default for k, p in inspect.signature(NeuralCleanse).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "batch_size": 256, "lr": 0.01,
                        "momentum": 0.9, "weight_decay": 5e-4, "nc_epochs": 80, "mask_lr": 0.1,
                        "init_cost": 1e-3, "atk_succ_threshold": 98.0, "early_stop": True,
                        "early_stop_threshold": 0.99, "early_stop_patience": 25, "patience": 5,
                        "cost_multiplier": 2.0, "epsilon": 1e-7, "unlearning_ratio": 0.2,
                        "stretched_trigger": False, "export": "fine_tuned"}


@pytest.mark.parametrize("param,value", [("nc_epochs", 0), ("mask_lr", 0.0), ("unlearning_ratio", 0.0),
                                         ("unlearning_ratio", 1.5), ("cost_multiplier", 1.0),
                                         ("atk_succ_threshold", 101.0), ("patience", 0)])
def test_bad_values_raise_config_error(param, value):
    with pytest.raises(ConfigError, match=rf"nc: {param}={value}"):
        validate_params("nc", NeuralCleanse, {param: value})
