import copy

import pytest
import torch
from torch import nn

from benchmark.measures.bec import (backdoor_existence_coefficient, backdoor_similarity, min_max_bec,
                           rank_backdoor_channels, selected_features)
from benchmark.errors import ConfigError


class TwoLayer(nn.Module):
    """conv -> relu -> conv, both layers tracked."""

    def __init__(self, channels=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(1, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _images(n=32, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_ranking_finds_the_channel_that_reacts_to_the_trigger():
    model = TwoLayer()
    with torch.no_grad():
        # channel 7 of layer a sees only the bottom-right pixel (the "trigger")
        model.a.weight[7].zero_()
        model.a.weight[7, 0, 1, 1] = 50.0
        model.a.bias[7] = 0
    clean = _images() * 0.1
    clean[:, :, -1, -1] = 0
    poisoned = clean.clone()
    poisoned[:, :, -1, -1] = 1.0
    chosen = rank_backdoor_channels(model, ["a", "b"], clean, poisoned, ratio=0.1)
    assert chosen["a"].tolist() == [7]
    assert len(chosen["b"]) == 1


def test_similarity_is_one_for_the_same_model_and_lower_for_another():
    model = TwoLayer()
    x = _images()
    channels = rank_backdoor_channels(model, ["a", "b"], x, x.flip(-1), ratio=0.3)
    ref = selected_features(model, channels, x)
    s_same, per_layer = backdoor_similarity(ref, selected_features(copy.deepcopy(model), channels, x))
    assert s_same == pytest.approx(1.0) and len(per_layer) == 2
    s_other, _ = backdoor_similarity(ref, selected_features(TwoLayer(seed=5), channels, x))
    assert s_other < 0.99
    assert ref["a"].shape == (32, 3 * 8 * 8)


def test_bec_normalisation():
    assert backdoor_existence_coefficient(0.4, 0.4) == pytest.approx(0.0)
    assert backdoor_existence_coefficient(1.0, 0.4) == pytest.approx(1.0)
    assert backdoor_existence_coefficient(0.7, 0.4) == pytest.approx(0.5)
    assert backdoor_existence_coefficient(0.2, 0.4) == pytest.approx(-1 / 3)  # unclipped


@pytest.mark.parametrize("s_clean", [1.0, 0.99, 0.951])
def test_bec_undefined_when_clean_model_is_as_similar_as_the_backdoored(s_clean):
    # reported as undefined, never as a huge number from a tiny denominator
    assert backdoor_existence_coefficient(0.9, s_clean) is None
    assert backdoor_existence_coefficient(0.9, 0.949) is not None


def test_min_max_variant_is_the_authors_plotting_normalisation():
    # JulieCarlon/Backdoor-Reactivation-Attack BEC/analy_backdoor_plot.py: the
    # range is the clean model and the defenses; f_A is left out and plotted at 1.
    sims = {"clean": 0.3, "backdoored": 1.0, "none": 1.0, "ft": 0.65, "nad": 0.5}
    out = min_max_bec(sims, "clean", "backdoored", aliases_of_backdoored=("none",))
    assert out == pytest.approx({"clean": 0.0, "backdoored": 1.0, "none": 1.0, "ft": 1.0, "nad": 0.2 / 0.35})
    # the most similar defense reads exactly 1 even far below f_A's similarity
    assert min_max_bec({"clean": 0.3, "backdoored": 1.0, "ft": 0.4}, "clean", "backdoored")["ft"] == 1.0


def test_bad_ratio_rejected():
    with pytest.raises(ConfigError, match="ratio"):
        rank_backdoor_channels(TwoLayer(), ["a"], _images(), _images(), ratio=0.0)
