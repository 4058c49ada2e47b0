"""Errors that mean "the user asked for something that cannot work".

The CLI turns a :class:`ConfigurationError` into one line on stderr and exit status 2, never a traceback.
"""

import numbers
from collections.abc import Mapping


class ConfigurationError(ValueError):
    """A user-supplied setting is invalid; the message names the bad value and what is allowed."""


class CheckpointError(ConfigurationError):
    """A checkpoint cannot be used (damaged, edited, or not written by hyperrl); the CLI prefixes the file."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, file-size limit); the previous one is kept."""


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the run stops before anything is checkpointed."""


def require_positive(name: str, value, *, integer: bool = False) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is a positive number (an integer when ``integer``)."""
    kind = "a positive integer" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name}={value!r} is not allowed: expected {kind}")
    if integer and not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{name}={value!r} is not allowed: expected {kind}")
    if not value > 0:
        raise ConfigurationError(f"{name}={value!r} is not allowed: expected {kind}")


def require_sequence(name: str, values, expected: str) -> tuple:
    """Return ``values`` as a tuple; a scalar, ``None``, a string or a mapping raises :class:`ConfigurationError`
    ("expected ``expected``") instead of the ``TypeError`` (or the tuple of characters or keys) of ``tuple(values)``."""
    if not isinstance(values, (str, bytes, Mapping)):
        try:
            return tuple(values)
        except TypeError:
            pass
    raise ConfigurationError(f"{name}={values!r} is not allowed: expected {expected}")


def require_positive_sizes(name: str, values) -> tuple[int, ...]:
    """Validate a sequence of layer sizes; returns it as a tuple."""
    values = require_sequence(name, values, "a list of positive integers")
    for v in values:
        require_positive(f"{name} entry", v, integer=True)
    return values
