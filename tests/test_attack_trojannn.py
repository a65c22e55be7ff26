"""TrojanNN: neuron selection (BackdoorBench's random head, or the clean
model's head), the masked PGD toward high neuron values, the mask, additive
poisoning in 8-bit levels (wrapping modulo 256, or clipping) and the preset."""
import inspect

import pytest
import torch

import benchmark.triggers.trojannn as tj
import lightning_modules.attacks.trojannn  # noqa: F401  (registers the preset)
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS
from benchmark.triggers.preparation import PreparationContext
from lightning_modules.attacks import ATTACKS

SIZE, CLASSES = 32, 4
SHAPE = (1, SIZE, SIZE)
FAST = {"iterations": 25}


def small_model(seed=0, channels=1, size=SIZE):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("small_cnn", CLASSES, channels, size, (0.5,) * channels, (0.25,) * channels)
    return model.eval()


def context(model, seed=0):
    images = torch.zeros(8, *SHAPE, dtype=torch.uint8)
    return PreparationContext(images=images, labels=torch.arange(8) % CLASSES, poison_indices=torch.arange(2),
                              num_classes=CLASSES, target_label=0, seed=seed, clean_model=model)


def head_inputs(model, image: torch.Tensor) -> torch.Tensor:
    captured = {}
    head = model.submodule(model.head_layer)
    handle = head.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
    with torch.no_grad():
        model(image[None])
    handle.remove()
    return captured["x"][0]


@pytest.fixture(scope="module")
def prepared():
    model = small_model()
    trigger = tj.TrojanNNTrigger(SHAPE, **FAST)
    trigger.prepare(context(model))
    return trigger, model


# ---- defaults, neurons, mask --------------------------------------------------------------
def test_defaults_are_backdoorbench_values():
    # config/attack/trojannn/preactresnet18.yaml and attack/trojannn.py's PGD defaults
    defaults = {name: p.default for name, p in inspect.signature(tj.TrojanNNTrigger).parameters.items()
                if name != "image_shape"}
    # attack/trojannn.py: uint8 sum wrapped before the clip; neurons ranked on a
    # freshly initialised 1000-class head.
    assert defaults == {"num_neurons": 2, "target_value": 100.0, "iterations": 1000, "step_size": 0.1,
                        "epsilon": 0.3, "tolerance": 1e-3, "mask_shape": "apple", "mask_path": None,
                        "overflow": "wrap", "neuron_ranking": "random_head", "random_head_outputs": 1000}
    assert TRIGGERS.get("trojannn") is tj.TrojanNNTrigger
    assert tj.TrojanNNTrigger.preparation == "clean_model"


def test_neuron_selection_ranks_absolute_column_sums_of_the_real_head():
    model = small_model()
    head = model.submodule(model.head_layer)
    assert model.head_layer == "backbone.head.2" and head.in_features == 64
    with torch.no_grad():
        head.weight.uniform_(-0.01, 0.01)
        head.weight[:, 17] = torch.tensor([-3.0, 3.0, -3.0, 3.0])   # |.| sums to 12: negative weights count
        head.weight[:, 5] = torch.tensor([2.0, 2.0, 2.0, 2.0])      # 8
        head.weight[0, 40] = 7.0                                   # ~7: one large entry
    assert tj.most_connected_neurons(head.weight, 3).tolist() == [17, 5, 40]
    trigger = tj.TrojanNNTrigger(SHAPE, iterations=1, neuron_ranking="trained_head")
    trigger.prepare(context(model))
    assert trigger.neuron_indices.tolist() == [17, 5]


