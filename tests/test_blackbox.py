import copy

import pytest
import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.training import TrainerFactory
from datamodules import build_datamodule
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import QUERY, TRANSFER
from lightning_modules.reactivation.oracle import QueryBudgetExhausted, QueryOracle
from lightning_modules.reactivation.qbra import QueryReactivation, window_fraction

EPS = 0.05


def _data(n=48, batch_size=48):
    dm = build_datamodule("synthetic", num_train=96, num_test=32)
    loader = dm.loader(dm.attacker_set(torch.arange(n)), shuffle=True, batch_size=batch_size, drop_last=True)
    return dm, loader


def _model(dm, seed=0):
    torch.manual_seed(seed)
    model = build_model("small_cnn", dm.num_classes, 1, 16, dm.mean, dm.std)
    # Non-trivial BatchNorm statistics, so a change would show.
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 16, 16))
    return model.eval()


def _fit(module, loader, epochs=1):
    TrainerFactory("cpu", progress=False).fit(module, loader, epochs)


class AlwaysTarget(nn.Module):
    """Predicts the target class for every input, whatever the perturbation."""

    def __init__(self, num_classes, target):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes).index_fill_(0, torch.tensor([target]), 10.0))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


# ---- oracle ---------------------------------------------------------------------
def test_oracle_gives_probabilities_only_and_counts_queries():
    dm, _ = _data()
    model = _model(dm).train()
    before = copy.deepcopy(model.state_dict())
    oracle = QueryOracle(model, budget=3)
    x = torch.rand(5, 1, 16, 16, requires_grad=True)
    for i in range(3):
        probs = oracle(x)
        assert oracle.queries == i + 1 and oracle.remaining == 2 - i
    assert not probs.requires_grad and probs.grad_fn is None
    assert torch.allclose(probs.sum(1), torch.ones(5))
    assert all(p.grad is None for p in model.parameters())
    assert model.training, "the oracle must leave the model's mode as it found it"
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), f"{k} changed"
    with pytest.raises(QueryBudgetExhausted):
        oracle(x)
    assert oracle.queries == 3
    assert not any(isinstance(v, nn.Module) for v in vars(oracle).values())
    assert not any(isinstance(getattr(v, "__self__", None), nn.Module) for v in vars(oracle).values())


@pytest.mark.parametrize("budget", [0, -5])
def test_oracle_rejects_non_positive_budget(budget):
    with pytest.raises(ConfigError, match="budget"):
        QueryOracle(nn.Linear(2, 2), budget)


# ---- QBRA -----------------------------------------------------------------------
def _qbra(model, budget=60, seed=0, **kw):
    params = dict(max_queries=budget, seed=seed, num_samples=48, batch_size=48, stop_asr=1.0,
                  curve=(20, 40, 60, 100), epsilon=EPS)
    params.update(kw)
    return QueryReactivation(QueryOracle(model, budget), (1, 16, 16), 0, **params)


def test_qbra_respects_budget_and_records_curve():
    dm, loader = _data()
    module = _qbra(_model(dm))
    assert REACTIVATIONS.get("qbra") is QueryReactivation and module.access == QUERY
    assert not any(isinstance(v, QueryOracle) for v in module.modules())
    _fit(module, loader)
    assert module.oracle.queries <= 60 and module.queries_used == module.oracle.queries == 60
    hist = module.loss_history
    assert len(hist) == 60 and all(b <= a for a, b in zip(hist, hist[1:]))
    assert hist[-1] < hist[0], "the search never accepted a window"
    assert set(module.checkpoints()) == {"20q", "40q", "60q"}
    assert torch.equal(module.checkpoints()["60q"], module.final_delta())
    d = module.final_delta()
    assert d.abs().max() <= EPS * (1 + 1e-6)


def test_qbra_is_reproducible():
    dm, loader = _data()
    runs = []
    for seed in (3, 3, 4):
        module = _qbra(_model(dm), budget=30, seed=seed)
        _fit(module, loader)
        runs.append(module.final_delta())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_qbra_stops_once_the_target_is_reached():
    dm, loader = _data()
    module = _qbra(AlwaysTarget(dm.num_classes, 0), budget=60, stop_asr=0.99)
    _fit(module, loader)
    assert module.queries_used == 1 and module.stopped_early
    assert set(module.checkpoints()) == {"20q", "40q", "60q"}


def test_window_schedule_halves_and_rescales():
    assert window_fraction(0, 10_000, 0.1) == 0.1 and window_fraction(11, 10_000, 0.1) == 0.05
    assert window_fraction(9000, 10_000, 0.1) == pytest.approx(0.1 / 512)
    assert window_fraction(5, 100, 0.1) == window_fraction(500, 10_000, 0.1)


# ---- TBRA -----------------------------------------------------------------------
class Counter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


@pytest.mark.parametrize("ensemble", ["sum", "sequential", "momentum"])
def test_tbra_uses_surrogates_only(ensemble):
    dm, _ = _data()
    _, loader = _data(n=32, batch_size=16)
    victim = _model(dm, seed=0)
    surrogates = [_model(dm, seed=1), _model(dm, seed=2)]
    before = [copy.deepcopy(s.state_dict()) for s in surrogates]
    victim_calls, surrogate_calls = Counter(victim), [Counter(s) for s in surrogates]
    module = REACTIVATIONS.get("tbra")(surrogates, dm.image_shape, 0, epsilon=EPS, epochs=2, batch_size=16,
                                       num_samples=32, ensemble=ensemble)
    assert module.access == TRANSFER
    delta0 = module.delta.detach().clone()
    _fit(module, loader, epochs=2)
    assert victim_calls.calls == 0
    assert all(c.calls > 0 for c in surrogate_calls)
    for s, b in zip(surrogates, before):
        assert not s.training
        for k, v in b.items():
            assert torch.equal(v, s.state_dict()[k]), f"{k} changed"
    assert not torch.equal(delta0, module.delta.detach())
    assert module.final_delta().abs().max() <= EPS * (1 + 1e-6)


# ---- bad inputs -----------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,match", [
    ("tbra", {"surrogates": []}, "surrogate"),
    ("tbra", {"ensemble": "vote"}, "sum, sequential, momentum"),
    ("qbra", {"max_queries": 0}, "max_queries"),
    ("qbra", {"norm": "l2"}, "linf"),
])
def test_bad_inputs_rejected(name, kwargs, match):
    model = build_model("small_cnn", 4, 1, 16, (0.5,), (0.5,))
    first = kwargs.pop("surrogates", [model]) if name == "tbra" else QueryOracle(model, 10)
    cls = REACTIVATIONS.get(name)
    # As the runner does: values checked against the typed signature, then the module built.
    with pytest.raises(ConfigError, match=match):
        cls(first, (1, 16, 16), 0, **validate_params(name, cls, kwargs))
