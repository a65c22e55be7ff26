"""Input-Aware Dynamic Attack: the trigger's networks and mask stage
(benchmark.triggers.input_aware) and the joint training of the classifier
with the pattern generator (lightning_modules.attacks.input_aware).

Tiny networks (8 base channels, 2 stages) on 1x16x16 synthetic images keep
every test within a few seconds on the CPU."""
import copy
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import benchmark.triggers.input_aware as iad
from benchmark.storage.checkpoints import JobCheckpoints
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.training import TrainerFactory
from benchmark.triggers import TRIGGERS
from benchmark.triggers.input_aware import InputAwareTrigger, harden, mix
from benchmark.triggers.preparation import PreparationContext
from datamodules.synthetic import SyntheticDataModule
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.input_aware import InputAwareAttackModule

SHAPE = (1, 16, 16)
TINY = {"base_channels": 8, "stages": 2, "mask_batch_size": 32}


def defaults(cls) -> dict:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def synthetic(num_train: int = 128, batch_size: int = 32) -> SyntheticDataModule:
    dm = SyntheticDataModule(num_train=num_train, num_test=32, channels=1, size=16, batch_size=batch_size)
    dm.setup()
    return dm


def context(dm: SyntheticDataModule, seed: int = 0) -> PreparationContext:
    return PreparationContext(dm.train_images, dm.train_labels, torch.arange(0, dm.num_train, 10), dm.num_classes,
                              target_label=0, seed=seed)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def prepared():
    """A trigger after 40 mask steps, the images it was trained on, and its
    mask objective on fixed pairs before training."""
    dm = synthetic()
    trigger = InputAwareTrigger(SHAPE, max_mask_steps=40, **TINY)
    x = dm.train_images.float() / 255
    with torch.no_grad():
        trigger.mask_network.eval()
        before = trigger.mask_objective(x[:64], x[64:])["loss"].item()
    trigger.prepare(context(dm))
    return trigger, x, before


# ---- reference defaults and registration --------------------------------------------------
def test_defaults_are_backdoorbench_cifar10():
    # BackdoorBench config/attack/inputaware/default.yaml: clean_train_epochs 25,
    # lr_M 0.01, schedulerM_milestones [10, 20], schedulerM_lambda 0.1,
    # mask_density 0.032, lambda_norm 100, lambda_div 1, EPSILON 1e-7, batch 128.
    t = defaults(InputAwareTrigger)
    assert (t["mask_epochs"], t["mask_batch_size"], t["mask_lr"], t["mask_milestones"], t["mask_lr_decay"]) == \
        (25, 128, 0.01, (10, 20), 0.1)
    assert (t["mask_density"], t["lambda_norm"], t["lambda_div"], t["epsilon"]) == (0.032, 100.0, 1.0, 1e-7)
    assert t["image_std"] is None and t["max_mask_steps"] is None
    assert iad.GENERATOR_BETAS == (0.5, 0.9)
    # lr_G 0.01, Adam betas (0.5, 0.9); classifier SGD momentum 0.9, wd 5e-4;
    # every MultiStep milestone beyond the 75 joint epochs: constant rates;
    # as many cross rows as backdoor rows.
    m = defaults(InputAwareAttackModule)
    assert (m["generator_lr"], m["generator_betas"], m["momentum"], m["weight_decay"]) == (0.01, (0.5, 0.9), 0.9, 5e-4)
    assert (m["cross_ratio"], m["lr_schedule"], m["augment_first"]) == (1.0, "constant", True)
    # int(pratio * batch) random rows of every batch (not fixed images).
    assert m["backdoor_rows"] == "per_batch"
    # G's gradient never zeroed in the joint stage (only optimizerC.zero_grad());
    # one `epochs` for mask + joint epochs (25 + 75 of 100).
    assert (m["generator_gradients"], m["epoch_budget"]) == ("accumulate", "total")


