"""CLP: the UCLC formula, the mean + u * std rule, the model's conv -> BN
pairing (PreAct-ResNet18 included), and that no data is ever read."""
import inspect

import pytest
import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.defenses.clp import ChannelLipschitzPruning, channel_lipschitz_bounds


class ConvBN(nn.Module):
    conv_bn_pairs = [("conv", "bn")]

    def __init__(self, in_channels: int = 2, channels: int = 16, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(self.conv(x))


def uniform_pair(channels: int = 16) -> ConvBN:
    """Every channel with the same kernel; BN scales 1 % apart: bounds within
    a few percent of each other, no outlier."""
    m = ConvBN(channels=channels)
    with torch.no_grad():
        kernel = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
        m.conv.weight.copy_(kernel.expand_as(m.conv.weight))
        m.bn.weight.copy_(0.5 * (1 + 0.01 * torch.arange(channels)))
        m.bn.bias.fill_(0.1)
        m.bn.running_var.fill_(4.0)
    return m


def test_uclc_is_largest_singular_value_times_gamma_over_std():
    m = ConvBN(in_channels=2, channels=2, kernel=2)
    with torch.no_grad():
        # channel 0: kernel rows (per input channel) [3, 0, 0, 0] and [0, 4, 0, 0]: singular values 4 and 3
        m.conv.weight.zero_()
        m.conv.weight[0, 0, 0, 0] = 3.0
        m.conv.weight[0, 1, 0, 1] = 4.0
        # channel 1: a rank-one kernel [1, 2, 2, 0] in both input channels: sigma = sqrt(2) * 3
        m.conv.weight[1] = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
        m.bn.weight.copy_(torch.tensor([-2.0, 0.5]))
        m.bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    bounds = channel_lipschitz_bounds(m.conv, m.bn)
    # |gamma / sqrt(var)|: |-2 / 2| = 1 and |0.5 / 0.5| = 1
    assert bounds.tolist() == pytest.approx([4.0, 3.0 * 2 ** 0.5])
    w = m.conv.weight.detach()
    by_svd = [torch.linalg.svdvals(w[k].reshape(2, -1)).max() * abs(m.bn.weight[k] / m.bn.running_var[k].sqrt())
              for k in range(2)]
    assert bounds.tolist() == pytest.approx([float(v) for v in by_svd])


@pytest.mark.parametrize("outlier", ["kernel", "bn_scale"])
def test_only_the_outlying_channel_is_pruned(outlier):
    # 16 channels, one outlier: its z-score with the unbiased std is at most
    # 15 / sqrt(16) = 3.75 > u = 3, so exactly that channel can be caught.
    m = uniform_pair()
    with torch.no_grad():
        if outlier == "kernel":
            m.conv.weight[11] *= 10
        else:  # same kernel, larger |gamma| / std: the BN factor is part of the bound
            m.bn.weight[11] = -5.0
    before = {k: v.clone() for k, v in m.state_dict().items()}
    clp = ChannelLipschitzPruning(m, 2)
    clp.prepare(None, None)
    assert clp.report["pruned_channels"] == {"bn": [11]} and clp.report["pruned_total"] == 1
    after = m.state_dict()
    assert after["bn.weight"][11] == 0 and after["bn.bias"][11] == 0
    others = [c for c in range(16) if c != 11]
    assert torch.equal(after["bn.weight"][others], before["bn.weight"][others])
    assert torch.equal(after["bn.bias"][others], before["bn.bias"][others])
    for key in ("conv.weight", "bn.running_mean", "bn.running_var"):
        assert torch.equal(after[key], before[key])


def test_no_outlier_prunes_nothing_and_u_sets_the_threshold():
    m = uniform_pair()
    clp = ChannelLipschitzPruning(m, 2)
    clp.prepare(None, None)
    assert clp.report["pruned_channels"] == {"bn": []}
    m = uniform_pair()
    with torch.no_grad():
        m.conv.weight[3] *= 2
    # One outlier among 16 (near-)equal values has z close to its maximum,
    # 15 / sqrt(16) = 3.75 with the unbiased std.
    bounds = channel_lipschitz_bounds(m.conv, m.bn)
    z = (bounds[3] - bounds.mean()) / bounds.std()
    assert 3.5 < float(z) < 3.75
    clp = ChannelLipschitzPruning(m, 2, u=float(z) + 0.01)
    clp.prepare(None, None)
    assert clp.report["pruned_total"] == 0  # strict ">": just above the z-score keeps it
    clp = ChannelLipschitzPruning(m, 2, u=float(z) - 0.01)
    clp.prepare(None, None)
    assert clp.report["pruned_channels"] == {"bn": [3]}


def test_preact_pairs_conv1_with_bn2_that_normalises_exactly_its_output():
    model = build_model("preact_resnet18", 10, 3, 32, (0.5,) * 3, (0.25,) * 3)
    clp = ChannelLipschitzPruning(model, 10)
    pairs = [(c, b) for c, _, b, _ in clp.pairs]
    assert pairs == [(f"backbone.layer{s}.{b}.conv1", f"backbone.layer{s}.{b}.bn2")
                     for s in range(1, 5) for b in range(2)]
    assert not any(b.endswith("bn1") for _, b in pairs)
    # Registration order would have paired e.g. layer2.1.bn1 with layer2.0's 1x1 shortcut.
    modules = dict(model.named_modules())
    ordered = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert ordered[ordered.index("backbone.layer2.1.bn1") - 1] == "backbone.layer2.0.shortcut"
    # Each paired BatchNorm receives exactly its convolution's output.
    seen = {}
    hooks = [modules[c].register_forward_hook(lambda _m, _i, out, c=c: seen.__setitem__(c, out)) for c, _ in pairs]
    hooks += [modules[b].register_forward_pre_hook(lambda _m, inp, b=b: seen.__setitem__(b, inp[0])) for _, b in pairs]
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    for c, b in pairs:
        assert seen[c] is seen[b] and modules[c].out_channels == modules[b].num_features
    clp.prepare(None, None)
    assert set(clp.report["pruned_channels"]) == {b for _, b in pairs}


def test_clp_in_a_cell_reads_no_data(make_cell, monkeypatch):
    cell = make_cell(defenses=("clp",))
    attack = cell.execute(cell.job("attack", "badnets"))

    def no_data(self, positions):
        raise AssertionError("CLP read the clean subset")

    monkeypatch.setattr(IndexedImages, "__getitems__", no_data)
    module = cell.train_defense("clp", attack)
    monkeypatch.undo()
    r = module.report
    assert set(r["pruned_channels"]) == {"backbone.block1.0", "backbone.block2.0", "backbone.block3.0"}
    weights = module.export_weights()
    for bn, channels in r["pruned_channels"].items():
        assert torch.all(weights[f"{bn}.weight"][channels] == 0)
        assert torch.all(weights[f"{bn}.bias"][channels] == 0)


def test_defaults_and_bad_values():
    defaults = {k: p.default for k, p in inspect.signature(ChannelLipschitzPruning).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults["u"] == 3.0 and defaults["epochs"] == 0
    # Range rules live in the typed signature, which the runner checks before building.
    with pytest.raises(ConfigError, match="clp: epochs=5 is not allowed; must be an int == 0"):
        validate_params("clp", ChannelLipschitzPruning, {"epochs": 5})
    with pytest.raises(ConfigError, match="clp: u=-1"):
        validate_params("clp", ChannelLipschitzPruning, {"u": -1.0})
    bad = uniform_pair()
    bad.conv_bn_pairs = [("bn", "conv")]
    with pytest.raises(ConfigError, match="must name a Conv2d and a BatchNorm2d"):
        ChannelLipschitzPruning(bad, 2)
    bad.conv_bn_pairs = []
    with pytest.raises(ConfigError, match="names no"):
        ChannelLipschitzPruning(bad, 2)
