"""Choosing a network: a preset of the paper by name, or a network class with its settings.

Every network setting of an algorithm (SAC/TD3's ``critic``; MetaSAC's and PEARL's ``policy``, ``critic`` and
``value``; MAML's ``policy``) takes one of:

- a preset name, e.g. ``sa_hyper`` or ``mlp_large``: a class and the paper's settings for it;
- ``{"class_path": "hyperrl.nn.SAHyperCritic", "init_args": {...}}``: a network class (a subclass of the kind's
  base class; a name exported by :mod:`hyperrl.nn` may be given short) and its keyword settings. The ``hyperrl``
  command builds this form from ``--model.init_args.critic SAHyperCritic
  --model.init_args.critic.primary_widths [64,64,128]``, validates ``init_args`` against the class's signature, and
  drops the settings the new class does not take when a command line switches the class;
- in Python, also the class itself or ``functools.partial(cls, **settings)``.

The sizes that come from the environment (``observation_dim``, ``action_dim``, ...) are the kind's positional
arguments and are never settings. An algorithm may also own a keyword setting of the network (MetaSAC's
``tanh_log_prob``): a network's own value for it must then be ``None`` (its default) or agree.
"""

from __future__ import annotations

import functools
import inspect
import pydoc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from hyperrl.errors import ConfigurationError
from hyperrl.nn.hyper import accepted_options, check_options, option_parameters


