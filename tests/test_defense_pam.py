"""BTI-DBF(U) and PAM: the reference's defaults, PAM's step along the path to
the backdoored weights, the generator, the feature site, the unlearning
batch, and both defenses through a cell."""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.bti_dbf import BTIDBF, UNetGenerator, decoupling_loss, feature_mask
from lightning_modules.defenses.pam import PathAwareMinimization, pam_perturbation, pam_step


def small_model():
    return build_model("small_cnn", 4, 1, 16, [0.5], [0.25])


def defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


# ---- defaults ---------------------------------------------------------------------
def test_bti_dbf_defaults_are_the_reference():
    # fine_tune/BTIDBF/cfg.py, defense.sh (nround 3), btidbfu.py (Adam 1e-4,
    # mask Adam 0.01, 0.2 B + 1 generated rows, CE + feature MSE), UNet(32, 4).
    assert DEFENSES.get("bti-dbf") is BTIDBF
    assert defaults(BTIDBF) == {
        "target_label": 0, "augment": None, "batch_size": 128, "lr": 1e-4, "betas": (0.9, 0.999),
        "weight_decay": 0.0, "preround": 50, "gen_lr": 1e-3, "mround": 20, "mask_lr": 0.01, "uround": 30,
        "norm_bound": 0.3, "feat_bound": 3.0, "nround": 3, "ul_round": 30, "generated_fraction": 0.2,
        "feature_loss_weight": 1.0, "early_stop": False, "detection_noise": 0.03, "unet_width": 32,
        "unet_depth": 4, "feature_site": "map", "image_units": "normalized", "mixed_precision": False}
    module = BTIDBF(small_model(), 4)
    assert module.hparams.epochs == 90 and "momentum" not in module.hparams
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["weight_decay"] == 0.0


def test_pam_defaults_are_the_reference():
    # sam.py / btidbfu.py: PAM(params, SGD, lr=1e-2, momentum=0.1, rho=0.5 from
    # defense.sh), adaptive False, cross-entropy only in unlearn_pam.
    assert DEFENSES.get("pam") is PathAwareMinimization and issubclass(PathAwareMinimization, BTIDBF)
    d = defaults(PathAwareMinimization)
    assert d["rho"] == 0.5 and d["adaptive"] is False
    assert (d["lr"], d["momentum"], d["weight_decay"], d["feature_loss_weight"]) == (1e-2, 0.1, 0.0, 0.0)
    shared = {k: v for k, v in defaults(BTIDBF).items()
              if k not in ("lr", "betas", "weight_decay", "feature_loss_weight")}
    assert {k: d[k] for k in shared} == shared
    module = PathAwareMinimization(small_model(), 4)
    assert module.hparams.momentum == 0.1 and "betas" not in module.hparams and module.hparams.epochs == 90
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-2, 0.1, 0.0)
    assert not module.automatic_optimization


@pytest.mark.parametrize("cls,name", [(BTIDBF, "bti-dbf"), (PathAwareMinimization, "pam")])
@pytest.mark.parametrize("bad", [{"nround": 0}, {"generated_fraction": 0.0}, {"feature_site": "logits"},
                                 {"epochs": 3}])
def test_bad_values_raise_config_error(cls, name, bad):
    with pytest.raises(ConfigError, match=name):
        validate_params(name, cls, bad)


def test_feature_site_needs_a_named_layer():
    model = small_model()
    assert BTIDBF(model, 4).site.name == "backbone.block3"
    assert BTIDBF(model, 4, feature_site="pooled").site.name == "backbone.head.2"
    plain = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
    with pytest.raises(ConfigError, match="pam: .*feature_site='pooled'"):
        PathAwareMinimization(plain, 4)


# ---- PAM's step -------------------------------------------------------------------
def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).train()


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def moved_away(model):
    """theta_A (copy of the weights), then theta != theta_A in every parameter."""
    anchor = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return anchor


def test_perturbation_points_from_theta_to_the_backdoored_weights():
    model = tiny_model()
    anchor = moved_away(model)
    params = list(model.parameters())
    e = flat(pam_perturbation(params, anchor, rho=0.5))
    d = flat(anchor) - flat(params).detach()
    assert torch.nn.functional.cosine_similarity(e, d, dim=0).item() == pytest.approx(1.0, abs=1e-6)
    assert e.norm().item() == pytest.approx(0.5, rel=1e-6)
    torch.testing.assert_close(e, 0.5 * d / d.norm())
    # adaptive: the reference's rho * d^3 / ||d|| (elementwise cube, norm of d)
    torch.testing.assert_close(flat(pam_perturbation(params, anchor, rho=0.5, adaptive=True)),
                               0.5 * d.pow(3) / d.norm())