def test_default_neuron_ranking_is_backdoorbenchs_random_head():
    # BackdoorBench ranks on a 1000-class model whose head the 10-class
    # checkpoint does not fill: a freshly initialised Linear(512, 1000).
    model = small_model()
    head = model.submodule(model.head_layer)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, 17] = 5.0    # the trained head's choice plays no part
    trigger = tj.TrojanNNTrigger(SHAPE, iterations=1)
    trigger.prepare(context(model, seed=0))
    ctx = context(model, seed=0)
    weight = tj.random_head_weight(1000, head.in_features, ctx.generator(offset=tj.RANDOM_HEAD_OFFSET))
    assert weight.shape == (1000, 64) and weight.abs().max() <= 1 / 8   # uniform in +-1/sqrt(64)
    assert trigger.neuron_indices.tolist() == tj.most_connected_neurons(weight, 2).tolist()
    # A function of the cell's seed.
    again = tj.TrojanNNTrigger(SHAPE, iterations=1)
    again.prepare(context(model, seed=0))
    assert torch.equal(again.neuron_indices, trigger.neuron_indices)
    others = set()
    for seed in (1, 2, 3):
        other = tj.TrojanNNTrigger(SHAPE, iterations=1)
        other.prepare(context(model, seed=seed))
        others.add(tuple(other.neuron_indices.tolist()))
    assert others - {tuple(trigger.neuron_indices.tolist())}


def test_apple_mask_is_about_seven_percent_at_the_bottom_right():
    for size in (28, 32, 64):
        mask = tj.rasterise("apple", size, size)
        assert 0.06 <= mask.float().mean().item() <= 0.075, size
        rows, cols = mask.nonzero().unbind(1)
        # The reference logo's bounding box: rows 0.54-0.91, columns 0.57-0.87 of the side.
        assert rows.min() >= 0.5 * size and rows.max() < 0.93 * size
        assert cols.min() >= 0.55 * size and cols.max() < 0.9 * size
    square = tj.rasterise("square", 32, 32)
    assert square.sum().item() == 8 * 8 and square[21:29, 21:29].all()
    trigger = tj.TrojanNNTrigger((3, 32, 32))
    assert torch.equal(trigger.mask, tj.rasterise("apple", 32, 32).float().expand(3, 32, 32))
    assert torch.equal(trigger.initial, trigger.mask)     # white inside, black outside


def test_mask_from_an_image_file(tmp_path):
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (224, 224), (0, 0, 0))
    ImageDraw.Draw(img).ellipse((140, 140, 200, 200), fill=(255, 255, 255))
    img.save(tmp_path / "blob.png")
    trigger = tj.TrojanNNTrigger((3, 32, 32), mask_path=str(tmp_path / "blob.png"))
    assert torch.equal(trigger.mask, (trigger.initial > 0).float())
    assert trigger.initial[:, :19, :].sum() == 0 and trigger.initial[:, 24, 24].min() == 1.0
    # Resized bilinearly: the edge pixels start grey, as in the reference.
    assert ((trigger.initial > 0) & (trigger.initial < 1)).any()
    with pytest.raises(Exception, match="does not exist"):
        tj.TrojanNNTrigger((3, 32, 32), mask_path=str(tmp_path / "missing.png"))


# ---- the optimised trigger --------------------------------------------------------------
def test_pgd_raises_the_selected_neurons(prepared):
    trigger, model = prepared
    idx = trigger.neuron_indices
    before = head_inputs(model, trigger.initial * trigger.mask)[idx]
    after = head_inputs(model, trigger.pattern)[idx]
    assert (after > before).all(), (before, after)
    cost = lambda f: (f - 100.0).pow(2).sum().item()  # noqa: E731
    assert cost(after) < cost(before)
    assert trigger.steps_taken == FAST["iterations"]


def test_trigger_is_masked_and_within_epsilon_of_white(prepared):
    trigger, _ = prepared
    p, mask = trigger.pattern, trigger.mask.bool()
    assert torch.equal(p[~mask], torch.zeros_like(p[~mask]))
    inside = p[mask]
    # L-inf 0.3 around the white start; the uint8 truncation may take 1/255 more.
    assert inside.min() >= 1 - 0.3 - 1 / 255 and inside.max() <= 1
    assert (inside < 1).any()                        # PGD moved some pixels
    assert torch.equal(p * 255, (p * 255).round())   # on the uint8 grid


def test_trigger_is_deterministic(prepared):
    trigger, model = prepared
    again = tj.TrojanNNTrigger(SHAPE, **FAST)
    again.prepare(context(model))
    assert torch.equal(again.pattern, trigger.pattern)
    assert torch.equal(again.neuron_indices, trigger.neuron_indices)
    # No hook is left behind on the clean model.
    assert not model.submodule(model.head_layer)._forward_hooks


