"""The ``hyperrl`` command: a LightningCLI over the algorithm modules.

    hyperrl fit --config conf/sac_hyper.yaml --model.init_args.critic mlp --trainer.max_steps 200000
    hyperrl fit --config conf/sac_hyper.yaml --ckpt_path runs/sac_hyper/version_0/checkpoints/last.ckpt
    hyperrl validate --config conf/sac_hyper.yaml --ckpt_path <file>

User mistakes end with one line on stderr and exit status 2; a run stopped by a non-finite loss exits with 1.
Checkpoints: every 5000 steps, keeping only the newest one and ``last.ckpt`` (``--trainer.callbacks.save_top_k -1``
keeps them all).
"""

from __future__ import annotations

import os
import sys

from hyperrl.errors import ConfigurationError, NonFiniteLossError, require_positive

#: Trainer settings every run gets unless the config or the command line says otherwise.
TRAINER_DEFAULTS = {
    "max_steps": 1_000_000,
    "val_check_interval": 5000,
    "check_val_every_n_epoch": None,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 50,
    "logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs", "name": "hyperrl"}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "hyperrl"}},
    ],
    # checkpoints are written beside their destination and renamed into place: never half-written (checkpoint_io)
    "plugins": [{"class_path": "hyperrl.checkpoint_io.AtomicCheckpointIO"}],
    # save_top_k=1 without a monitor keeps only the newest periodic checkpoint (Lightning deletes the one before):
    # with its replay buffer a paper-scale checkpoint is ~440 MB, and all 200 of a 1M-step run would fill a disk
    "callbacks": [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_train_steps": 5000, "save_last": True, "save_top_k": 1},
        }
    ],
}

#: ``--ckpt_path`` values Lightning resolves itself rather than reading a file of that name (also ``registry:...``).
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def _is_checkpoint_file(path: str) -> bool:
    """Whether ``--ckpt_path path`` names a local file, not one of Lightning's names or a URL."""
    return not (path in LIGHTNING_CKPT_NAMES or path.lower().startswith("registry:") or "://" in path)


class UsageError(Exception):
    """A command-line or configuration mistake caught by the argument parser."""


def one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line report to the line that names the bad value."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    ours = ("is not allowed", "unknown critic", "unknown environment", "environment '", "unknown option")
    for line in lines:
        if any(marker in line for marker in ours):
            return line.lstrip("- ")
    for i, line in enumerate(lines):
        if line.startswith("Expected a <class") and "NoneType" not in line:
            keys = [m for m in lines[:i] if m.startswith('Parser key "')]
            key = keys[-1].split('"')[1] if keys else "value"
            return f"{key}: {line}"
        if line.startswith(("Option '", "Key '")) or "unrecognized arguments" in line or "does not exist" in line:
            return line
    return lines[0] if lines else "invalid arguments"


def _configuration_error_in(exc: BaseException, kinds: tuple[type[BaseException], ...] = ()) -> BaseException | None:
    """The first :class:`ConfigurationError` (or one of ``kinds``) in the chain of causes of ``exc``."""
    kinds = (ConfigurationError, *kinds)
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _cli_class():
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class Parser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if getattr(self, "exit_on_error", True):
                raise UsageError(message) from ex
            return super().error(message, ex)

    class HyperRLCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults({"seed_everything": False, **{f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()}})

        def before_instantiate_classes(self) -> None:
            config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            _check_trainer_settings(config)
            _share_log_dir(config)

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            self._model_options = _model_options_given(sys.argv[1:] if args is None else args)
            # read --ckpt_path first: Lightning's own first look at it (_parse_ckpt_path) raises a traceback
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if path == "best":  # Lightning's ValueError: a fresh process has no best_model_path to resolve it to
                raise ConfigurationError("--ckpt_path best is not allowed: expected a checkpoint file")
            if path is not None and _is_checkpoint_file(str(path)):
                self._checkpoint_file = (str(path), _read_checkpoint(str(path)))

        def _parse_ckpt_path(self) -> None:
            # Lightning 2.6 rebuilds the model from the checkpoint's hyperparameters, in place of the command's
            # --model settings. A checkpoint saved outside the CLI has no "_class_path" there and its hyperparameters
            # do not parse ("Option 'alpha' is not accepted"): such a checkpoint must fit the command's model instead.
            checkpoint = getattr(self, "_checkpoint_file", None)
            if checkpoint is None:
                return super()._parse_ckpt_path()
            path, loaded = checkpoint
            saved = {k: v for k, v in _hyperparameters(loaded).items() if k != "_instantiator"}
            if "_class_path" not in saved:
                return None
            # what Lightning's own _parse_ckpt_path does, from the checkpoint already read (memory-mapped) above
            # instead of a second full torch.load of a file that holds the replay buffer
            subcommand = self.config.subcommand
            asked = self.config[subcommand].model.clone()
            model = {"class_path": saved.pop("_class_path"), "dict_kwargs": saved}
            try:
                self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
            except UsageError as exc:
                raise ConfigurationError(
                    f"--ckpt_path {path}: cannot rebuild the model it was saved with: {one_line(str(exc))}"
                ) from exc
            _refuse_ignored_model_options(path, self._model_options, asked, self.config[subcommand].model)
            return None

        def _check_ckpt_path(self) -> None:
            checkpoint = getattr(self, "_checkpoint_file", None)
            self._checkpoint_file = None  # drop the memory map before the run
            if checkpoint is not None:
                _check_checkpoint_fits(*checkpoint, self.model)

        # before Lightning loads the checkpoint: weights that do not fit get one line naming the file
        before_fit = before_validate = before_test = before_predict = _check_ckpt_path

    _cli_class.parser = Parser
    return HyperRLCLI


