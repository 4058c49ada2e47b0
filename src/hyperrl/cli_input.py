"""What a user types, read: argv normalised for jsonargparse (``--verbose`` alone, ``nan`` on the command line),
config files checked before jsonargparse reads them, the parser mode (OmegaConf interpolation), an environment or
context switched on the command line, and jsonargparse's multi-line reports condensed to the one line that names the bad value.
Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import os
import re

from hyperrl.errors import ConfigurationError, require_positive

#: the settings groups' names (``hyperrl.algos.settings``, whose import would import torch here; a test keeps them
#: equal)
SETTINGS_GROUPS = ("tasks", "replay", "sampling", "adaptation", "optim", "evaluation")
_GROUP_OPTION = re.compile(rf"--model\.(?:init_args\.)?({'|'.join(SETTINGS_GROUPS)})\.(\w+)")


class UsageError(Exception):
    """A command-line or configuration mistake caught by the argument parser."""


def one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line report to the line that names the bad value."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    unchosen = re.search(r"class_path 'hyperrl\.algos\.Algorithm'(?s:.*)NestedArg\(key='([\w.]+)'", str(message))
    if unchosen:  # a model setting, but no algorithm chosen: jsonargparse tried the abstract base class
        return (f"--model.{unchosen.group(1)} needs an algorithm first: give --config FILE or --model CLASS "
                "(e.g. --model SAC)")
    required = re.search(r"the following arguments are required: (?:\w+\.)?model\b", str(message))
    if required:  # e.g. a resume given only --ckpt_path: the checkpoint's run folder holds the config it ran with
        return ("no model given: give --config FILE (to resume a run, its config.yaml beside the checkpoints folder, "
                "with --ckpt_path) or --model CLASS (e.g. --model SAC)")
    network = _network_choice(lines)
    if network:
        return network
    ours = ("is not allowed", "unknown critic", "unknown environment", "environment '", "unknown option")
    unknown = next((re.search(r"Option '(\w+)[\w.]*' is not accepted", line) for line in lines
                    if "is not accepted" in line), None)
    classes = [re.search(r"class_path '([\w.]+)'", line) for line in lines]
    classes = [m.group(1) for m in classes if m]
    if unknown and classes:
        return _unknown_option(unknown.group(1), classes[-1])
    # an unknown setting in a settings group: on the command line, or in a config's mapping
    in_group = next((re.search(r"unrecognized arguments: --(\w+)\.(\w+)", line)
                     or re.search(r"Group '(\w+)' does not accept option '(\w+)'", line) for line in lines
                     if "unrecognized arguments: --" in line or "does not accept option" in line), None)
    if in_group and classes:
        return _unknown_option(in_group.group(2), classes[-1], group=in_group.group(1))
    for line in lines:
        if any(marker in line for marker in ours):
            return line[2:] if line.startswith("- ") else line
    typed = _typed_setting(str(message), lines) or _expected_type(lines)
    if typed:
        return typed
    keys = [(i, line.split('"')[1]) for i, line in enumerate(lines) if line.startswith('Parser key "')]
    if keys:  # a value none of a union setting's types accepts: the innermost such setting's types and value
        start, key = keys[-1]
        given = next((m.split(":", 1)[1].strip() for m in lines[start:] if m.startswith("Given value:")), None)
        subtypes = next((m.split(":", 1)[1].strip() for m in lines[start:] if m.startswith("Subtypes:")), None)
        if given is not None and subtypes is not None:
            return f"{key}={given} is not allowed: expected {_type_words(subtypes)}"
    for i, line in enumerate(lines):
        if line.startswith("Expected a <class") and "NoneType" not in line:
            keys = [m for m in lines[:i] if m.startswith('Parser key "')]
            key = keys[-1].split('"')[1] if keys else "value"
            return f"{key}: {line}"
        if line.startswith(("Option '", "Key '")) or "unrecognized arguments" in line or "does not exist" in line:
            return line
    return lines[0] if lines else "invalid arguments"


def _network_choice(lines: list[str]) -> str | None:
    """One line for a value that a network setting (a preset name, or a class with its settings,
    :mod:`hyperrl.nn.registry`) refuses: an unknown name or class, an unknown or mistyped setting of the class, or
    settings given to a preset name; else ``None``. The value may come from the command line (``--model.critic X``,
    ``--model.critic.hidden X``) or as a mapping (a config file, a sweep, a checkpoint)."""
    callable_type = r"(?:typing|collections\.abc)\.Callable\[\[.*\], ([\w.]+)\]"
    for i, line in enumerate(lines):
        choice = re.match(rf"Subtypes: \[typing\.Literal\[(.*)\], {callable_type}\]$", line)
        if not choice:
            continue
        keys = [m.split('"')[1] for m in lines[:i] if m.startswith('Parser key "')]
        end = next((j for j in range(i, len(lines)) if lines[j].startswith("Given value:")), None)
        if not keys or end is None:
            return None
        setting, base = keys[-1].rsplit(".", 1)[-1], choice.group(2).rsplit(".", 1)[-1]
        given = lines[end].split(":", 1)[1].strip()
        errors = "\n".join(lines[i:end])
        names = ", ".join(o.strip().strip("'\"") for o in choice.group(1).split(","))
        nested = re.match(r"NestedArg\(key='([\w.]+)', val=(.*)\)$", given)
        mapping = re.search(r"'class_path': '([\w.]+)'", given)
        if not (nested or mapping):
            return f"unknown {setting} {given!r}; allowed: one of {names}, or a class_path to a subclass of {base}"
        algorithm = [re.search(r"class_path '[\w.]*?(\w+)'", m) for m in lines[:i]]
        algorithm = next((f"--model {m.group(1)} " for m in reversed(algorithm) if m), "")
        cls = re.search(r"class_path='([\w.]+)'", errors)
        cls = cls.group(1).rsplit(".", 1)[-1] if cls else mapping.group(1) if mapping else base
        unknown = re.search(r"Option '(\w+)' is not accepted", errors)
        if unknown:
            return (f"unknown option {unknown.group(1)!r} for {setting} {cls} "
                    f"(hyperrl fit {algorithm}--model.{setting}.help {cls} lists them)")
        typed = re.search(r'Parser key "(\w+)":\n\s*Expected a <class \'(?:\w+\.)*(\w+)\'>\. '
                          r"Got value: (.*?)\.(?:\s|$)", errors)
        if typed:
            return f"{setting}.{typed.group(1)}={typed.group(3)} is not allowed: expected a {typed.group(2)}"
        if mapping:  # a class that cannot be imported, or not of this kind
            return (f"{setting} class_path {mapping.group(1)!r} is not allowed: expected a subclass of {base} (a full "
                    f"import path, or a name hyperrl.nn exports), or one of {names}")
        preset = re.search(r"Expected a dot import path string: (\w+)", errors)
        cls = _preset_class(base, preset.group(1)) if preset else None
        return (f"{setting}.{nested.group(1)}: the preset {setting} {preset.group(1) if preset else ''!r} takes no "
                f"settings: name its class with them (--model.{setting} {cls or 'CLASS'} "
                f"--model.{setting}.{nested.group(1)} ...)")
    return None


def _preset_class(base: str, name: str) -> str | None:
    """The class of preset ``name`` of the network kind whose base class is ``base`` (imported here, on an error)."""
    from hyperrl.nn import CRITIC, META_CRITIC, META_VALUE, POLICY

    for kind in (CRITIC, POLICY, META_CRITIC, META_VALUE):
        if kind.base.__name__ == base and name in kind.presets:
            return kind.presets[name][0].__name__
    return None


def _type_words(subtypes: str) -> str:
    """``[dict[str, typing.Any], <class 'NoneType'>]`` -> ``a mapping or null``."""
    words = {"dict": "a mapping", "list": "a list", "tuple": "a list", "NoneType": "null"}
    out = []
    for plain, generic in re.findall(r"<class '(?:[\w.]+\.)?(\w+)'>|(?:^|[\[ ,])(\w+)\[", subtypes):
        name = plain or generic
        word = words.get(name, f"{'an' if name[0] in 'aeiou' else 'a'} {name}")
        out += [word] if word not in out else []
    return " or ".join(out) or subtypes


def _expected_type(lines: list[str]) -> str | None:
    """``KEY=VALUE is not allowed: expected a float`` from the innermost ``Expected a <class 'float'>. Got value:
    VALUE`` of jsonargparse's report (a plain type's refusal, under the model's or an optional setting's union)."""
    for i, line in enumerate(lines):
        found = re.match(r"(?:- )?Expected a <class '(?:[\w.]+\.)?(\w+)'>\. Got value: (.*)$", line)
        if not found or found.group(1) == "NoneType":
            continue
        keys = [m.split('"')[1] for m in lines[:i] if m.startswith('Parser key "')]
        key = keys[-1] if keys else "value"
        own = max((j for j in range(i) if lines[j].startswith(f'Parser key "{key}"')), default=0)
        nullable = any(m.startswith("Subtypes:") and "NoneType" in m for m in lines[own:i])
        name = found.group(1)
        return (f"{key}={found.group(2)} is not allowed: expected {'an' if name[0] in 'aeiou' else 'a'} {name}"
                + (" or null" if nullable else ""))
    return None


def _number_words(name: str) -> str | None:
    """The words a Python caller's message uses for restricted number type ``name`` (``PositiveInt`` -> ``a
    positive integer``: ``hyperrl.algos.arguments``), so both paths say the same; ``None`` for another type."""
    import jsonargparse.typing

    from hyperrl.algos import arguments

    for module in (arguments, jsonargparse.typing):
        hint = getattr(module, name, None)
        if arguments._is_restricted_number(hint):
            return arguments._describe_number(hint)
    return None


def _typed_setting(message: str, lines: list[str]) -> str | None:
    """``KEY=VALUE is not allowed: expected TYPE (RULE)`` for a value that a typed setting refuses (a restricted type
    of ``jsonargparse.typing`` such as ``PositiveInt``, or a ``Literal``), else ``None``."""
    for i, line in enumerate(lines):
        typed = re.match(r"(?:- )?Not of type (\w+): (.*)$", line)
        literal = re.match(r"(?:- )?Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$", line)
        if not (typed or literal):
            continue
        keys = [m.split('"')[1] for m in lines[:i] if m.startswith('Parser key "')]
        key = keys[-1] if keys else "value"
        if literal:
            allowed = ", ".join(o.strip().strip("'\"") for o in literal.group(1).split(","))
            return f"{key}={literal.group(2)} is not allowed: expected one of {allowed}"
        given = re.search(rf"NestedArg\(key='{re.escape(key)}', val='(.*?)'\)", message)
        inline = re.match(r"(.+?) (?:does not conform|not an? )", typed.group(2))
        later = [m.split(":", 1)[1].strip() for m in lines[i:] if m.startswith("Given value:")]
        bad_literal = re.search(r"invalid literal for \w+\(\)(?: with base \d+)?: '(.*)'$", typed.group(2))
        value = (given.group(1) if given else inline.group(1) if inline else bad_literal.group(1) if bad_literal
                 else later[0] if later else "?")
        rule = re.search(r"does not conform to restriction (.+)$", typed.group(2))
        own = max((j for j in range(i) if lines[j].startswith(f'Parser key "{key}"')), default=0)
        nullable = any(m.startswith("Subtypes:") and "NoneType" in m for m in lines[own:i])  # an Optional setting
        value = {".nan": "nan", ".inf": "inf", "-.inf": "-inf"}.get(value, value)  # as typed (non_finite_as_yaml)
        words = _number_words(typed.group(1))
        expected = words or typed.group(1) + (f" ({rule.group(1)})" if rule else "")
        return f"{key}={value} is not allowed: expected {expected}" + (" or null" if nullable else "")
    return None


def _unknown_option(key: str, class_path: str, group: str | None = None) -> str:
    """``unknown option 'critc' for hyperrl.algos.SAC: closest critic, critic_lr``, from the options
    jsonargparse reads off the class's signature; ``group``: the option was given in that settings group. A setting
    that now lives in a group is named with its new place."""
    import difflib
    import importlib

    from jsonargparse import ArgumentParser

    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger

    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, fail_untyped=False)
    options = list(parser.get_defaults().keys())
    groups = dict.fromkeys(k.split(".", 1)[0] for k in options if "." in k)
    listing = (f"--trainer.callbacks.help {class_path}" if issubclass(cls, Callback) else
               f"--trainer.logger.help {class_path}" if issubclass(cls, Logger) else f"--model.help {name}")
    if group is not None:
        valid = [k.split(".", 1)[1] for k in options if k.startswith(f"{group}.")]
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"expected one of {', '.join(valid)}"
        return f"unknown option {key!r} in {group} of {class_path}: {hint} (hyperrl fit {listing} lists them)"
    moved = next((g for g in groups if f"{g}.{key}" in options), None)
    if moved is not None:  # the flat form before the settings were grouped
        return (f"{key} is now {moved}.{key} in {class_path}: give --model.init_args.{moved}.{key}, or "
                f"{moved}: {{{key}: ...}} under init_args in a config (hyperrl fit {listing} lists them)")
    valid = [k for k in options if "." not in k] + list(groups)
    network = key.removesuffix("_kwargs")
    if key.endswith("_kwargs") and network in valid:  # the form before networks took class_path/init_args
        return (f"{key} is no longer a setting of {class_path}: give the {network}'s settings with its class, "
                f"{network}: {{class_path: ..., init_args: {{...}}}} (docs/cli.md, 'Choosing a network')")
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"expected one of {', '.join(valid)}"
    return f"unknown option {key!r} for {class_path}: {hint} (hyperrl fit {listing} lists them)"


def configuration_error_in(exc: BaseException, kinds: tuple[type[BaseException], ...] = ()) -> BaseException | None:
    """The first :class:`ConfigurationError` (or one of ``kinds``) in the chain of causes of ``exc``."""
    kinds = (ConfigurationError, *kinds)
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def model_options_given(args) -> list[str]:
    """The model settings named on the command line: ``--model.lr 1`` / ``--model.init_args.lr=1`` give ``"lr"``,
    ``--model.replay.batch_size 8`` gives ``"replay.batch_size"`` (``--model.replay {...}``: ``"replay"``),
    ``--model hyperrl.algos.TD3`` gives ``"class_path"``."""
    names = []
    for token in args:
        token = str(token)
        if token == "--model" or token.startswith("--model="):
            names.append("class_path")
        elif token.startswith("--model."):
            name = token[len("--model."):].split("=", 1)[0]
            name = name[len("init_args."):] if name.startswith("init_args.") else name
            group, _, field = name.partition(".")
            # a settings group's field by its dotted name (replay.batch_size); any other setting by its own name
            names.append(f"{group}.{field.split('.', 1)[0]}" if group in SETTINGS_GROUPS and field else group)
    return list(dict.fromkeys(names))


def drop_switched_settings(config, options: list[str]) -> None:
    """A setting with companion ``<name>_kwargs`` (``env``/``env_kwargs``, ``context``/``context_kwargs``) switched on
    the command line (``--model.env Hopper-v5``) takes its own defaults: the config file's ``<name>_kwargs`` belong to
    the value it replaces. ``<name>_kwargs`` given on the command line with it stay."""
    model = config.get("model") if config is not None else None
    init = model.get("init_args") if model is not None and hasattr(model, "get") else None
    if init is None:
        return
    for name in options:
        settings = f"{name}_kwargs"
        if settings in init and settings not in options:
            init[settings] = None


#: numpy's seed range, which Lightning's seed_everything passes its seed to.
SEED_RANGE = (0, 2**32 - 1)


def check_seed_everything(seed) -> None:
    """``seed_everything`` must be true, false or an integer numpy accepts."""
    if seed is None or isinstance(seed, bool):
        return
    if not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigurationError(
            f"seed_everything={seed!r} is not allowed: expected true, false or an integer "
            f"{SEED_RANGE[0]} <= seed <= {SEED_RANGE[1]} (numpy's seed range)"
        )


def check_trainer_settings(config) -> None:
    """Reject settings Lightning accepts but fails on later: ``val_check_interval 0`` (a ZeroDivisionError after the
    first training step), a precision the modules do not support (``16-mixed`` on a CPU would run as ``bf16-mixed``)."""
    from hyperrl.algos.base import SUPPORTED_PRECISIONS

    trainer = config.get("trainer") or {}
    if trainer.get("val_check_interval") is not None:
        require_positive("trainer.val_check_interval", trainer.get("val_check_interval"))
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in (*SUPPORTED_PRECISIONS, "bf16"):
        raise ConfigurationError(
            f"--trainer.precision {precision} is not allowed: expected one of {', '.join(SUPPORTED_PRECISIONS)} "
            "(fp16 needs loss scaling, which these updates do not use; '-true' precisions would cast the fp32 targets "
            "and replay data)"
        )


def check_config_files(args: list[str]) -> None:
    """Each ``--config FILE`` must hold a YAML mapping of settings; a binary, empty or non-mapping file raises
    :class:`ConfigurationError` naming it (jsonargparse would raise a UnicodeDecodeError traceback, or say
    "Unexpected config" without the file). A value that is not a file is left to jsonargparse."""
    for i, token in enumerate(args):
        if token in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
        else:
            continue
        if os.path.isfile(path):
            check_config_file(path)


def check_config_file(path: str) -> None:
    import yaml

    expected = "expected a YAML mapping of settings (model:, trainer:, ...), as in conf/*.yaml"
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise ConfigurationError(f"--config {path}: the file is empty: {expected}")
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"--config {path} is not a text file: {expected}") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigurationError(f"--config {path} is not valid YAML ({problem}{where}): {expected}") from None
    if content is None:
        raise ConfigurationError(f"--config {path} holds no settings (only comments or blank lines): {expected}")
    if not isinstance(content, dict):
        kind = "list" if isinstance(content, list) else type(content).__name__
        raise ConfigurationError(f"--config {path} holds a YAML {kind}, not a mapping: {expected}")


#: A non-finite number as a user types it; YAML (which jsonargparse reads command-line values with) spells it .nan.
_NON_FINITE = re.compile(r"([-+]?)(nan|inf|infinity)", re.IGNORECASE)


def non_finite_as_yaml(args: list[str]) -> list[str]:
    """``--model.optim.gamma nan`` -> ``--model.optim.gamma .nan``: the command line then reaches the setting's own
    check (``optim.gamma=nan is not allowed: expected a number in [0, 1]``), as the same value does from a config file,
    instead of jsonargparse's "Expected a <class 'float'>. Got value: nan"."""

    def as_yaml(value: str) -> str:
        match = _NON_FINITE.fullmatch(value.strip())
        if match is None:
            return value
        return ".nan" if match.group(2).lower() == "nan" else f"{'-' if match.group(1) == '-' else ''}.inf"

    out = []
    for i, token in enumerate(args):
        token = str(token)
        if token.startswith("--") and "=" in token:
            key, value = token.split("=", 1)
            token = f"{key}={as_yaml(value)}"
        elif i > 0 and str(args[i - 1]).startswith("--") and "=" not in str(args[i - 1]):
            token = as_yaml(token)
        out.append(token)
    return out