def test_tolerance_stops_the_pgd_early():
    trigger = tj.TrojanNNTrigger(SHAPE, iterations=50, tolerance=1e9)
    trigger.prepare(context(small_model()))
    assert trigger.steps_taken == 1


def trigger_with_pattern(value: float, **params) -> tj.TrojanNNTrigger:
    trigger = tj.TrojanNNTrigger(SHAPE, **params)
    mask = trigger.mask.clone()
    trigger.load_state_dict({"pattern": mask * value, "mask": mask, "neuron_indices": torch.tensor([0, 1])})
    return trigger


def test_poisoning_wraps_modulo_256_by_default():
    # BackdoorBench attack/trojannn.py TrojanTrigger: (img + trigger).astype("uint8"), then the clip.
    trigger = trigger_with_pattern(100 / 255)
    mask = trigger.mask.bool()
    x = torch.full((2, *SHAPE), 200 / 255)
    out = trigger(x)
    assert torch.equal(out[:, mask], torch.full_like(out[:, mask], (300 % 256) / 255))
    assert torch.equal(out[:, ~mask], x[:, ~mask])
    # Below 256 the sum is plain: 50 + 100 = 150.
    dark = trigger(torch.full((1, *SHAPE), 50 / 255))
    assert torch.equal(dark[:, mask], torch.full_like(dark[:, mask], 150 / 255))


def test_poisoning_clips_with_the_clip_option():
    trigger = trigger_with_pattern(100 / 255, overflow="clip")
    mask = trigger.mask.bool()
    x = torch.full((2, *SHAPE), 200 / 255)
    out = trigger(x)
    assert torch.equal(out[:, mask], torch.ones_like(out[:, mask]))
    assert torch.equal(out[:, ~mask], x[:, ~mask])


def test_poisoning_in_8_bit_levels(prepared):
    trigger, _ = prepared
    x = torch.randint(0, 256, (3, *SHAPE)).float() / 255
    out = trigger(x)
    levels = (torch.round(x * 255) + torch.round(trigger.pattern * 255)) % 256
    assert torch.equal(out, levels / 255)
    assert torch.equal(out * 255, (out * 255).round())      # stays on the uint8 grid
    # The prepared trigger is 178..255 inside the mask: bright pixels wrap to dark.
    white = trigger(torch.ones(1, *SHAPE))
    assert (white[:, trigger.mask.bool()] < 1).all()
    with pytest.raises(ConfigError, match="overflow='saturate'"):
        tj.TrojanNNTrigger(SHAPE, overflow="saturate")


def test_state_round_trip_and_unprepared_use(prepared):
    trigger, _ = prepared
    state = trigger.state_dict()
    assert set(state) == {"pattern", "mask", "neuron_indices"}
    assert all(v.is_contiguous() for v in state.values()) and state["neuron_indices"].dtype == torch.long
    fresh = tj.TrojanNNTrigger(SHAPE, **FAST)
    assert fresh.state_dict() == {}
    with pytest.raises(RuntimeError, match="no pattern"):
        fresh(torch.zeros(1, *SHAPE))
    fresh.load_state_dict(state)
    x = torch.rand(3, *SHAPE)
    assert torch.equal(fresh(x), trigger(x))
    assert torch.equal(fresh.neuron_indices, trigger.neuron_indices)
    with pytest.raises(ValueError):
        fresh.load_state_dict({"pattern": state["pattern"]})


def test_more_neurons_than_head_inputs_is_a_config_error():
    with pytest.raises(ConfigError, match="num_neurons=65"):
        tj.TrojanNNTrigger(SHAPE, num_neurons=65, iterations=1).prepare(context(small_model()))


def test_preset_is_dirty_label_with_valid_parameters():
    preset = ATTACKS.get("trojannn")
    assert preset.trigger == "trojannn" and not preset.clean_label
    params = validate_params("trigger 'trojannn'", tj.TrojanNNTrigger, preset.trigger_params, ("image_shape",))
    trigger = tj.TrojanNNTrigger((3, 32, 32), **params)
    assert (trigger.num_neurons, trigger.target_value, trigger.iterations) == (2, 100.0, 1000)