def _model_options_given(args) -> list[str]:
    """The model settings named on the command line: ``--model.lr 1`` / ``--model.init_args.lr=1`` give ``"lr"``,
    ``--model hyperrl.algos.TD3`` gives ``"class_path"``."""
    names = []
    for token in args:
        token = str(token)
        if token == "--model" or token.startswith("--model="):
            names.append("class_path")
        elif token.startswith("--model."):
            name = token[len("--model."):].split("=", 1)[0]
            name = name[len("init_args."):] if name.startswith("init_args.") else name
            names.append(name.split(".", 1)[0])
    return list(dict.fromkeys(names))


def _refuse_ignored_model_options(path: str, options: list[str], asked, resumed) -> None:
    """A resumed run keeps the model settings stored in its checkpoint (Lightning rebuilds the model from them). A
    ``--model`` option on the same command line that asks for something else would be silently ignored: refuse it."""
    for name in options:
        if name == "class_path":
            mine, theirs = asked.get("class_path"), resumed.get("class_path")
        else:
            mine, theirs = asked.get(f"init_args.{name}"), resumed.get(f"init_args.{name}")
        if mine != theirs:
            raise ConfigurationError(
                f"option --model.{name}={_plain(mine)!r} is not allowed with --ckpt_path {path}: that checkpoint "
                f"resumes with {name}={_plain(theirs)!r} (a resumed run keeps its model settings); drop the option "
                "or start a new run"
            )


def _plain(value):
    """A jsonargparse Namespace as a plain dict (for messages)."""
    return value.as_dict() if hasattr(value, "as_dict") else value


def _check_trainer_settings(config) -> None:
    """Reject settings Lightning accepts but fails on later (``val_check_interval 0``: a ZeroDivisionError after the
    first training step)."""
    value = (config.get("trainer") or {}).get("val_check_interval")
    if value is not None:
        require_positive("trainer.val_check_interval", value)


def _read_checkpoint(path: str) -> dict:
    """The checkpoint at ``path``, memory-mapped (its pickled structure is read, its tensors are not: a paper-scale
    checkpoint with the replay buffer is ~440 MB), loaded as Lightning does (``weights_only``). A missing, unreadable
    or non-Lightning file raises :class:`ConfigurationError` naming it."""
    import zipfile

    import torch

    if not os.path.exists(path):
        raise ConfigurationError(f"--ckpt_path {path}: no such file")
    if not os.path.isfile(path):
        raise ConfigurationError(f"--ckpt_path {path}: not a file")
    if os.path.getsize(path) == 0:
        raise ConfigurationError(f"--ckpt_path {path}: the file is empty")
    try:
        # only torch's zip format can be memory-mapped; anything else is read as a legacy file (or fails to be)
        checkpoint = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load finds wrong, it is the file's problem
        reason = " ".join(str(exc).split())
        if "WeightsUnpickler error:" in reason:  # skip torch's paragraph on weights_only
            reason = reason.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].strip()
            reason = f"unpickling failed: {reason}"
        reason = reason.split(". ")[0][:200] or type(exc).__name__
        raise ConfigurationError(
            f"--ckpt_path {path} cannot be read as a checkpoint (truncated or corrupt?): {reason}"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigurationError(f"--ckpt_path {path} is not a Lightning checkpoint: it holds no state_dict")
    return checkpoint


def _hyperparameters(checkpoint: dict) -> dict:
    saved = checkpoint.get("hyper_parameters")
    return saved if isinstance(saved, dict) else {}


def _check_checkpoint_fits(path: str, checkpoint: dict, model) -> None:
    """Raise :class:`ConfigurationError` naming ``path`` unless the checkpoint's weights fit ``model`` (same
    algorithm, critic, environment and sizes); the message names the settings that differ."""
    problem = _state_dict_mismatch(
        checkpoint["state_dict"], model.state_dict(), strict=getattr(model, "strict_loading", True)
    )
    if problem is None:
        return
    saved = _hyperparameters(checkpoint)
    ours = type(model).__name__
    algorithm = str(saved.get("_class_path", "")).rsplit(".", 1)[-1]
    foreign = sorted(set(saved) - set(model.hparams) - {"_class_path", "_instantiator"})
    changed = []
    if algorithm not in ("", ours):
        changed.append(f"algorithm {algorithm} there, {ours} here")
    elif foreign:  # saved outside the CLI: no class path, but settings this algorithm does not have
        changed.append(f"another algorithm than {ours}: it has {', '.join(foreign)}")
    changed += [
        f"{key}={saved[key]!r} there, {model.hparams.get(key)!r} here"
        for key in ("env", "critic", "critic_kwargs", "actor_hidden")
        if key in saved and saved[key] != model.hparams.get(key)
    ]
    raise ConfigurationError(
        f"--ckpt_path {path} does not fit this model ({'; '.join([*changed, problem])}): "
        "use the algorithm, critic and sizes of the run that saved it"
    )


def _state_dict_mismatch(saved: dict, own: dict, strict: bool = True) -> str | None:
    """The first difference between a checkpoint's state_dict and the model's, in words; ``None`` if they fit."""

    def first(keys: list[str], what: str) -> str:
        return f"{what} {keys[0]}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")

    resized = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if resized:
        k = resized[0]
        return first(resized, "size mismatch for") + f": {list(saved[k].shape)} there, {list(own[k].shape)} here"
    missing = [k for k in own if k not in saved] if strict else []
    if missing:
        return first(missing, "the checkpoint lacks")
    unexpected = [k for k in saved if k not in own] if strict else []
    if unexpected:
        return first(unexpected, "the model has no")
    return None