def test_registered_as_data_prepared_and_learned_in_attack():
    assert TRIGGERS.get("input_aware") is InputAwareTrigger
    assert InputAwareTrigger.preparation == "data" and InputAwareTrigger.learned_in_attack
    preset = ATTACKS.get("input_aware")
    assert preset.trigger == "input_aware" and preset.module_class() is InputAwareAttackModule
    assert not preset.clean_label


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match="mask_density"):
        validate_params("trigger 'input_aware'", InputAwareTrigger, {"mask_density": 1.5})
    with pytest.raises(ConfigError, match="mask_milestones"):
        validate_params("trigger 'input_aware'", InputAwareTrigger, {"mask_milestones": [0, 20]})
    with pytest.raises(ConfigError, match="stages=3 is not allowed for 8x8 images; must be at most 2"):
        InputAwareTrigger((1, 8, 8))
    with pytest.raises(ConfigError, match="image_std"):
        InputAwareTrigger((3, 32, 32), image_std=[0.2, 0.2])


# ---- the networks ------------------------------------------------------------------------------
def conv_channels(network: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_channels, m.out_channels) for m in network.modules() if isinstance(m, nn.Conv2d)]


def test_networks_follow_the_reference_design():
    cifar = InputAwareTrigger((3, 32, 32))
    # 32 -> 64 -> 128 down, a middle block, mirrored up; 3-channel pattern, 1-channel mask.
    expected = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 128),
                (128, 128), (128, 64), (64, 64), (64, 32), (32, 32), (32, 3)]
    assert conv_channels(cifar.pattern_network) == expected
    assert conv_channels(cifar.mask_network) == expected[:-1] + [(32, 1)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in cifar.pattern_network.modules()) == 3
    ups = [m for m in cifar.pattern_network.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "bilinear" for u in ups)
    # MNIST's shape gets BackdoorBench's MNIST network: 16 channels, 2 stages.
    mnist = InputAwareTrigger((1, 28, 28))
    assert conv_channels(mnist.pattern_network) == [(1, 16), (16, 16), (16, 32), (32, 32), (32, 32),
                                                    (32, 32), (32, 16), (16, 16), (16, 1)]


@pytest.mark.parametrize("shape,params", [((1, 28, 28), {}), ((1, 28, 28), {"stages": 3}),
                                          ((3, 32, 32), {"base_channels": 8}), ((3, 64, 64), {"base_channels": 8})])
