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
import signal
import sys
from typing import Optional

from hyperrl import console, help_cache
from hyperrl.cli_input import (
    PARSER_MODE,
    UsageError,
    bare_verbose,
    check_config_files,
    check_seed_everything,
    check_trainer_settings,
    configuration_error_in,
    drop_switched_settings,
    model_options_given,
    non_finite_as_yaml,
    null_group_settings_as_mappings,
    one_line,
    register_parser_mode,
    verbose_flag,
)
from hyperrl.errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigurationError,
    NonFiniteLossError,
)
from hyperrl.runs import (
    RUNS_DIR,
    check_checkpoint_fits,
    check_writable,
    checkpoint_dirs,
    check_resumable,
    check_time_left,
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
}

#: The checkpoint settings of a run whose config lists no callbacks. save_top_k=1 without a monitor keeps only the
#: newest periodic checkpoint (Lightning deletes the one before): with its replay buffer a paper-scale checkpoint is
#: ~440 MB, and all 200 of a 1M-step run would fill a disk.
CHECKPOINT_DEFAULTS = [
    {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 5000, "save_last": True, "save_top_k": 1},
    }
]

def _cli_class():
    from lightning.pytorch.callbacks import ProgressBar
    from jsonargparse.typing import PositiveInt
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from hyperrl.callbacks import ContinuedMetrics, CurrentLastCheckpoint, RunProgressBar, StopOnSignal

    class Parser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if getattr(self, "exit_on_error", True):
                raise UsageError(message) from ex
            return super().error(message, ex)

        def dump(self, cfg, *args, **kwargs):
            # --print_config and the run's config.yaml both come through here: show the folder the run writes to
            # and the settings of an environment or context the command line switched
            if "trainer" in cfg and getattr(self, "subcommand", None):
                cfg = cfg.clone()
                resolve_run_folder(cfg, self.subcommand)
                if cfg.get("ckpt_path") is None:  # a resumed model keeps its checkpoint's settings
                    drop_switched_settings(cfg, getattr(_cli_class.last, "_model_options", []))
            return super().dump(cfg, *args, **kwargs)

    class HyperRLCLI(LightningCLI):
        def __init__(self, *args, **kwargs) -> None:
            self.stop_on_signal = StopOnSignal()  # main() reads it after the run
            self.checkpoint_path = self.run_folder = self.lock = self._checkpoint_file = None
            _cli_class.last = self
            super().__init__(*args, **kwargs)

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # fit and validate: the algorithms define no test or predict step. Every subcommand's --verbose is this
            # CLI's (log levels, model summary): validate prints its results as Lightning does by default
            return {name: {*skip, "verbose"} for name, skip in LightningCLI.subcommands().items()
                    if name in ("fit", "validate")}

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--torch_threads", type=Optional[PositiveInt], default=None,
                help="CPU threads torch computes with in this run (torch.set_num_threads); null: torch's default "
                     "(one per core). One thread is faster for small networks on a CPU",
            )
            parser.add_argument(
                "--verbose", type=bool, default=False,
                help="Show Lightning's and TorchRL's info lines (devices, tips) and the model summary",
            )
            # a default, not one of trainer_defaults' callbacks (those are added to every run): a config's own
            # callbacks list replaces it
            parser.set_defaults({"trainer.callbacks": CHECKPOINT_DEFAULTS})

        def parse_arguments(self, parser, args) -> None:
            self._model_options = model_options_given(sys.argv[1:] if args is None else args)
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            if not subcommand:
                return
            check_seed_everything(self.config[subcommand].get("seed_everything"))
            path = self.config[subcommand].get("ckpt_path")
            if path is None:
                drop_switched_settings(self.config[subcommand], self._model_options)
                return
            if path == "best":  # Lightning's ValueError: a fresh process has no best_model_path to resolve it to
                raise ConfigurationError("--ckpt_path best is not allowed: expected a checkpoint file")
            if path == "last":  # the newest run's last.ckpt (Lightning would look in the new, empty run folder)
                path = self.config[subcommand].ckpt_path = last_checkpoint(self.config[subcommand])
            self.checkpoint_path = path
            if is_checkpoint_file(str(path)):
                self._checkpoint_file = (str(path), read_checkpoint(str(path)))
                self._rebuild_saved_model(subcommand)
                # Lightning's own reading of --ckpt_path, right after this hook, would torch.load the whole file
                # again (replay buffer included) to do what _rebuild_saved_model did, and fails on a checkpoint saved
                # outside the CLI: it finds no path; before_instantiate_classes puts it back
                self.config[subcommand].ckpt_path = None

        def _rebuild_saved_model(self, subcommand: str) -> None:
            """The model a checkpoint was saved with, from its hyperparameters (as Lightning 2.6 does, from the file
            already read, memory-mapped); a checkpoint saved outside the CLI has no ``_class_path`` there and must
            fit the command's model instead."""
            path, loaded = self._checkpoint_file
            saved = {k: v for k, v in hyperparameters(loaded).items() if k != "_instantiator"}
            if "_class_path" not in saved:
                return
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

        def before_instantiate_classes(self) -> None:
            config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            if self.checkpoint_path is not None:
                config.ckpt_path = self.checkpoint_path
            check_trainer_settings(config)
            if config.get("torch_threads") is not None:
                import torch

                torch.set_num_threads(config.torch_threads)
            run = resolve_run_folder(config, self.subcommand)
            for path, what in [(run, "run folder"), *checkpoint_dirs(config)]:
                check_writable(path, what)
            self.run_folder = run
            for callback in _listed(config.trainer.get("callbacks")):
                # a resumed run with other checkpoint settings writes last.ckpt, not a last-v1.ckpt beside a stale one
                if str(getattr(callback, "class_path", "")).endswith(".ModelCheckpoint"):
                    callback.init_args.enable_version_counter = False
                    # named by training step (a run is one endless epoch: extending a finished one made it epoch=1)
                    if callback.init_args.get("filename") is None:
                        callback.init_args.filename = "{step}"
            if config.get("verbose"):
                config.trainer.enable_model_summary = True

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ConfigurationError:
                raise
            except Exception as exc:  # the model a checkpoint was saved with no longer builds from its settings
                if self._checkpoint_file is None:
                    raise
                unknown = re.findall(r"unexpected keyword argument '(\w+)'", str(exc))
                reason = (f"it holds settings this version does not know: {', '.join(sorted(set(unknown)))}"
                          if unknown else one_line(str(exc)))
                raise ConfigurationError(
                    f"--ckpt_path {self._checkpoint_file[0]}: cannot rebuild the model it was saved with: {reason}"
                ) from exc

        def instantiate_trainer(self, **kwargs):
            # the CLI's own callbacks, whatever callbacks list the config gives (LightningCLI replaces lists)
            trainer = (self.config_init[self.subcommand] if self.subcommand else self.config_init).trainer
            given = _listed(trainer.get("callbacks"))
            extra = [self.stop_on_signal, CurrentLastCheckpoint(), ContinuedMetrics()]
            if trainer.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, ProgressBar) for c in given
            ):
                extra.append(RunProgressBar())
            return super().instantiate_trainer(**{"callbacks": [*given, *extra], **kwargs})

        def _check_ckpt_path(self) -> None:
            checkpoint, self._checkpoint_file = self._checkpoint_file, None  # drop the memory map before the run
            if checkpoint is not None:
                check_checkpoint_fits(*checkpoint, self.model)
                check_resumable(*checkpoint, self.trainer.max_steps if self.subcommand == "fit" else None)
                if self.subcommand == "fit":
                    check_time_left(*checkpoint, self.trainer)
            if self.subcommand == "fit" and self.run_folder is not None:
                self.lock = lock_run_folder(self.run_folder)  # main() closes it

        # before Lightning loads the checkpoint: weights that do not fit get one line naming the file
        before_fit = before_validate = _check_ckpt_path

    _cli_class.parser = Parser
    return HyperRLCLI


