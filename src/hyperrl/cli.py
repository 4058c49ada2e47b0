"""The ``hyperrl`` command: a LightningCLI over the algorithm modules.

    hyperrl fit --config conf/sac_hyper.yaml --model.init_args.critic mlp --trainer.max_steps 200000
    hyperrl fit --config conf/sac_hyper.yaml --ckpt_path runs/sac_hyper/version_0/checkpoints/last.ckpt
    hyperrl validate --config conf/sac_hyper.yaml --ckpt_path <file>

User mistakes end with one line on stderr and exit status 2; a run stopped by a non-finite loss exits with 1.
"""

from __future__ import annotations

import os
import sys

from hyperrl.errors import ConfigurationError, NonFiniteLossError

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
    "callbacks": [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_train_steps": 5000, "save_last": True, "save_top_k": -1},
        }
    ],
}


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


def _configuration_error_in(exc: BaseException) -> BaseException | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigurationError):
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
            _share_log_dir(config)

    _cli_class.parser = Parser
    return HyperRLCLI


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
    try:
        from hyperrl.algos import OffPolicyAlgorithm

        cli = _cli_class()
        cli(
            OffPolicyAlgorithm,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
            parser_class=_cli_class.parser,
        )
    except (ConfigurationError, UsageError) as exc:
        print(f"hyperrl: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as exc:
        print(f"hyperrl: stopped: {exc}", file=sys.stderr)
        sys.exit(1)
    except ValueError as exc:
        # jsonargparse wraps errors raised while instantiating classes: report ours, re-raise anything else
        cause = _configuration_error_in(exc)
        if cause is None:
            raise
        print(f"hyperrl: error: {one_line(str(cause))}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as exc:
        print(f"hyperrl: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
