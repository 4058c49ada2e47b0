"""The ``hyperrl`` command: a LightningCLI over the algorithm modules.

    hyperrl fit --config conf/sac_hyper.yaml --model.init_args.critic mlp --trainer.max_steps 200000
    hyperrl fit --config conf/sac_hyper.yaml --ckpt_path runs/sac_hyper/version_0/checkpoints/last.ckpt
    hyperrl validate --config conf/sac_hyper.yaml --ckpt_path <file>

User mistakes end with one line on stderr and exit status 2; a run stopped by a non-finite loss exits with 1; a run
stopped by SIGTERM / SIGINT writes ``last.ckpt`` and exits with 143 / 130 (one line: the checkpoint and the command
that resumes it). Every run writes to one folder, decided in :func:`resolve_run_folder`:
``<trainer.default_root_dir>/version_<n>`` (default root ``runs/<config name>``); a resumed run continues in the
folder of its checkpoint. Checkpoints: every 5000 steps, keeping only the newest one and ``last.ckpt``
(``--trainer.callbacks.save_top_k -1`` keeps them all). ``--verbose`` shows Lightning's and TorchRL's info lines and
the model summary. ``torch_threads: N`` (top level of a config, or ``--torch_threads N``) sets how many CPU threads
torch uses. ``hyperrl --help`` imports nothing heavy (``benchmarks/cli_startup.py`` measures it).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

from hyperrl import help_cache
from hyperrl.cli_input import (
    PARSER_MODE,
    UsageError,
    bare_verbose,
    check_config_files,
    configuration_error_in,
    drop_switched_network_settings,
    model_options_given,
    non_finite_as_yaml,
    one_line,
    register_parser_mode,
    verbose_flag,
)
from hyperrl.errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigurationError,
    NonFiniteLossError,
    require_positive,
)
from hyperrl.runs import (
    RUNS_DIR,
    check_checkpoint_fits,
    check_writable,
    checkpoint_dirs,
    check_resumable,
    hyperparameters,
    is_checkpoint_file,
    last_checkpoint,
    lock_run_folder,
    read_checkpoint,
    refuse_changed_model_settings,
    resolve_run_folder,
)

#: Trainer settings every run gets unless the config or the command line says otherwise.
TRAINER_DEFAULTS = {
    "max_steps": 1_000_000,
    "val_check_interval": 5000,
    "check_val_every_n_epoch": None,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 50,
    "enable_model_summary": False,  # --verbose turns it on
    # save_dir, name and version are filled in by resolve_run_folder from trainer.default_root_dir (the one option
    # that places a run); the CSV logger continues a resumed run's metrics.csv
    "logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": RUNS_DIR, "name": ""}},
        {"class_path": "hyperrl.callbacks.CSVLogger", "init_args": {"save_dir": RUNS_DIR, "name": ""}},
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

#: The subcommands of LightningCLI, as ``hyperrl --help`` lists them without importing Lightning.
SUBCOMMANDS = {
    "fit": "Train a model: hyperrl fit --config conf/quickstart.yaml",
    "validate": "Evaluate a checkpoint: hyperrl validate --config <config> --ckpt_path <file>",
    "test": "Run the test loop of a model",
    "predict": "Run the predict loop of a model",
}

HELP = """usage: hyperrl [-h] {%(names)s} ...

Hypernetwork critics and actors for reinforcement learning (Sarafian, Keynan, Kraus, ICML 2021) on TorchRL and
Lightning.

subcommands:
%(rows)s

