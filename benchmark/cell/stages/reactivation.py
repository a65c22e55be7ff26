"""Stages `reactivation` (trigger + delta against a model) and `guaa` (its
control: the same search on clean inputs, evaluated on clean non-target test
images).

What a method may touch follows its declared access: the victim itself
(white-box), a counting query oracle around it (query), or only the
attacker's surrogates (transfer: defended copies of the attacker's own
backdoored model, possibly of another architecture; the victim is then used
for evaluation alone)."""
from __future__ import annotations

import inspect
from typing import Callable

import benchmark.training as training_module
import lightning_modules.reactivation.oracle as oracle_module
from benchmark.errors import ConfigError
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.spec import SURROGATE_KEYS
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import QUERY, TRANSFER, WHITE_BOX

# Re-activation search and every evaluation run in full precision, as the
# authors' code does; bf16 autocast is for training weights only.
SEARCH_PRECISION = "32-true"


def kind(use_trigger: bool) -> str:
    return "reactivation" if use_trigger else "guaa"


def label(method: str, model_label: str, epsilon: float | None = None) -> str:
    """A job's label; `epsilon`: a point of the cell's ε curve (the cell's
    own budget has the plain label)."""
    return f"{method} vs {model_label}" if epsilon is None else f"{method}@eps={epsilon:g} vs {model_label}"


def reactivation_module(ctx: CellContext, method: str, target, params: dict, epsilon: float | None = None):
    s = ctx.spec
    try:
        return REACTIVATIONS.get(method)(target, ctx.dm.image_shape, s.target_label,
                                         epsilon=s.epsilon if epsilon is None else epsilon,
                                         norm=s.norm, seed=s.seed, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for re-activation {method!r}: {exc}") from None


def attack_target(cls, victim, params: dict, surrogates: list | None):
    """The victim (white-box), a query oracle around it (query) or the
    surrogates (transfer). With surrogates=None a stand-in is built for
    validating parameters."""
    from lightning_modules.reactivation.oracle import QueryOracle

    if cls.access == WHITE_BOX:
        return victim
    if cls.access == QUERY:
        budget = params.get("max_queries", inspect.signature(cls).parameters["max_queries"].default)
        if not isinstance(budget, int) or budget <= 0:
            raise ConfigError(f"query budget max_queries must be a positive integer, got {budget!r}")
        return QueryOracle(victim, budget)
    if cls.access == TRANSFER:
        return [victim] if surrogates is None else surrogates
    raise ConfigError(f"re-activation {cls.__name__} declares unknown access {cls.access!r}")


def reactivation_job(ctx: CellContext, method: str, attack: StageJob, victim: StageJob, model_label: str,
                     use_trigger: bool, surrogate_jobs: Callable[..., list[StageJob]],
                     epsilon: float | None = None) -> StageJob | None:
    """None for a transfer method with nothing to transfer from (e.g. a cell
    with one defense). `surrogate_jobs(method, model_label, runner_params)`
    plans the attacker's defended copies. `epsilon`: another budget than the
    cell's (a point of its ε curve)."""
    cls = REACTIVATIONS.get(method)
    params = dict(ctx.spec.reactivation_params.get(method, {}))
    runner_params = {k: params.pop(k) for k in SURROGATE_KEYS if k in params}
    if runner_params and cls.access != TRANSFER:
        raise ConfigError(f"{', '.join(runner_params)} only apply to transfer methods, not {method!r}")
    deps = {"model": victim, "attack": attack}
    if cls.access == TRANSFER:
        surrogates = surrogate_jobs(method, model_label, runner_params)
        if not surrogates:
            return None
        deps.update({f"surrogate:{j.label}": j for j in surrogates})
    model_spec = victim.config["model"]
    method_config = ctx.planned(("reactivation", method, model_spec, epsilon), lambda: reactivation_module(
        ctx, method, attack_target(cls, ctx.plan_model(model_spec), params, surrogates=None), params,
        epsilon).config())
    config = {"method": method, "params": method_config, "inputs": "trigger" if use_trigger else "clean",
              "attacker_samples": ctx.spec.attacker_samples,
              **({"surrogates": runner_params} if runner_params else {}),
              "code": code_fingerprint(cls, REACTIVATIONS.origin(method), oracle_module, training_module)}
    return StageJob(kind(use_trigger), label(method, model_label, epsilon), config, deps,
                    lambda inputs: run_reactivation(ctx, method, params, use_trigger, inputs, epsilon))


def surrogate_names(ctx: CellContext, method: str, model_label: str, params: dict,
                    reference_labels: tuple[str, ...]) -> tuple[str, list[str]]:
    """(architecture, defense names) of the attacker's surrogates for a
    victim defended by `model_label`; no surrogates for the reference rows."""
    s = ctx.spec
    if model_label in reference_labels:
        return s.arch, []
    arch = params.get("surrogate_arch") or s.arch
    names = params.get("surrogates")
    if names is None:  # default: every other defense of this cell
        names = [d for d in s.defenses if d not in (model_label, "none")]
    for name in names:
        ctx.family.defenses.get(name)
        if name == model_label and arch == s.arch:
            raise ConfigError(f"{method}: surrogate {name!r} is the victim's own defense on the same "
                              f"architecture; that is white-box re-activation, not transfer")
        if name == "none":
            raise ConfigError(f"{method}: surrogate 'none' is the attacker's undefended model; name a defense")
    return arch, list(names)


def run_reactivation(ctx: CellContext, method: str, params: dict, use_trigger: bool, inputs,
                     epsilon: float | None = None) -> tuple[dict, dict]:
    s, dm = ctx.spec, ctx.dm
    ctx.seed_everything()
    victim = ctx.load_model(inputs["model"])
    cls = REACTIVATIONS.get(method)
    surrogates = [ctx.load_model(art) for role, art in sorted(inputs.items()) if role.startswith("surrogate:")]
    target = attack_target(cls, victim, params, surrogates)
    module = reactivation_module(ctx, method, target, params, epsilon)
    h = module.hparams
    idx = dm.attacker_indices(ctx.attacker_pool, h.num_samples, s.seed)
    data = dm.attacker_set(idx, ctx.trigger if use_trigger else None)
    loader = dm.loader(data, shuffle=True, batch_size=min(h.batch_size, len(data)), drop_last=True, seed=s.seed)
    ctx.trainers.fit(module, loader, h.epochs, precision=SEARCH_PRECISION)
    delta = module.final_delta()
    metrics = ctx.evaluate_delta(victim, delta, use_trigger)
    for tag, snapshot in module.checkpoints().items():
        metrics[f"test/asr@{tag}"] = ctx.evaluate_delta(victim, snapshot, use_trigger)["test/asr"]
    metrics["delta_linf"] = float(delta.abs().max())
    if cls.access == QUERY:
        metrics["queries"] = target.queries  # the oracle's own count
    return metrics, {"delta": delta}