def test_every_image_size_maps_to_itself_in_unit_range(shape, params):
    # 28 is not a multiple of 2**3: padded before the network, cropped after.
    trigger = InputAwareTrigger(shape, **params)
    x = torch.rand(3, *shape)
    out = trigger(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    patterns, masks = trigger.patterns(x), trigger.masks(x)
    assert patterns.shape == x.shape and masks.shape == (3, 1, *shape[1:])
    assert ((patterns > 0) & (patterns < 1)).all()


def test_hardened_mask_is_a_steep_tanh_around_one_half():
    m = torch.tensor([0.0, 0.3, 0.45, 0.5, 0.55, 0.7, 1.0])
    expected = torch.tanh(20 * m - 10) / 2 + 0.5
    assert torch.allclose(harden(m), expected)
    assert harden(torch.tensor(0.3)) < 1e-3 and harden(torch.tensor(0.7)) > 1 - 1e-3
    assert harden(torch.tensor(0.5)) == 0.5


def test_apply_is_the_mix_with_own_pattern_and_mask_without_gradients():
    trigger = InputAwareTrigger(SHAPE, **TINY)
    x = torch.rand(6, *SHAPE)
    trigger.pattern_network.train()
    out = trigger(x)
    assert not out.requires_grad
    assert trigger.pattern_network.training  # apply leaves the mode it found
    with torch.no_grad():
        trigger.pattern_network.eval()
        trigger.mask_network.eval()
        expected = x + (trigger.pattern_network(x) - x) * harden(trigger.mask_network(x))
    assert torch.allclose(out, expected.clamp(0, 1), atol=1e-6)
    assert torch.equal(trigger(x), out)  # deterministic
    # Eval mode: an image's trigger does not depend on the rest of the batch.
    assert torch.allclose(trigger(x[2:3]), out[2:3], atol=1e-5)


def test_cross_uses_the_other_images_pattern_and_mask():
    trigger = InputAwareTrigger(SHAPE, **TINY)
    x, other = torch.rand(4, *SHAPE), torch.rand(4, *SHAPE)
    crossed = trigger.cross(x, other)
    with torch.no_grad():
        trigger.pattern_network.eval()
        expected = mix(x, trigger.patterns(other), trigger.masks(other))
    assert torch.allclose(crossed, expected, atol=1e-6)
    assert torch.equal(trigger.cross(x, x), trigger(x))
    with pytest.raises(ValueError, match="one shape"):
        trigger.cross(x, other[:2])


# ---- stage 1: the mask generator ------------------------------------------------------------
def test_mask_training_lowers_the_loss_and_the_density(prepared):
    trigger, x, before = prepared
    history = trigger.mask_history
    assert history[-1]["loss"] < history[0]["loss"]
    with torch.no_grad():
        after = trigger.mask_objective(x[:64], x[64:])["loss"].item()
    assert after < before
    masks = trigger.masks(x)
    # From ~0.8 at initialisation towards mask_density 0.032 (40 steps: roughly).
    assert masks.mean() < 0.3
    assert not trigger.mask_network.training
    assert not any(p.requires_grad for p in trigger.mask_network.parameters())


def test_hardened_mask_is_nearly_binary(prepared):
    trigger, x, _ = prepared
    masks = trigger.masks(x)
    assert ((masks > 0.05) & (masks < 0.95)).float().mean() < 0.15


def test_triggers_differ_across_inputs(prepared):
    trigger, x, _ = prepared
    # Two images of different classes (the synthetic classes share 70 % of
    # their pixels within a class).
    labels = synthetic().train_labels
    pair = x[[int(torch.nonzero(labels == 0)[0]), int(torch.nonzero(labels == 2)[0])]]
    masks = trigger.masks(pair)
    assert (masks[0] - masks[1]).abs().mean() > 0.01
    out = trigger(pair)
    assert (out[0] - pair[0] - (out[1] - pair[1])).abs().max() > 0.1
    # G is untrained after the mask stage; its eval-mode BatchNorm statistics
    # are still the initial (0, 1), which flattens its output. In training
    # mode (as the attack's training calls it) its patterns follow the input.
    generator = copy.deepcopy(trigger.pattern_network).train()
    with torch.no_grad():
        patterns = generator(torch.cat([pair, x[:6]]))
    assert (patterns[0] - patterns[1]).abs().mean() > 0.01


def test_mask_stage_measures_image_distances_in_units_of_the_pixel_std():
    images = torch.randint(0, 256, (300, 3, 5, 5), dtype=torch.uint8)
    expected = (images.double() / 255).transpose(0, 1).flatten(1).std(dim=1, unbiased=False).float()
    assert torch.allclose(iad.pixel_std(images, chunk=64), expected, atol=1e-6)
    # BackdoorBench's diversity term divides distances of normalised images:
    # half the std, twice the term; the density term does not change.
    trigger = InputAwareTrigger(SHAPE, **TINY)
    x1, x2 = torch.rand(4, *SHAPE), torch.rand(4, *SHAPE)
    with torch.no_grad():
        pixels = trigger.mask_objective(x1, x2, torch.tensor([1.0]))
        halved = trigger.mask_objective(x1, x2, torch.tensor([0.5]))
    assert torch.allclose(halved["diversity"], 2 * pixels["diversity"], rtol=1e-5)
    assert torch.equal(halved["norm"], pixels["norm"])


def test_prepare_is_a_function_of_the_seed():
    dm = synthetic(num_train=64)
    states = []
    for seed in (0, 0, 1):
        trigger = InputAwareTrigger(SHAPE, max_mask_steps=3, seed=seed, **TINY)
        trigger.prepare(context(dm, seed))
        states.append(trigger.state_dict())
    assert same_state(states[0], states[1])
    assert not torch.equal(states[0]["mask.down.0.0.weight"], states[2]["mask.down.0.0.weight"])
    assert not torch.equal(states[0]["pattern.down.0.0.weight"], states[2]["pattern.down.0.0.weight"])


def test_preparing_twice_restarts_from_the_seeded_mask():
    dm = synthetic(num_train=64)
    trigger = InputAwareTrigger(SHAPE, max_mask_steps=2, **TINY)
    trigger.prepare(context(dm))
    first = trigger.state_dict()
    trigger.prepare(context(dm))
    assert same_state(first, trigger.state_dict())


def test_mask_stage_leaves_the_pattern_generator_at_its_seeded_initialisation(prepared):
    trigger, _, _ = prepared
    fresh = InputAwareTrigger(SHAPE, **TINY).state_dict()
    state = trigger.state_dict()
    assert same_state({k: v for k, v in state.items() if k.startswith("pattern.")},
                      {k: v for k, v in fresh.items() if k.startswith("pattern.")})
    assert not torch.equal(state["mask.down.0.0.weight"], fresh["mask.down.0.0.weight"])


# ---- state -------------------------------------------------------------------------------------
def test_state_round_trip_reproduces_apply_exactly(prepared):
    trigger, x, _ = prepared
    trained = copy.deepcopy(trigger)
    with torch.no_grad():  # stands in for a trained G: any change of its weights
        for p in trained.pattern_network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = trained.state_dict()
    assert all(k.startswith(("mask.", "pattern.")) for k in state)
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in state.values())
    assert "mask.down.0.1.running_mean" in state and "pattern.down.0.1.running_var" in state
    restored = InputAwareTrigger(SHAPE, **TINY)
    restored.load_state_dict(state)
    assert torch.equal(restored(x), trained(x))
    assert torch.equal(restored.cross(x, x.flip(0)), trained.cross(x, x.flip(0)))