def _share_log_dir(config) -> None:
    """Give the default loggers one directory ``runs/<config stem>/version_<n>``: the run's name comes from the
    config file, and TensorBoard and CSV files land side by side (with the checkpoints under it)."""
    loggers = config.get("trainer", {}).get("logger")
    if not isinstance(loggers, list):
        return
    config_files = [c for c in (config.get("config") or []) if c is not None]
    default_name = os.path.splitext(os.path.basename(str(config_files[-1])))[0] if config_files else "hyperrl"
    specs = [getattr(lg, "init_args", None) for lg in loggers]
    specs = [s for s in specs if s is not None and "save_dir" in s]
    for spec in specs:
        if spec.get("name") in (None, "hyperrl"):
            spec["name"] = default_name
    pending = [s for s in specs if s.get("version") is None]
    if not pending:
        return
    used = set()
    for spec in specs:
        root = os.path.join(str(spec["save_dir"]), str(spec.get("name") or ""))
        if os.path.isdir(root):
            used.update(d for d in os.listdir(root) if d.startswith("version_"))
    n = 0
    while f"version_{n}" in used:
        n += 1
    for spec in pending:
        spec["version"] = f"version_{n}"


def _quiet_known_warnings() -> None:
    """Silence warnings that do not apply to these modules (they are by design)."""
    import warnings

    for pattern in (
        ".*no pre-optimization state was saved.*",  # we checkpoint the state after each update, on purpose
        ".*module\\(s\\) in eval mode.*",
        ".*LeafSpec.*",
        ".*Experiment logs directory .* exists and is not empty.*",  # TensorBoard and CSV share the run directory
    ):
        warnings.filterwarnings("ignore", message=pattern)


def main(args: list[str] | None = None) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    # OpenMP threads that spin while waiting make every op crawl once another process shares the cores
    # (measured: an MLP SAC step 2.5 ms -> 210 ms under load); passive waiting costs nothing when alone.
    # Must be set before torch is imported, which happens below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _quiet_known_warnings()
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        from hyperrl.algos import Algorithm

        cli = _cli_class()
        cli(
            Algorithm,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
            parser_class=_cli_class.parser,
        )
    except (ConfigurationError, UsageError) as exc:
        print(f"hyperrl: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except MisconfigurationException as exc:
        # Lightning's word for a bad trainer or callback setting, e.g. --trainer.max_steps -5
        print(f"hyperrl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as exc:
        print(f"hyperrl: stopped: {exc}", file=sys.stderr)
        sys.exit(1)
    except ValueError as exc:
        # jsonargparse wraps errors raised while instantiating classes: report ours and Lightning's
        # MisconfigurationException (a callback's init_args), re-raise anything else
        cause = _configuration_error_in(exc, (MisconfigurationException,))
        if cause is None:
            raise
        message = one_line(str(cause)) if isinstance(cause, ConfigurationError) else " ".join(str(cause).split())
        print(f"hyperrl: error: {message}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as exc:
        print(f"hyperrl: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
