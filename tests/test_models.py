import pytest
import torch

from benchmark.errors import UnknownNameError
from benchmark.measures.features import capture
from benchmark.models import ARCHITECTURES, build_model

CASES = [(name, 3, 32) for name in ARCHITECTURES] + [("timm:resnet10t", 3, 32)]


@pytest.mark.parametrize("arch,channels,size", CASES)
def test_forward_and_layer_lists_resolve(arch, channels, size):
    model = build_model(arch, 7, channels, size, (0.5,) * channels, (0.25,) * channels).eval()
    x = torch.rand(2, channels, size, size)
    with capture(model, model.bec_layers + model.attention_layers + [model.head_layer]) as feats:
        out = model(x)
    assert out.shape == (2, 7)
    assert len(model.bec_layers) >= 2 and len(model.attention_layers) == 2
    for name in model.bec_layers:
        assert feats[name].dim() == 4
    assert isinstance(model.get_submodule(model.head_layer), torch.nn.Linear)
    for conv, bn in model.conv_bn_pairs:  # each BatchNorm normalises its convolution's channels
        c, b = model.get_submodule(conv), model.get_submodule(bn)
        assert isinstance(c, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
        assert c.out_channels == b.num_features
    assert model.conv_bn_pairs


def test_preact_resnet18_bec_layers_are_the_16_block_convs():
    model = build_model("preact_resnet18", 10, 3, 32, (0.5,) * 3, (0.5,) * 3)
    assert len(model.bec_layers) == 16
    assert all(".conv1" in n or ".conv2" in n for n in model.bec_layers)
    assert not any("shortcut" in n for n in model.bec_layers)


def test_model_holds_its_normalisation():
    model = build_model("small_cnn", 10, 1, 28, (0.3,), (0.2,))
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.3]))
    assert "mean" in model.state_dict() and "std" in model.state_dict()


def test_unknown_architecture_lists_choices():
    with pytest.raises(UnknownNameError, match="preact_resnet18.*small_cnn"):
        build_model("resnet1000", 10, 3, 32, (0.5,), (0.5,))


@pytest.mark.parametrize("arch,first,last", [("small_cnn-w8", 8, 32), ("preact_resnet18-w4", 4, 32),
                                             ("preact_resnet18", 64, 512), ("small_cnn", 16, 64)])
def test_width_in_the_architecture_name(arch, first, last):
    """`<name>-w<width>` sets the first stage's channels; the later stages keep
    their ratios (small CNN 1:2:4, PreAct-ResNet18 1:2:4:8) and every layer
    BEC, NAD, FP and CLP use is still there."""
    model = build_model(arch, 10, 1, 28, (0.5,), (0.5,))
    backbone = model.backbone if hasattr(model, "backbone") else model
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == first
    assert model.get_submodule(model.head_layer).in_features == last
    base = build_model(arch.split("-w")[0], 10, 1, 28, (0.5,), (0.5,))
    assert model.bec_layers == base.bec_layers and model.attention_layers == base.attention_layers
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["small_cnn-w0", "small_cnn-8", "resnet-w8", "small_cnn-wide"])
def test_bad_width_names_are_refused(arch):
    with pytest.raises(UnknownNameError, match="architecture"):
        build_model(arch, 10, 1, 28, (0.5,), (0.5,))