def test_mask_only_state_is_accepted_with_the_seeded_pattern_generator(prepared):
    trigger, x, _ = prepared
    mask_only = {k: v for k, v in trigger.state_dict().items() if k.startswith("mask.")}
    other = InputAwareTrigger(SHAPE, **TINY)
    with torch.no_grad():  # a G that is not the seeded one must be reset
        for p in other.pattern_network.parameters():
            p.add_(1.0)
    other.load_state_dict(mask_only)
    assert torch.equal(other(x), trigger(x))
    with pytest.raises(ValueError, match="no mask"):
        other.load_state_dict({k: v for k, v in trigger.state_dict().items() if k.startswith("pattern.")})
    with pytest.raises(ValueError, match="unknown"):
        other.load_state_dict({**mask_only, "delta": torch.zeros(1)})


# ---- stage 2: joint training -------------------------------------------------------------------
def attack_module(trigger, num_train=128, poison=None, **kwargs):
    model = build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,))
    poison = torch.arange(0, num_train, 5) if poison is None else poison
    return InputAwareAttackModule(model, 4, trigger, poison, num_train, target_label=0, lr=0.05, **kwargs)


def test_joint_batch_backdoor_rows_get_the_target_cross_rows_keep_their_labels():
    trigger = InputAwareTrigger(SHAPE, **TINY)
    module = attack_module(trigger, backdoor_rows="indices")
    torch.manual_seed(0)
    x, y, idx = torch.rand(32, *SHAPE), torch.randint(1, 4, (32,)), torch.arange(32)
    module.pattern_generator.eval()  # so the rows can be compared with apply / cross
    batch = module.joint_batch(x, y, idx)
    backdoor = idx % 5 == 0
    assert torch.equal(batch.backdoor_rows, torch.nonzero(backdoor).flatten())
    assert (batch.labels[backdoor] == 0).all()
    assert torch.equal(batch.labels[~backdoor], y[~backdoor])
    # As many cross rows as backdoor rows, among the non-poisoned rows, each
    # carrying another image's trigger.
    cross = batch.cross_rows
    assert len(cross) == backdoor.sum() and not backdoor[cross].any()
    assert (batch.cross_sources != cross).all()
    assert torch.allclose(batch.images[backdoor], trigger(x[backdoor]), atol=1e-5)
    assert torch.allclose(batch.images[cross], trigger.cross(x[cross], x[batch.cross_sources]), atol=1e-5)
    untouched = torch.ones(32, dtype=torch.bool)
    untouched[batch.backdoor_rows] = False
    untouched[cross] = False
    assert torch.equal(batch.images[untouched], x[untouched])
    # The diversity term reaches G (and only G: M is frozen).
    assert batch.diversity > 0 and torch.isfinite(batch.diversity)
    batch.diversity.backward()
    assert all(p.grad is not None for p in trigger.pattern_network.parameters())
    assert all(p.grad is None for p in trigger.mask_network.parameters())