def qualified_name(cls: type) -> str:
    """The class path a config names ``cls`` by: ``hyperrl.nn.SAHyperCritic`` for a class :mod:`hyperrl.nn` exports
    (the path jsonargparse writes too), else its module's path."""
    import hyperrl.nn

    if getattr(hyperrl.nn, cls.__name__, None) is cls:
        return f"hyperrl.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class NetworkKind:
    """One kind of network an algorithm chooses (``critic``, ``policy``, ...): its base class, its presets
    (name -> ``(class, settings)``) and the positional arguments every class of the kind takes first."""

    kind: str
    base: type[nn.Module]
    presets: Mapping[str, tuple[type[nn.Module], dict[str, Any]]]
    positional: tuple[str, ...]

    def _allowed(self) -> str:
        return f"one of {', '.join(self.presets)}, or a class_path to a subclass of {self.base.__name__}"

    def _class(self, class_path: Any) -> type[nn.Module]:
        cls = class_path if isinstance(class_path, type) else None
        if isinstance(class_path, str):
            import hyperrl.nn

            try:
                cls = getattr(hyperrl.nn, class_path, None) if "." not in class_path else pydoc.locate(class_path)
            except pydoc.ErrorDuringImport as exc:
                raise ConfigurationError(f"{self.kind} class_path {class_path!r} cannot be imported: "
                                         f"{type(exc.value).__name__}: {exc.value}") from None
            if cls is None:
                raise ConfigurationError(
                    f"{self.kind} class_path {class_path!r} is not allowed: no such class (a full import path, or a "
                    f"name exported by hyperrl.nn)"
                )
        if not (isinstance(cls, type) and issubclass(cls, self.base)) or cls is self.base:
            raise ConfigurationError(
                f"{self.kind} class_path {getattr(class_path, '__name__', class_path)!r} is not allowed: expected a "
                f"subclass of {self.base.__name__} (e.g. {qualified_name(next(iter(self.presets.values()))[0])})"
            )
        return cls

    def spec(self, value: Any) -> str | dict[str, Any]:
        """``value`` as plain data, what hyperparameters and configs hold: a preset name, or
        ``{"class_path": ..., "init_args": {...}}``. Raises a one-line :class:`ConfigurationError` for anything
        else, an unknown name, class or setting."""
        if isinstance(value, str):
            if value not in self.presets:
                raise ConfigurationError(f"unknown {self.kind} {value!r}; allowed: {self._allowed()}")
            return value
        if isinstance(value, Mapping) and "class_path" in value:
            unknown = sorted(set(value) - {"class_path", "init_args"})
            if unknown:
                raise ConfigurationError(
                    f"{self.kind} {unknown[0]!r} is not allowed: a {self.kind} mapping has class_path and init_args"
                )
            cls, init_args = self._class(value["class_path"]), value.get("init_args") or {}
        elif isinstance(value, type):
            cls, init_args = self._class(value), {}
        elif isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
            cls, init_args = self._class(value.func), dict(value.keywords)
        else:
            raise ConfigurationError(f"{self.kind}={value!r} is not allowed: expected {self._allowed()}")
        if not isinstance(init_args, Mapping):
            raise ConfigurationError(f"{self.kind} init_args={init_args!r} is not allowed: expected a mapping")
        check_options(self.kind, cls.__name__, self.options(cls), dict(init_args))
        return {"class_path": qualified_name(cls), "init_args": dict(init_args)}

    def plain(self, value: Any) -> Any:
        """:meth:`spec` of a name, mapping, class or ``functools.partial`` of a class; any other callable unchanged
        (the one jsonargparse builds from ``class_path``/``init_args``, whose config the CLI saves as the
        hyperparameters instead)."""
        if isinstance(value, (str, Mapping, type)) or (
            isinstance(value, functools.partial) and isinstance(value.func, type)
        ):
            return self.spec(value)
        return value

    def sizes(self, cls: type) -> tuple[str, ...]:
        """The names ``cls`` gives the kind's positional arguments: its first ``len(positional)`` ``__init__``
        arguments, whatever they are called (as jsonargparse reads a callable's arguments)."""
        names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                 if n != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return tuple(names[: len(self.positional)])

    def options(self, cls: type) -> list[str]:
        """The keyword settings a class of this kind takes (every ``__init__`` argument but the positional ones)."""
        return accepted_options(cls, self.sizes(cls))

    def resolve(self, value: Any) -> tuple[type[nn.Module], dict[str, Any]]:
        """The class and keyword settings that ``value`` (any form above) stands for."""
        spec = self.spec(value)
        if isinstance(spec, str):
            cls, settings = self.presets[spec]
            return cls, dict(settings)
        return self._class(spec["class_path"]), dict(spec["init_args"])

    def settings(self, value: Any) -> tuple[type[nn.Module], dict[str, Any]]:
        """The class and every keyword setting ``value`` builds it with, the class's defaults included (sequences as
        lists): two values with equal results build the same network."""
        cls, given = self.resolve(value)
        defaults = {name: p.default for name, p in option_parameters(cls, self.sizes(cls)).items()
                    if p.default is not inspect.Parameter.empty}

        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

        return cls, {name: plain(v) for name, v in {**defaults, **given}.items()}

    def label(self, value: Any) -> str:
        """A short name for reports: the preset name or the class name."""
        return value if isinstance(value, str) else self.resolve(value)[0].__name__

    def build(self, value: Any, *sizes: Any, owned: Mapping[str, Any] | None = None, **overrides: Any) -> nn.Module:
        """One network: ``cls(*sizes, **settings)``. ``overrides`` replace settings (e.g. a smaller width);
        ``owned`` are settings the algorithm decides, which the network's own settings may leave ``None`` or repeat
        but not contradict."""
        cls, settings = self.resolve(value)
        options = self.options(cls)
        check_options(self.kind, value if isinstance(value, str) else cls.__name__, options, overrides)
        settings.update(overrides)
        for name, decided in (owned or {}).items():
            if name not in options:
                raise ConfigurationError(
                    f"{self.kind} {cls.__name__} is not allowed here: it takes no {name}, which the algorithm sets"
                )
            given = settings.get(name)
            if given is not None and given != decided:
                raise ConfigurationError(
                    f"{self.kind} init_args {name}={given!r} is not allowed: the algorithm sets {name}={decided!r} "
                    f"(change it there, or leave the {self.kind}'s {name} null)"
                )
            settings[name] = decided
        return cls(*sizes, **settings)

    def with_settings(self, name: str, settings: Mapping[str, Any] | None = None, **more: Any) -> str | dict[str, Any]:
        """Preset ``name`` with some settings changed, as ``class_path``/``init_args`` (the name alone when none
        change): ``CRITIC.with_settings("mlp", hidden=[64])`` is MLPCritic with ``hidden=[64]``. Also how an older
        checkpoint's ``<setting>: name`` with ``<setting>_kwargs`` is read."""
        changed = {**(settings or {}), **more}
        if not changed:
            return self.spec(name)
        cls, defaults = self.resolve(name)
        return self.spec({"class_path": qualified_name(cls), "init_args": {**defaults, **changed}})


__all__ = ["NetworkKind", "qualified_name"]
