"""Typed parameters: a method's `__init__` signature is its schema.

Every parameter a user can set (a defense's, a re-activation method's, a
trigger's, a cell's) is declared once, as a type hint with its range, using
jsonargparse's restricted types (the library Lightning's own CLI validates
with). `validate_params` checks values from the command line or a grid
against those hints before anything runs and raises a one-line `ConfigError`
naming the method, the parameter, the value and what is allowed.

    from benchmark.extension.schema import NonNegativeInt, PositiveFloat
    def __init__(self, model, num_classes: int, ..., epochs: NonNegativeInt = 100,
                 lr: PositiveFloat = 0.01): ...

Cross-parameter rules (an epsilon whose range depends on the norm, one of two
options but not both) stay explicit checks in the method.
"""
from __future__ import annotations

import collections.abc
import functools
import math
import inspect
import operator
import types
import typing
from typing import Any, Literal, Union

from jsonargparse import ArgumentParser
from jsonargparse.typing import (ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, OpenUnitInterval,
                                 PositiveFloat, PositiveInt, restricted_number_type)

from benchmark.errors import ConfigError

# Ranges used across the suite, beside jsonargparse's own (PositiveInt,
# NonNegativeInt, PositiveFloat, NonNegativeFloat, OpenUnitInterval (0, 1),
# ClosedUnitInterval [0, 1]).
Fraction = restricted_number_type("Fraction", float, [(">", 0), ("<=", 1)])          # (0, 1]
Momentum = restricted_number_type("Momentum", float, [(">=", 0), ("<", 1)])           # [0, 1)
LinfBudget = OpenUnitInterval   # an L-inf epsilon in [0, 1] pixel units: (0, 1)

__all__ = ["PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "OpenUnitInterval",
           "ClosedUnitInterval", "Fraction", "Momentum", "LinfBudget", "validate_params", "check_value",
           "describe", "schema", "plain"]

_OPERATORS = {operator.gt: ">", operator.ge: ">=", operator.lt: "<", operator.le: "<=", operator.eq: "==",
              operator.ne: "!="}


def describe(hint: Any) -> str:
    """What a type hint allows, in words: 'an int > 0', 'one of: a, b'."""
    if hint is inspect.Parameter.empty or hint is Any:
        return "any value"
    restrictions = getattr(hint, "_restrictions", None)
    if restrictions is not None:
        join = f" {getattr(hint, '_join', 'and')} "
        base = hint._type.__name__
        return f"a{'n' if base[0] in 'aeiou' else ''} {base} " + join.join(
            f"{_OPERATORS.get(op, str(op))} {ref}" for op, ref in restrictions)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, collections.abc.Sequence):
        inner = [a for a in args if a is not Ellipsis]
        return "a list" + (f" of ({describe(inner[0])})" if inner else "")
    if origin is dict:
        return "a mapping" + (f" of {describe(args[0])} to ({describe(args[1])})" if args else "")
    if hint is bool:
        return "true or false"
    if isinstance(hint, type):
        article = "an" if hint.__name__[0] in "aeiou" else "a"
        return f"{article} {hint.__name__}"
    return str(hint)


@functools.lru_cache(maxsize=None)
def _parser(hint: Any) -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=hint)
    return parser


def plain(value: Any) -> Any:
    """Restricted-number instances and tuples back to JSON's builtins, so
    configs hash and serialise as the user wrote them."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if isinstance(value, tuple) else [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_value(owner: str, name: str, value: Any, hint: Any) -> Any:
    """`value` checked against `hint`; returns it converted (a YAML int for a
    float parameter becomes a float), or raises a one-line ConfigError."""
    if hint is inspect.Parameter.empty or hint is Any:
        return value
    if isinstance(value, bool) and hint in (int, float) or (
            isinstance(value, bool) and getattr(hint, "_restrictions", None) is not None):
        raise ConfigError(f"{owner}: {name}={value!r} is not allowed; must be {describe(hint)}")
    try:
        parsed = _parser(hint).parse_object({"value": value}).value
    except Exception:  # noqa: BLE001  (jsonargparse raises several kinds; all mean "not allowed")
        raise ConfigError(f"{owner}: {name}={value!r} is not allowed; must be {describe(hint)}") from None
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise ConfigError(f"{owner}: {name}={value!r} is not allowed; must be a finite {describe(hint)[2:]}")
    return plain(parsed)


def schema(cls: type, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The user-settable parameters of `cls.__init__` by name (type hints
    resolved), without `skip` (what the runner supplies)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  (an unresolvable hint: fall back to the raw annotations)
        hints = {}
    params = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[name] = p.replace(annotation=hints.get(name, p.annotation))
    return params


def validate_params(owner: str, cls: type, params: dict, skip: tuple[str, ...] = ()) -> dict:
    """Check user-given `params` of `cls` against its typed `__init__`:
    unknown names and values outside their hint are one-line ConfigErrors
    naming `owner` (e.g. "defense 'ft'"). Returns the converted values."""
    if not isinstance(params, dict):
        raise ConfigError(f"{owner}: parameters must be a mapping of name to value, got {params!r}")
    allowed = schema(cls, skip)
    out = {}
    for name, value in params.items():
        if name not in allowed:
            raise ConfigError(f"{owner}: unknown parameter {name!r}; allowed: {', '.join(allowed) or 'none'}")
        out[name] = check_value(owner, name, value, allowed[name].annotation)
    return out
