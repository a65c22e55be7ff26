import pytest
import torch

from benchmark.errors import ConfigError, UnknownNameError
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS, build_trigger


def test_badnets_patch_default_bottom_right_white():
    trig = build_trigger("badnets", (3, 8, 8))
    x = torch.full((2, 3, 8, 8), 0.25)
    out = trig(x)
    assert torch.all(out[:, :, 5:, 5:] == 1.0)
    untouched = torch.ones(8, 8, dtype=torch.bool)
    untouched[5:, 5:] = False
    assert torch.all(out[:, :, untouched] == 0.25)


def test_badnets_position_and_size():
    out = build_trigger("badnets", (1, 10, 10), size=2, position="top_left", value=0.5)(torch.zeros(1, 1, 10, 10))
    assert out.sum().item() == pytest.approx(4 * 0.5)
    assert torch.all(out[0, 0, :2, :2] == 0.5)


def test_blended_formula_and_seeded_pattern():
    a = build_trigger("blended", (1, 6, 6), alpha=0.2, pattern_seed=3)
    b = build_trigger("blended", (1, 6, 6), alpha=0.2, pattern_seed=3)
    x = torch.rand(4, 1, 6, 6)
    assert torch.allclose(a(x), 0.8 * x + 0.2 * a.pattern)
    assert torch.equal(a.pattern, b.pattern)
    assert not torch.equal(a.pattern, build_trigger("blended", (1, 6, 6), pattern_seed=4).pattern)


def test_blended_from_image_file(tmp_path):
    from PIL import Image
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "p.png")
    trig = build_trigger("blended", (3, 8, 8), pattern_path=str(tmp_path / "p.png"))
    assert torch.allclose(trig.pattern[0], torch.ones(8, 8)) and torch.allclose(trig.pattern[1:], torch.zeros(2, 8, 8))


@pytest.mark.parametrize("name,params,match", [
    ("badnets", {"size": 0}, "size"),
    ("badnets", {"size": 9}, "size"),
    ("badnets", {"position": "middle"}, "position"),
    ("blended", {"alpha": 0.0}, "alpha"),
    ("blended", {"alpha": 1.5}, "alpha"),
])
def test_bad_trigger_parameters(name, params, match):
    # Values are checked against the trigger's typed signature, then the
    # trigger checks what depends on the image (the patch must fit).
    with pytest.raises(ConfigError, match=match):
        build_trigger(name, (1, 8, 8), **validate_params(f"trigger {name!r}", TRIGGERS.get(name), params))


def test_unknown_trigger_lists_choices():
    with pytest.raises(UnknownNameError, match="badnets, blended"):
        build_trigger("rainbow", (1, 8, 8))
