"""Every method's `__init__` signature is its parameter schema: each
user-settable parameter has a type hint with its range and a default inside
it, and a value outside the range is a one-line ConfigError naming the
method, the parameter and the value, before anything is built."""
import inspect
import types
import typing
from typing import Literal, Union

import pytest

from benchmark.cell import CellSpec
from benchmark.errors import ConfigError
from benchmark.extension.schema import check_value, schema, validate_params
from benchmark.triggers import TRIGGERS
from lightning_modules.attacks.base import AttackModule
from lightning_modules.defenses import DEFENSES, DefenseModule
from lightning_modules.reactivation import REACTIVATIONS, ReactivationModule

# What the runner supplies itself; everything else in a signature is the user's.
DEFENSE_SKIP = ("model", "num_classes", "target_label", "augment")
REACTIVATION_SKIP = ("model", "oracle", "surrogates", "image_shape", "target_label", "epsilon", "norm", "seed")
TRIGGER_SKIP = ("image_shape",)

METHODS = ([(f"defense {name!r}", DEFENSES.get(name), DEFENSE_SKIP) for name in DEFENSES.names()]
           + [(f"re-activation {name!r}", REACTIVATIONS.get(name), REACTIVATION_SKIP)
              for name in REACTIVATIONS.names()]
           + [(f"trigger {name!r}", TRIGGERS.get(name), TRIGGER_SKIP) for name in TRIGGERS.names()])
IDS = [owner for owner, _, _ in METHODS]


def parameters(cls, skip):
    return [(name, p.annotation, p.default) for name, p in schema(cls, skip).items()]


def without_none(hint):
    """X for `X | None`, else the hint itself."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def restricted(hint) -> bool:
    return getattr(hint, "_restrictions", None) is not None


def violations(hint) -> list:
    """For each restriction of a restricted number type, a value of its base
    type that breaks that restriction (the boundary itself where it can)."""
    base, out = hint._type, []
    for op, ref in hint._restrictions:
        steps = (0, -1, 1) if base is int else (0, -1, 1, -0.5, 0.5)
        out.append(next(base(ref + d) for d in steps if not op(base(ref + d), ref)))
    return out


def number_typed(hint) -> bool:
    hint = without_none(hint)
    return hint in (int, float) or (restricted(hint) and hint._type in (int, float))


def assert_one_line_error(owner, cls, skip, name, value):
    with pytest.raises(ConfigError) as err:
        validate_params(owner, cls, {name: value}, skip)
    message = str(err.value)
    assert "\n" not in message
    assert owner in message and f"{name}={value!r}" in message, message


@pytest.mark.parametrize("cls", [DefenseModule, ReactivationModule, AttackModule]
                         + [cls for _, cls, _ in METHODS])
def test_type_hints_resolve(cls):
    # An unresolvable hint would leave schema() with bare strings and no ranges.
    hints = typing.get_type_hints(cls.__init__)
    assert not any(isinstance(h, str) for h in hints.values())


@pytest.mark.parametrize("owner,cls,skip", METHODS, ids=IDS)
def test_every_parameter_is_typed_with_a_default_in_range(owner, cls, skip):
    params = parameters(cls, skip)
    for name, hint, default in params:
        assert hint is not inspect.Parameter.empty, f"{owner}: {name} has no type hint"
        assert default is not inspect.Parameter.empty, f"{owner}: {name} has no default"
        check_value(owner, name, default, hint)
    # the defaults together are a valid configuration
    validate_params(owner, cls, {name: default for name, _, default in params}, skip)


@pytest.mark.parametrize("owner,cls,skip", METHODS, ids=IDS)
def test_out_of_range_values_are_one_line_errors(owner, cls, skip):
    for name, hint, default in parameters(cls, skip):
        inner = without_none(hint)
        if restricted(inner):
            for value in violations(inner):
                assert_one_line_error(owner, cls, skip, name, value)
        element = typing.get_args(inner)[0] if typing.get_origin(inner) is tuple else None
        if restricted(element):
            for value in violations(element):
                assert_one_line_error(owner, cls, skip, name, (value, *default[1:]))
        if typing.get_origin(inner) is Literal:
            assert_one_line_error(owner, cls, skip, name, "nonsense")
        if number_typed(hint):
            assert_one_line_error(owner, cls, skip, name, "many")


@pytest.mark.parametrize("owner,cls,skip", METHODS, ids=IDS)
def test_unknown_parameter_is_a_one_line_error(owner, cls, skip):
    with pytest.raises(ConfigError, match="unknown parameter 'nonsense'") as err:
        validate_params(owner, cls, {"nonsense": 1}, skip)
    assert "\n" not in str(err.value) and owner in str(err.value)


def test_every_registered_method_has_a_restricted_parameter():
    # Guards the tests above against vacuously passing: each method declares ranges.
    for owner, cls, skip in METHODS:
        if owner == "defense 'none'":  # takes only epochs, fixed at 0 by its own check
            continue
        assert any(restricted(without_none(h)) for _, h, _ in parameters(cls, skip)), owner


# ---- through the cell, as a grid or the command line gives them ------------------
def cell(**fields) -> CellSpec:
    return CellSpec(dataset="synthetic", **fields)


def test_cell_rejects_an_out_of_range_defense_parameter():
    with pytest.raises(ConfigError, match="epochs") as err:
        cell(defense_params={"ft": {"epochs": -3}}).validate()
    assert "\n" not in str(err.value) and "ft" in str(err.value) and "-3" in str(err.value)


@pytest.mark.parametrize("params,name", [({"lr": -1}, "lr"), ({"epochs": "many"}, "epochs"),
                                         ({"nonsense": 1}, "nonsense")])
def test_cell_defense_parameter_errors_are_one_line(params, name):
    with pytest.raises(ConfigError) as err:
        cell(defense_params={"ft": params}).validate()
    message = str(err.value)
    assert "\n" not in message and name in message and "'ft'" in message


def test_cell_converts_checked_values():
    spec = cell(defense_params={"ft": {"epochs": 2, "lr": 1}})
    spec.validate()
    assert spec.defense_params["ft"] == {"epochs": 2, "lr": 1.0}
    assert isinstance(spec.defense_params["ft"]["lr"], float)


def test_cell_budget_depends_on_the_norm():
    with pytest.raises(ConfigError, match="epsilon") as err:
        cell(epsilon=2.0).validate()  # L-inf budgets are in (0, 1) pixel units
    assert "\n" not in str(err.value)
    cell(norm="l2", epsilon=2.0).validate()