def null_group_settings_as_mappings(args: list[str]) -> list[str]:
    """``--model.init_args.optim.critic_lr null`` -> ``--model.init_args.optim {critic_lr: null}``: jsonargparse
    refuses a null given to one field of a settings group by its dotted key (it reads the value as the field's type,
    not as null), and takes the same value as a mapping, which it lays over the group's other settings."""
    args = [str(a) for a in args]
    out, i = [], 0
    while i < len(args):
        token = args[i]
        key, value, width = token, None, 1
        if "=" in token:
            key, value = token.split("=", 1)
        elif i + 1 < len(args):
            value, width = args[i + 1], 2
        match = _GROUP_OPTION.fullmatch(key)
        if match and value is not None and value.strip().lower() in ("null", "none", "~"):
            out += [key.rsplit(".", 1)[0], f"{{{match.group(2)}: null}}"]
            i += width
            continue
        out.append(token)
        i += 1
    return out


def verbose_flag(args) -> bool:
    """Whether the command line asks for ``--verbose`` (``--verbose``, ``--verbose true``, ``--verbose=true``)."""
    args = [str(a) for a in args]
    for i, token in enumerate(args):
        if token.startswith("--verbose="):
            return token.split("=", 1)[1].lower() in ("true", "1", "yes")
        if token == "--verbose":
            following = args[i + 1].lower() if i + 1 < len(args) else ""
            return following not in ("false", "0", "no")
    return False