def test_perturbation_is_zero_at_the_backdoored_weights():
    model = tiny_model()
    anchor = [p.detach().clone() for p in model.parameters()]
    e = flat(pam_perturbation(list(model.parameters()), anchor, rho=0.5))
    assert torch.equal(e, torch.zeros_like(e))


class StepSpy(torch.optim.SGD):
    """Records the parameters and gradients the base step is taken with."""

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.seen = ([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params])
        return super().step(closure)


def _by_hand(model, anchor, x, y, rho: float = 0.5):
    """(theta, the gradient at theta + e, the model moved to theta + e) with
    e = rho * (theta_A - theta) / ||theta_A - theta||, computed by hand."""
    theta = [p.detach().clone() for p in model.parameters()]
    d = [a - t for a, t in zip(anchor, theta)]
    norm = torch.sqrt(sum((t * t).sum() for t in d))
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p, t, di in zip(ref.parameters(), theta, d):
            p.copy_(t + rho * di / norm)
    return theta, torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters())), ref


def test_pam_step_takes_the_gradient_at_theta_plus_e_and_steps_from_theta():
    model = tiny_model()
    anchor = moved_away(model)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    # By hand: the gradient at theta + e, then SGD from theta (first step:
    # momentum buffer = g).
    theta, grads, ref = _by_hand(model, anchor, x, y)
    expected = [t - 1e-2 * g for t, g in zip(theta, grads)]

    opt = StepSpy(model.parameters(), lr=1e-2, momentum=0.1)
    loss = pam_step(model, anchor, lambda: F.cross_entropy(model(x), y), opt, rho=0.5)
    assert torch.isfinite(loss)
    at_step, grads_at_step = opt.seen
    for p, t in zip(at_step, theta):
        assert torch.equal(p, t), "the base step must start from theta, not theta + e"
    for g, want in zip(grads_at_step, grads):
        torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-7)
    for p, want in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-7)
    # one forward, at theta + e, in train mode: the statistics moved once
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    assert int(model[1].num_batches_tracked) == 1

    # second step: momentum 0.1 on the buffer, gradient again at the new theta + e
    theta2, grads2, _ = _by_hand(model, anchor, x, y)
    pam_step(model, anchor, lambda: F.cross_entropy(model(x), y), opt, rho=0.5)
    for p, t, g1, g2 in zip(model.parameters(), theta2, grads, grads2):
        torch.testing.assert_close(p.detach(), t - 1e-2 * (0.1 * g1 + g2), rtol=1e-5, atol=1e-7)


# ---- the generator, the mask, the unlearning batch -----------------------------------
@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32), (3, 16), (1, 17)])
def test_unet_maps_images_to_images_of_the_same_shape(channels, side):
    torch.manual_seed(0)
    gen = UNetGenerator(channels, width=8, depth=4)
    out = gen(torch.rand(2, channels, side, side))
    assert out.shape == (2, channels, side, side)
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()  # differentiable end to end
    assert gen.output.weight.grad is not None


def test_unet_default_is_the_references_architecture():
    # UNet(base_filter_num=32, num_blocks=4): encoders 32..256, bottleneck 512
    gen = UNetGenerator(3)
    assert [block[0].out_channels for block in gen.encoders] == [32, 64, 128, 256]
    assert gen.bottleneck[0].out_channels == 512
    assert [block[0].out_channels for block in gen.decoders] == [256, 128, 64, 32]
    assert gen.padded_side(32) == 32 and gen.padded_side(28) == 32 and gen.padded_side(16) == 32


def test_mask_branches_split_the_features():
    model = small_model().eval()
    module = BTIDBF(model, 4)
    x, y = torch.rand(5, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        logits, features = module.site.run(model, x)
        assert features.shape == (5, 64, 4, 4)
        torch.testing.assert_close(logits, model(x))
        stopped, same = module.site.run(model, x, stop=True)
        assert stopped is None and torch.equal(same, features)
        # mask of ones: kept branch is the model, removed branch sees zero features
        ones = torch.ones(1, *features.shape[1:])
        zero_logits = model.backbone.head(torch.zeros_like(features))
        want = F.cross_entropy(model(x), y) - F.cross_entropy(zero_logits, y)
        torch.testing.assert_close(decoupling_loss(model, module.site, ones, x, y), want)
    mask = feature_mask(torch.randn(1, 64, 4, 4))
    assert mask.min() > 0 and mask.max() < 1


def test_unlearning_batch_replaces_a_fifth_plus_one_rows():
    module = BTIDBF(small_model(), 4)
    module.generator = UNetGenerator(1, width=4, depth=2)
    with torch.no_grad():
        module.generator.output.bias.fill_(50.0)  # generated rows are all ~1
    x = torch.rand(20, 1, 16, 16) * 0.5
    mixed = module.mixed_batch(x)
    changed = (mixed != x).flatten(1).any(dim=1)
    assert int(changed.sum()) == int(0.2 * 20 + 1)
    assert torch.equal(mixed[~changed], x[~changed])


# ---- through a cell -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bti-dbf", "pam"])
def test_runs_end_to_end_in_a_cell(make_cell, name):
    cell = make_cell(defenses=(name,))
    attack = cell.execute(cell.job("attack", "badnets"))
    before = attack.tensors()
    module = cell.train_defense(name, attack)
    after = module.export_weights()
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in after if after[k].is_floating_point())
    assert module.hparams.epochs == 2 and module.trainer.current_epoch == 2
    report = module.report
    assert report["rounds"] == 2 and report["detected_label"] in range(cell.dm.num_classes)
    assert len(report["mask_mean"]) == len(report["generator_image_mse"]) == 2
    assert not report["early_stopped"]
    metrics = cell.evaluate(module.model)
    assert 0.0 <= metrics["test/clean_acc"] <= 1.0
    if name == "pam":
        # theta_A is f_A's parameters, untouched by the defense
        params = dict(module.model.named_parameters())
        for a, (key, _) in zip(module.anchor, params.items()):
            torch.testing.assert_close(a.cpu(), before[key])