def _listed(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _failure(exc: BaseException, misconfiguration: type) -> tuple[str, int] | None:
    """The line (after ``hyperrl: ``) and exit status a run that raised ``exc`` ends with: 2 for a user's mistake,
    1 for a run stopped on purpose; ``None`` for anything else (a bug: its traceback is shown)."""
    if isinstance(exc, CheckpointError):  # raised while Lightning loads the checkpoint
        return f"error: --ckpt_path {getattr(_cli_class.last, 'checkpoint_path', None)} {exc}", 2
    if isinstance(exc, (CheckpointWriteError, NonFiniteLossError)):
        return f"stopped: {exc}", 1
    if isinstance(exc, FileNotFoundError):
        return f"error: {exc}", 2
    # ours, the parser's, and Lightning's word for a bad trainer or callback setting (--trainer.max_steps -5), also
    # when jsonargparse wraps them in a ValueError while instantiating classes
    cause = configuration_error_in(exc, (UsageError, misconfiguration))
    if cause is None or not (cause is exc or isinstance(exc, ValueError)):
        return None
    ours = isinstance(cause, (ConfigurationError, UsageError))
    return f"error: {one_line(str(cause)) if ours else ' '.join(str(cause).split())}", 2


def main(args: list[str] | None = None) -> None:
    """The ``hyperrl`` command (``fit``, ``validate``); ``args`` default to ``sys.argv[1:]``."""
    from_argv = args is None or [str(a) for a in args] == sys.argv[1:]  # the console script, or one passing argv on
    args = [str(a) for a in (sys.argv[1:] if from_argv else args)]
    if help_cache.answer(args):  # "hyperrl", "hyperrl --help", a cached "hyperrl fit --help": nothing heavy imported
        return
    os.environ.setdefault("MUJOCO_GL", "egl")
    # OpenMP threads that spin while waiting make every op crawl once another process shares the cores
    # (docs/benchmarks.md, "Shared machines"); passive waiting costs nothing when alone.
    # Must be set before torch is imported, which happens below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # jsonargparse's switch for its deprecation notices, which Lightning's own calls into it trigger in every run
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    verbose = verbose_flag(args)
    console.set_verbosity(verbose)
    console.quiet_known_warnings()
    console.quiet_mujoco_model_warnings()
    try:
        check_config_files(args)
    except ConfigurationError as exc:
        print(f"hyperrl: error: {exc}", file=sys.stderr)
        sys.exit(2)
    args = bare_verbose(null_group_settings_as_mappings(non_finite_as_yaml(args)))
    if from_argv:  # LightningCLI warns when given args while sys.argv holds some: hand it the rewritten ones there
        sys.argv[1:] = args
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    _cli_class.last = None
    try:
        from hyperrl.algos import Algorithm

        console.set_verbosity(verbose)  # Lightning sets its loggers to INFO when imported
        register_parser_mode()
        cli = _cli_class()
        with help_cache.recording(args):
            cli(
                Algorithm,
                subclass_mode_model=True,
                save_config_kwargs={"overwrite": True},
                args=None if from_argv else args,
                auto_configure_optimizers=False,
                trainer_defaults=TRAINER_DEFAULTS,
                seed_everything_default=False,
                parser_class=_cli_class.parser,
                parser_kwargs={"parser_mode": PARSER_MODE, "allow_abbrev": False},
            )
    except (ValueError, UsageError, MisconfigurationException, RuntimeError, FileNotFoundError) as exc:
        failure = _failure(exc, MisconfigurationException)
        if failure is None:
            raise
        print(f"hyperrl: {failure[0]}", file=sys.stderr)
        sys.exit(failure[1])
    except (KeyboardInterrupt, SystemExit) as exc:
        # Ctrl-C before training started (the clean stop needs the training loop), or a second Ctrl-C: Lightning
        # turns one it catches into exit(1)
        stop = getattr(_cli_class.last, "stop_on_signal", None)
        if isinstance(exc, SystemExit) and not (exc.code == 1 and stop is not None and stop.interrupted):
            raise
        print("hyperrl: interrupted: stopped at once, nothing saved since the last checkpoint", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        if getattr(_cli_class.last, "lock", None) is not None:
            _cli_class.last.lock.close()
    console.report_signal_stop(getattr(_cli_class.last, "stop_on_signal", None), args)
    if getattr(_cli_class.last, "subcommand", None) == "fit":
        console.report_time_stop(getattr(_cli_class.last, "trainer", None), args)


if __name__ == "__main__":
    main()