#: jsonargparse's parser mode for this CLI: a config file interpolates its own values (``${model.init_args.seed}``)
PARSER_MODE = "omegaconf"


def _non_finite_values(value):
    """``"nan"``, ``"inf"``, ``"-inf"`` strings (how YAML 1.1 reads a user's ``gamma: nan``) as floats, recursively."""
    if isinstance(value, str):
        match = _NON_FINITE.fullmatch(value.strip())
        return float(value) if match else value
    if isinstance(value, dict):
        return {k: _non_finite_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_non_finite_values(v) for v in value]
    return value


def register_parser_mode() -> None:
    """:data:`PARSER_MODE`'s loader: YAML, then OmegaConf's interpolation within the file, and ``gamma: nan`` as a
    float (YAML reads it as a string) so that it reaches the module's own check, like ``--model.gamma nan``."""
    import yaml
    from jsonargparse import get_loader, set_loader
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = get_loader("yaml")

    def load(text: str):
        value = base(text)
        if isinstance(value, dict) and "${" in text:
            value = OmegaConf.to_container(OmegaConf.create(value), resolve=True)
        return _non_finite_values(value)

    set_loader(PARSER_MODE, load, exceptions=(yaml.YAMLError, OmegaConfBaseException))


def bare_verbose(args: list[str]) -> list[str]:
    """``--verbose`` alone means ``--verbose=true`` (jsonargparse's bool options want a value)."""
    values = ("true", "false", "yes", "no", "1", "0")
    return [
        "--verbose=true" if t == "--verbose" and (i + 1 == len(args) or args[i + 1].lower() not in values) else t
        for i, t in enumerate(args)
    ]