Run "hyperrl <subcommand> --help" for every setting of a subcommand, and
"hyperrl fit --config <file> --print_config" for the settings a run would use. Common options:
  --config FILE                 a YAML config (conf/*.yaml); later options override it
  --trainer.default_root_dir D  where runs go: D/version_<n> (default runs/<config name>)
  --ckpt_path FILE              resume a run (it continues in its own folder) or validate a checkpoint
  --verbose                     show Lightning's and TorchRL's info lines and the model summary
""" % {"names": ",".join(SUBCOMMANDS), "rows": "\n".join(f"  {k:<9} {v}" for k, v in SUBCOMMANDS.items())}


def _cli_class():
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from hyperrl.callbacks import ContinuedMetrics, CurrentLastCheckpoint, RunProgressBar, StopOnSignal

    class Parser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if getattr(self, "exit_on_error", True):
                raise UsageError(message) from ex
            return super().error(message, ex)

        def dump(self, cfg, *args, **kwargs):
            # --print_config and the run's config.yaml both come through here: show the folder the run writes to
            # and the settings of the networks the command line chose
            if "trainer" in cfg and getattr(self, "subcommand", None):
                cfg = cfg.clone()
                resolve_run_folder(cfg, self.subcommand)
                if cfg.get("ckpt_path") is None:  # a resumed model keeps its checkpoint's settings
                    drop_switched_network_settings(cfg, getattr(_cli_class.last, "_model_options", []))
            return super().dump(cfg, *args, **kwargs)

    class HyperRLCLI(LightningCLI):
        def __init__(self, *args, **kwargs) -> None:
            self.stop_on_signal = StopOnSignal()  # main() reads it after the run
            self.checkpoint_path = self.run_folder = self.lock = None
            _cli_class.last = self
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--torch_threads", type=Optional[int], default=None,
                help="CPU threads torch computes with in this run (torch.set_num_threads); null: torch's default "
                     "(one per core). One thread is faster for small networks on a CPU",
            )
            parser.set_defaults({"seed_everything": False, **{f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()}})

        def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            # validate/test have their own --verbose (print the results), on by default; main() reads the flag
            if not any(action.dest == "verbose" for action in parser._actions):
                parser.add_argument(
                    "--verbose", type=bool, default=False,
                    help="Show Lightning's and TorchRL's info lines (devices, tips) and the model summary",
                )
            return parser

        def _set_seed(self) -> None:
            _check_seed(self._get(self.config, "seed_everything"))
            super()._set_seed()

        def before_instantiate_classes(self) -> None:
            config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            _check_trainer_settings(config)
            set_torch_threads(config.get("torch_threads"))
            run = resolve_run_folder(config, self.subcommand)
            for path, what in [(run, "run folder"), *checkpoint_dirs(config)]:
                check_writable(path, what)
            self.run_folder = run
            _check_precision(config.trainer.get("precision"))
            for callback in _listed(config.trainer.get("callbacks")):
                # a resumed run with other checkpoint settings writes last.ckpt, not a last-v1.ckpt beside a stale one
                if str(getattr(callback, "class_path", "")).endswith(".ModelCheckpoint"):
                    callback.init_args.enable_version_counter = False
            if verbose_flag(sys.argv[1:] if self._args is None else self._args):
                config.trainer.enable_model_summary = True

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ConfigurationError:
                raise
            except Exception as exc:  # the model a checkpoint was saved with no longer builds from its settings
                checkpoint = getattr(self, "_checkpoint_file", None)
                if checkpoint is None:
                    raise
                unknown = re.findall(r"unexpected keyword argument '(\w+)'", str(exc))
                reason = (f"it holds settings this version does not know: {', '.join(sorted(set(unknown)))}"
                          if unknown else one_line(str(exc)))
                raise ConfigurationError(
                    f"--ckpt_path {checkpoint[0]}: cannot rebuild the model it was saved with: {reason}"
                ) from exc

        def _instantiate_trainer(self, config, callbacks):
            # the CLI's own callbacks, whatever callbacks list the config gives (LightningCLI replaces lists)
            config = dict(config)
            given = config.get("callbacks") or []
            given = given if isinstance(given, list) else [given]
            extra = [self.stop_on_signal, CurrentLastCheckpoint(), ContinuedMetrics()]
            if config.get("enable_progress_bar", True) is not False and not any(
                _is_progress_bar(c) for c in [*given, *callbacks]
            ):
                extra.append(RunProgressBar())
            config["callbacks"] = [*given, *extra]
            return super()._instantiate_trainer(config, callbacks)

        def parse_arguments(self, parser, args) -> None:
            self._args = args
            self._model_options = model_options_given(sys.argv[1:] if args is None else args)
            super().parse_arguments(parser, args)
            # read --ckpt_path first: Lightning's own first look at it (_parse_ckpt_path) raises a traceback
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if path is None and subcommand:
                drop_switched_network_settings(self.config[subcommand], self._model_options)
            if path == "best":  # Lightning's ValueError: a fresh process has no best_model_path to resolve it to
                raise ConfigurationError("--ckpt_path best is not allowed: expected a checkpoint file")
            if path == "last":  # the newest run's last.ckpt (Lightning would look in the new, empty run folder)
                path = self.config[subcommand].ckpt_path = last_checkpoint(self.config[subcommand])
            self.checkpoint_path = path
            if path is not None and is_checkpoint_file(str(path)):
                self._checkpoint_file = (str(path), read_checkpoint(str(path)))

        def _parse_ckpt_path(self) -> None:
            # Lightning 2.6 rebuilds the model from the checkpoint's hyperparameters, in place of the command's
            # --model settings. A checkpoint saved outside the CLI has no "_class_path" there and its hyperparameters
            # do not parse ("Option 'alpha' is not accepted"): such a checkpoint must fit the command's model instead.
            checkpoint = getattr(self, "_checkpoint_file", None)
            if checkpoint is None:
                return super()._parse_ckpt_path()
            path, loaded = checkpoint
            saved = {k: v for k, v in hyperparameters(loaded).items() if k != "_instantiator"}
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
            files = [str(c) for c in (self.config[subcommand].get("config") or []) if c is not None]
            refuse_changed_model_settings(path, self._model_options, asked, self.config[subcommand].model, files)
            return None

        def _check_ckpt_path(self) -> None:
            checkpoint = getattr(self, "_checkpoint_file", None)
            self._checkpoint_file = None  # drop the memory map before the run
            if checkpoint is not None:
                check_checkpoint_fits(*checkpoint, self.model)
                check_resumable(*checkpoint, self.trainer.max_steps if self.subcommand == "fit" else None)
            if self.subcommand == "fit" and self.run_folder is not None:
                self.lock = lock_run_folder(self.run_folder)  # main() closes it

        # before Lightning loads the checkpoint: weights that do not fit get one line naming the file
        before_fit = before_validate = before_test = before_predict = _check_ckpt_path

    _cli_class.parser = Parser
    return HyperRLCLI


def _listed(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _check_precision(precision) -> None:
    """Refuse a precision the modules do not support before Lightning maps it to another (``16-mixed`` on a CPU runs
    as ``bf16-mixed``)."""
    from hyperrl.algos.base import SUPPORTED_PRECISIONS

    if precision is not None and str(precision) not in (*SUPPORTED_PRECISIONS, "bf16"):
        raise ConfigurationError(
            f"--trainer.precision {precision} is not allowed: expected one of {', '.join(SUPPORTED_PRECISIONS)} "
            "(fp16 needs loss scaling, which these updates do not use; '-true' precisions would cast the fp32 targets "
            "and replay data)"
        )


def _is_progress_bar(callback) -> bool:
    from lightning.pytorch.callbacks import ProgressBar

    if isinstance(callback, ProgressBar):
        return True
    path = str(getattr(callback, "class_path", "") or (callback.get("class_path", "") if isinstance(callback, dict)
                                                        else ""))
    return "ProgressBar" in path.rsplit(".", 1)[-1]


#: numpy's seed range, which Lightning's seed_everything passes its seed to.
SEED_RANGE = (0, 2**32 - 1)


def set_torch_threads(threads) -> None:
    """``torch_threads``: ``None`` leaves torch's thread count alone, a positive integer sets it."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(f"torch_threads={threads!r} is not allowed: expected a positive integer or null")
    import torch

    torch.set_num_threads(threads)


def _check_seed(seed) -> None:
    """``seed_everything`` must be true, false or an integer numpy accepts."""
    if seed is None or isinstance(seed, bool):
        return
    if not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigurationError(
            f"seed_everything={seed!r} is not allowed: expected true, false or an integer "
            f"{SEED_RANGE[0]} <= seed <= {SEED_RANGE[1]} (numpy's seed range)"
        )


def _check_trainer_settings(config) -> None:
    """Reject settings Lightning accepts but fails on later (``val_check_interval 0``: a ZeroDivisionError after the
    first training step)."""
    value = (config.get("trainer") or {}).get("val_check_interval")
    if value is not None:
        require_positive("trainer.val_check_interval", value)


def _quiet_known_warnings() -> None:
    """Silence warnings that do not apply to these modules (they are by design)."""
    import warnings

    for pattern in (
        ".*no pre-optimization state was saved.*",  # we checkpoint the state after each update, on purpose
        ".*module\\(s\\) in eval mode.*",
        ".*LeafSpec.*",
        ".*Experiment logs directory .* exists and is not empty.*",  # TensorBoard and CSV share the run directory
        ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run continues in its own folder
        ".*LightningCLI's args parameter is intended to run from within Python.*",  # main(args) is that use
        # validate/test/predict of a checkpoint write beside its run and save no checkpoints: nothing to reload
        ".*The dirpath has changed from .* to '.*[/\\\\](validate|test|predict)-[^/\\\\]*[/\\\\]checkpoints'.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


#: MuJoCo compiler warnings about the stock model files (gymnasium's), not about anything a user set.
MUJOCO_MODEL_WARNINGS = ("'settotalmass' is deprecated",)


def _quiet_mujoco_model_warnings() -> None:
    """MuJoCo prints its warnings from C; route them through a handler that drops :data:`MUJOCO_MODEL_WARNINGS` and
    prints the rest as MuJoCo would."""
    import importlib.util

    if importlib.util.find_spec("mujoco") is None:
        return
    import mujoco

    def handler(message: str) -> None:
        if not any(known in message for known in MUJOCO_MODEL_WARNINGS):
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)


def _set_verbosity(verbose: bool) -> None:
    """Quiet by default: Lightning's info lines (devices, tips, checkpoint notes) and TorchRL's (coloured, written
    into the progress bar) only with ``--verbose``; warnings and errors always."""
    import logging

    level = logging.INFO if verbose else logging.WARNING
    if not verbose:
        os.environ.setdefault("RL_LOGGING_LEVEL", "WARNING")  # read when torchrl is imported
    for name in ("lightning.pytorch", "lightning.fabric", "torchrl"):
        logging.getLogger(name).setLevel(level)


def _report_signal_stop(stop, args: list[str]) -> None:
    """After a run stopped by SIGTERM/SIGINT: one line naming the checkpoint and the command that resumes it, exit
    ``128 + signal`` (143 / 130)."""
    import shlex
    import signal

    if stop is None or stop.received is None:
        return
    name = signal.Signals(stop.received).name
    kept = []
    skip = False
    for token in args:  # the same command, with --ckpt_path pointing at the new checkpoint
        if skip:
            skip = False
            continue
        if token == "--ckpt_path":
            skip = True
            continue
        if token.startswith("--ckpt_path="):
            continue
        kept.append(token)
    if stop.checkpoint is None:
        print(f"hyperrl: stopped by {name} before the first training step ended: nothing to resume from",
              file=sys.stderr)
    else:
        resume = shlex.join(["hyperrl", *kept, "--ckpt_path", stop.checkpoint])
        print(f"hyperrl: stopped by {name} after step {stop.step}: checkpoint {stop.checkpoint}; resume with: {resume}",
              file=sys.stderr)
    sys.exit(128 + int(stop.received))


def main(args: list[str] | None = None) -> None:
    """The ``hyperrl`` command (``fit``, ``validate``, ``test``, ``predict``); ``args`` default to ``sys.argv[1:]``."""
    from_argv = args is None or [str(a) for a in args] == sys.argv[1:]  # the console script, or one passing argv on
    args = [str(a) for a in (sys.argv[1:] if from_argv else args)]
    if not args or args[0] in ("-h", "--help"):  # answered without importing torch or Lightning
        print(HELP, end="", file=sys.stdout if args else sys.stderr)
        if not args:
            sys.exit(2)
        return
    text = help_cache.cached(args)  # "hyperrl fit --help": stored by the first call, printed without imports
    if text is not None:
        print(text, end="")
        return
    os.environ.setdefault("MUJOCO_GL", "egl")
    # OpenMP threads that spin while waiting make every op crawl once another process shares the cores
    # (docs/benchmarks.md, "Shared machines"); passive waiting costs nothing when alone.
    # Must be set before torch is imported, which happens below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # jsonargparse's switch for its deprecation notices, which Lightning's own calls into it trigger in every run
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    verbose = verbose_flag(args)
    _set_verbosity(verbose)
    _quiet_known_warnings()
    _quiet_mujoco_model_warnings()
    try:
        check_config_files(args)
    except ConfigurationError as exc:
        print(f"hyperrl: error: {exc}", file=sys.stderr)
        sys.exit(2)
    args = bare_verbose(non_finite_as_yaml(args))
    if from_argv:  # LightningCLI warns when given args while sys.argv holds some: hand it the rewritten ones there
        sys.argv[1:] = args
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    _cli_class.last = None
    try:
        from hyperrl.algos import Algorithm

        _set_verbosity(verbose)  # Lightning sets its loggers to INFO when imported
        register_parser_mode()
        cli = _cli_class()
        with help_cache.recording(args):
            cli(
                Algorithm,
                subclass_mode_model=True,
                save_config_kwargs={"overwrite": True},
                args=None if from_argv else args,
                auto_configure_optimizers=False,
                parser_class=_cli_class.parser,
                parser_kwargs={"parser_mode": PARSER_MODE},
            )
    except CheckpointError as exc:  # raised while Lightning loads the checkpoint
        print(f"hyperrl: error: --ckpt_path {getattr(_cli_class.last, 'checkpoint_path', None)} {exc}", file=sys.stderr)
        sys.exit(2)
    except (ConfigurationError, UsageError) as exc:
        print(f"hyperrl: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except CheckpointWriteError as exc:
        print(f"hyperrl: stopped: {exc}", file=sys.stderr)
        sys.exit(1)
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
        cause = configuration_error_in(exc, (MisconfigurationException,))
        if cause is None:
            raise
        message = one_line(str(cause)) if isinstance(cause, ConfigurationError) else " ".join(str(cause).split())
        print(f"hyperrl: error: {message}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as exc:
        print(f"hyperrl: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        if getattr(_cli_class.last, "lock", None) is not None:
            _cli_class.last.lock.close()
    _report_signal_stop(getattr(_cli_class.last, "stop_on_signal", None), args)


if __name__ == "__main__":
    main()
