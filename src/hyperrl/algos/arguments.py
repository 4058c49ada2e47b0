"""Typed settings: a module's ``__init__`` annotations are its value rules, for the CLI and for Python alike.

An argument annotated with a jsonargparse restricted number type (``PositiveInt``, ``NonNegativeInt``,
``PositiveFloat``, ``NonNegativeFloat``, ``ClosedUnitInterval``, ... or one made with ``restricted_number_type``),
a ``Literal[...]`` or ``bool`` (each optionally ``| None``) is validated by jsonargparse when the ``hyperrl``
command parses it. :func:`check_arguments` applies the same annotations to a module built in Python (a test, a
notebook, a checkpoint's hyperparameters), so both paths refuse the same values; its message is one line naming the
value and what is allowed. Only rules that relate two settings stay as code in the modules.
"""

from __future__ import annotations

import numbers
import re
import typing
from collections.abc import Callable, Mapping
from types import NoneType, UnionType
from typing import Any, Literal

from jsonargparse.typing import restricted_number_type

from hyperrl.errors import ConfigurationError

#: a seed numpy and gymnasium accept: ``0 <= v <= 2**32 - 1``
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)])

#: ``0 < v <= 1`` (a Polyak coefficient)
LeftOpenUnitInterval = restricted_number_type("LeftOpenUnitInterval", float, [(">", 0), ("<=", 1)])

_WORDS = {"v>0": "positive", "v>=0": ">= 0"}


def _describe_number(hint: type) -> str:
    expression = hint._expression
    integer = hint._type is int
    if expression in _WORDS:
        words = _WORDS[expression]
        if words == "positive":
            return "a positive integer" if integer else "a positive number"
        return f"an integer {words}" if integer else f"a number {words}"
    intervals = {"v>=0 and v<=1": "[0, 1]", "v>0 and v<=1": "(0, 1]", "v>0 and v<1": "(0, 1)"}
    if not integer and expression in intervals:
        return f"a number in {intervals[expression]}"
    kind, number = "an integer" if integer else "a number", r"(-?[\d.e+-]+)"
    single = re.fullmatch(rf"v([<>]=?){number}", expression)  # one bound: "a number > 1"
    if single:
        return f"{kind} {single.group(1)} {single.group(2)}"
    both = re.fullmatch(rf"v(>=?){number} and v(<=?){number}", expression)  # "a number in [1.5, 100]"
    if both:
        low, high = "[" if both.group(1) == ">=" else "(", "]" if both.group(3) == "<=" else ")"
        return f"{kind} in {low}{both.group(2)}, {both.group(4)}{high}"
    return f"{kind} with {expression}"


def _options(hint: Any) -> list[Any]:
    """The members of a union (``X | None``, ``Optional[X]``), else ``[hint]``."""
    if typing.get_origin(hint) in (typing.Union, UnionType):
        return list(typing.get_args(hint))
    return [hint]


def _is_restricted_number(hint: Any) -> bool:
    return isinstance(hint, type) and hasattr(hint, "_expression") and hasattr(hint, "_type")


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` satisfies ``hint``; ``None`` when ``hint`` is not a rule this module checks."""
    if hint is NoneType:
        return value is None
    if typing.get_origin(hint) is Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if _is_restricted_number(hint):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if hint._type is int and not isinstance(value, numbers.Integral):
            return False
        try:
            hint(value)
        except ValueError:
            return False
        return True
    return None


def _expected(options: list[Any]) -> str:
    words = []
    for hint in options:
        if hint is NoneType:
            words.append("null")
        elif typing.get_origin(hint) is Literal:
            words.append("one of " + ", ".join(str(o) for o in typing.get_args(hint)))
        elif hint is bool:
            words.append("true or false")
        elif _is_restricted_number(hint):
            words.append(_describe_number(hint))
    return " or ".join(words)


def check_arguments(function: Callable, arguments: Mapping[str, Any], prefix: str = "") -> None:
    """Raise :class:`ConfigurationError` for the first of ``arguments`` that its annotation in ``function``'s
    signature (or a dataclass's fields) refuses (restricted number types, ``Literal``, ``bool``, each optionally with
    ``None``); other annotations are left to the module's own checks. ``prefix`` goes before the name in the message
    (a settings group's ``"replay."``)."""
    hints = typing.get_type_hints(function)
    for name, hint in hints.items():
        if name == "return" or name not in arguments:
            continue
        options = _options(hint)
        verdicts = [_accepts(option, arguments[name]) for option in options]
        if any(v is None for v in verdicts) or any(verdicts):
            continue  # an annotation this module does not judge, or a value it accepts
        raise ConfigurationError(f"{prefix}{name}={arguments[name]!r} is not allowed: expected {_expected(options)}")