def test_per_batch_rows_are_backdoorbenchs_count_at_random_positions():
    trigger = InputAwareTrigger(SHAPE, **TINY)
    module = attack_module(trigger)  # 26 of 128 training images: rate 0.203
    x, y = torch.rand(32, *SHAPE), torch.randint(1, 4, (32,))
    torch.manual_seed(0)
    rows = [module.joint_batch(x, y, torch.arange(32)) for _ in range(20)]
    assert all(len(b.backdoor_rows) == 6 and len(b.cross_rows) == 6 for b in rows)  # int(0.203 * 32)
    assert all((b.labels[b.backdoor_rows] == 0).all() for b in rows)
    positions = torch.cat([b.backdoor_rows for b in rows])
    assert len(positions.unique()) > 20  # not a fixed set of rows
    # Below one row per batch: one row with probability rate * batch.
    sparse = attack_module(trigger, poison=torch.tensor([3]))  # rate 1/128, 4 rows: p = 1/32
    torch.manual_seed(1)
    counts = torch.tensor([len(sparse.per_batch_rows(4, "cpu").nonzero()) for _ in range(640)])
    assert set(counts.tolist()) == {0, 1} and 5 <= counts.sum() <= 40


def test_cross_ratio_and_batches_without_poison():
    trigger = InputAwareTrigger(SHAPE, **TINY)
    x, y = torch.rand(16, *SHAPE), torch.randint(0, 4, (16,))
    none = attack_module(trigger, cross_ratio=0.0, backdoor_rows="indices").joint_batch(x, y, torch.arange(16))
    assert len(none.cross_rows) == 0 and len(none.backdoor_rows) == 4
    clean = attack_module(trigger, backdoor_rows="indices").joint_batch(x, y, torch.arange(16) * 5 + 1)
    assert len(clean.backdoor_rows) == 0 and torch.equal(clean.images, x) and clean.diversity == 0


def test_wrong_trigger_is_refused():
    from benchmark.triggers.badnets import BadNetsTrigger
    with pytest.raises(ValueError, match="InputAwareTrigger"):
        attack_module(BadNetsTrigger(SHAPE))


@pytest.mark.parametrize("augment_first", [True, False])
def test_a_training_epoch_trains_the_trigger_generator_in_place_and_not_the_mask(augment_first):
    dm = synthetic(num_train=64)
    trigger = InputAwareTrigger(SHAPE, **TINY)
    seen = []

    def augment(images):  # records what the augmentation gets, then flips
        seen.append(images.detach().clone())
        return images.flip(-1)

    module = attack_module(trigger, num_train=64, augment=augment, augment_first=augment_first)
    assert module.pattern_generator is trigger.pattern_network
    pattern0, mask0 = trigger.state_dict(), copy.deepcopy(trigger.mask_network.state_dict())
    model0 = copy.deepcopy(module.model.state_dict())
    TrainerFactory("cpu", progress=False).fit(module, dm.loader(dm.train_set(), batch_size=32), 1)

    after = trigger.state_dict()
    assert any(not torch.equal(after[k], pattern0[k]) for k in after if k.startswith("pattern.") and "running" not in k)
    # G trained in training mode (its BatchNorm statistics moved) and is left in eval mode.
    assert not torch.equal(after["pattern.down.0.1.running_mean"], pattern0["pattern.down.0.1.running_mean"])
    assert not trigger.pattern_network.training
    assert same_state(trigger.mask_network.state_dict(), mask0)  # weights and BatchNorm statistics
    assert any(not torch.equal(v, model0[k]) for k, v in module.model.state_dict().items())
    weights = module.export_weights()
    assert weights.keys() == module.model.state_dict().keys()
    assert not any("pattern" in k or "mask" in k for k in weights)
    # BackdoorBench augments the loaded batch, then G and M act on it; the
    # other order augments the triggered images (rows 0, 5, 10, ... poisoned).
    assert len(seen) == 2
    loaded = dm.train_images[:32].float() / 255
    assert torch.equal(seen[0], loaded) == augment_first