def test_early_stop_ends_the_rounds_when_the_label_changes(make_cell, monkeypatch):
    labels = iter([1, 2, 2])
    monkeypatch.setattr(BTIDBF, "detect_target", lambda self: next(labels))
    params = {"preround": 1, "mround": 1, "uround": 1, "nround": 3, "ul_round": 1, "unet_width": 4,
              "unet_depth": 2, "early_stop": True}
    cell = make_cell(defenses=("bti-dbf",), defense_params={"bti-dbf": params})
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("bti-dbf", attack)
    report = module.report
    assert report["early_stopped"] and report["round_labels"] == [1, 2] and report["rounds"] == 2
    assert report["detected_label"] == 1
    # round 0 unlearned; round 1's epoch was skipped before any step
    assert module.trainer.current_epoch == 2 and module.trainer.global_step == module.trainer.num_training_batches


class Killed(RuntimeError):
    """Stands in for a SIGKILL between two epochs."""


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    # Round 2 starts right after the kill: it needs the generator, its Adam
    # state and the detected label from the checkpoint.
    from benchmark.cell import Cell
    from benchmark.storage.checkpoints import EpochCheckpoint
    from benchmark.storage.store import ArtifactStore
    from tests.conftest import FAST_DEFENSE_PARAMS, fast_spec

    params = {**FAST_DEFENSE_PARAMS["pam"], "nround": 3}
    spec = fast_spec(defenses=("pam",), defense_params={"pam": params})

    def cell(store):
        return Cell(spec, ArtifactStore(store), data_dir=tmp_path / "data", accelerator="cpu", progress=False,
                    checkpoint_every=1)

    whole, resumed = cell(tmp_path / "whole"), cell(tmp_path / "resumed")
    index = next(i for i, j in enumerate(whole.jobs) if j.kind == "defense")
    for job in whole.jobs[:index + 1]:
        whole.execute(job)
    for job in resumed.jobs[:index]:
        resumed.execute(job)
    target = resumed.jobs[index]
    original = EpochCheckpoint.on_train_epoch_end

    def killed_after_two(self, trainer, module):
        original(self, trainer, module)
        if trainer.current_epoch == 1:
            raise Killed("killed after epoch 2")

    with monkeypatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_train_epoch_end", killed_after_two)
        with pytest.raises(Killed):
            resumed.execute(target)
    resumed.execute(target)
    a = whole.store.load(target.kind, target.key)
    b = resumed.store.load(target.kind, target.key)
    for name, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[name]), f"{name} differs after resuming"
    assert a.metrics == b.metrics


def _head_dtypes(cls, **params) -> set:
    """Dtypes of the head's output in every grad-enabled pass of a short fit
    under the trainer's bf16 autocast (on the CPU here, as on a GPU)."""
    from tests.test_fidelity import head_dtypes_under_bf16

    torch.manual_seed(0)
    model = small_model()
    fast = {"preround": 1, "mround": 1, "uround": 1, "nround": 1, "ul_round": 1, "unet_width": 4, "unet_depth": 2,
            "batch_size": 8}
    module = cls(model, 4, **fast, **params)
    return head_dtypes_under_bf16(module, model, epochs=module.hparams.epochs)


@pytest.mark.parametrize("cls", [BTIDBF, PathAwareMinimization])
def test_fp32_by_default_under_a_bf16_trainer(cls):
    # The reference never autocasts; the option lets the unlearning steps use
    # the trainer's precision (the inversion steps stay fp32).
    assert _head_dtypes(cls) == {torch.float32}
    assert _head_dtypes(cls, mixed_precision=True) == {torch.float32, torch.bfloat16}