# ---- G's accumulated gradient ------------------------------------------------------------------
class GradientRecorder(InputAwareAttackModule):
    """Records G's gradients just before and just after each backward pass."""

    def manual_backward(self, loss, *args, **kwargs):
        grads = lambda: [None if p.grad is None else p.grad.clone()  # noqa: E731
                         for p in self.pattern_generator.parameters()]
        before = grads()
        super().manual_backward(loss, *args, **kwargs)
        self.records.append((before, grads()))


def recorded_fit(generator_gradients: str):
    dm = synthetic(num_train=64)  # two batches of 32, each with int(0.203 * 32) = 6 backdoor rows
    torch.manual_seed(0)
    trigger = InputAwareTrigger(SHAPE, **TINY)
    model = build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,))
    module = GradientRecorder(model, 4, trigger, torch.arange(0, 64, 5), 64, lr=0.05,
                              generator_gradients=generator_gradients)
    module.records = []
    TrainerFactory("cpu", progress=False).fit(module, dm.loader(dm.train_set(), batch_size=32), 1)
    return module


def test_generator_gradient_accumulates_over_steps_by_default():
    # BackdoorBench attack/inputaware.py train_step and the original train.py
    # zero only the classifier's gradients: G's .grad is the running sum.
    module = recorded_fit("accumulate")
    (before1, grad1), (before2, after2) = module.records
    assert all(g is None for g in before1)                      # the joint stage starts without one
    assert all(torch.equal(b, g) for b, g in zip(before2, grad1))  # not zeroed before step 2
    final = [p.grad for p in module.pattern_generator.parameters()]
    for g1, b2, a2, f in zip(grad1, before2, after2, final):
        step2 = a2 - b2
        assert step2.abs().sum() > 0
        assert torch.allclose(f, g1 + step2)                    # grad after step 2 = grad1 + grad2
    # Standard Adam: zeroed before every step.
    per_step = recorded_fit("per_step")
    assert all(g is None for g in per_step.records[1][0])


def test_accumulated_generator_gradient_survives_a_resume(tmp_path):
    def run(directory: Path, epochs: int):
        dm = synthetic(num_train=64)
        torch.manual_seed(0)
        trigger = InputAwareTrigger(SHAPE, **TINY)
        module = attack_module(trigger, num_train=64)
        trainers = TrainerFactory("cpu", progress=False)
        trainers.checkpoints = JobCheckpoints(directory)
        torch.manual_seed(1)
        trainers.fit(module, dm.loader(dm.train_set(), batch_size=32, shuffle=True, seed=0), epochs)
        return module

    whole = run(tmp_path / "whole", 2)
    run(tmp_path / "resumed", 1)            # stopped after epoch 1: its checkpoint holds G's sum
    resumed = run(tmp_path / "resumed", 2)  # a new process would build the module again
    for a, b in zip(whole.pattern_generator.parameters(), resumed.pattern_generator.parameters()):
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(a, b)


# ---- epochs ----------------------------------------------------------------------------------
def test_cell_epochs_count_mask_and_joint_epochs_by_default():
    # BackdoorBench: epochs 100 = clean_train_epochs 25 + 75 joint epochs.
    module = attack_module(InputAwareTrigger(SHAPE, **TINY))
    assert module.fit_epochs(100) == 75
    assert attack_module(InputAwareTrigger(SHAPE, mask_epochs=1, **TINY)).fit_epochs(4) == 3
    # The configured mask epochs count, even when max_mask_steps cuts the stage short.
    assert attack_module(InputAwareTrigger(SHAPE, max_mask_steps=4, **TINY)).fit_epochs(30) == 5
    with pytest.raises(ConfigError, match="epochs=25 is not allowed with mask_epochs=25.*more than 25"):
        module.fit_epochs(25)
    # "joint": the cell's epochs are the joint epochs alone.
    joint = attack_module(InputAwareTrigger(SHAPE, **TINY), epoch_budget="joint")
    assert joint.fit_epochs(100) == 100 and joint.fit_epochs(3) == 3
