"""What a ``hyperrl`` run prints beyond its own lines: the libraries' log levels, the warnings that do not apply to
these modules, MuJoCo's warnings about its stock model files, and the line a run stopped by a signal ends with.
Nothing here imports torch or Lightning at module level.
"""

from __future__ import annotations

import os
import sys


def set_verbosity(verbose: bool) -> None:
    """Quiet by default: Lightning's info lines (devices, tips, checkpoint notes) and TorchRL's (coloured, written
    into the progress bar) only with ``--verbose``; warnings and errors always."""
    import logging

    level = logging.INFO if verbose else logging.WARNING
    if not verbose:
        os.environ.setdefault("RL_LOGGING_LEVEL", "WARNING")  # read when torchrl is imported
    for name in ("lightning.pytorch", "lightning.fabric", "torchrl"):
        logging.getLogger(name).setLevel(level)


def quiet_known_warnings() -> None:
    """Silence warnings that do not apply to these modules (they are by design)."""
    import warnings

    for pattern in (
        ".*no pre-optimization state was saved.*",  # we checkpoint the state after each update, on purpose
        ".*module\\(s\\) in eval mode.*",
        ".*LeafSpec.*",
        ".*Experiment logs directory .* exists and is not empty.*",  # TensorBoard and CSV share the run directory
        ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run continues in its own folder
        ".*LightningCLI's args parameter is intended to run from within Python.*",  # main(args) is that use
        ".*precision=bf16. is supported for historical reasons.*",  # docs/cli.md accepts bf16 for bf16-mixed
        # validate of a checkpoint writes beside its run and saves no checkpoints: nothing to reload
        ".*The dirpath has changed from .* to '.*[/\\\\]validate-[^/\\\\]*[/\\\\]checkpoints'.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


#: MuJoCo compiler warnings about the stock model files (gymnasium's), not about anything a user set.
MUJOCO_MODEL_WARNINGS = ("'settotalmass' is deprecated",)


def quiet_mujoco_model_warnings() -> None:
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


def report_signal_stop(stop, args: list[str]) -> None:
    """After a run stopped by SIGTERM/SIGINT (``stop``: the run's :class:`~hyperrl.callbacks.StopOnSignal`): one line
    naming the checkpoint and the command that resumes it, then exit ``128 + signal`` (143 / 130)."""
    import shlex
    import signal

    if stop is None or stop.received is None:
        return
    name = signal.Signals(stop.received).name
    kept = _without(args, "--ckpt_path")  # the same command, with --ckpt_path pointing at the new checkpoint
    if stop.checkpoint is None:
        print(f"hyperrl: stopped by {name} before the first training step ended: nothing to resume from",
              file=sys.stderr)
    else:
        resume = shlex.join(["hyperrl", *kept, "--ckpt_path", stop.checkpoint])
        print(f"hyperrl: stopped by {name} after step {stop.step}: checkpoint {stop.checkpoint}; resume with: {resume}",
              file=sys.stderr)
    sys.exit(128 + int(stop.received))


def _without(args: list[str], *options: str) -> list[str]:
    """``args`` less each of ``options`` and its value (``--option value`` or ``--option=value``)."""
    kept = []
    for i, token in enumerate(args):
        if token in options or token.split("=", 1)[0] in options or (i and args[i - 1] in options):
            continue
        kept.append(token)
    return kept


def report_time_stop(trainer, args: list[str]) -> None:
    """After a fit that ``--trainer.max_time`` ended before ``max_steps``: one line naming the checkpoint and the
    command that continues it (the exit status stays 0: the run stopped where it was asked to)."""
    import shlex

    from hyperrl.runs import duration_text, time_limit_reached

    limit = time_limit_reached(trainer) if trainer is not None else None
    if limit is None:
        return
    checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    resume = shlex.join(["hyperrl", *_without(args, "--ckpt_path", "--trainer.max_time"), "--ckpt_path", checkpoint,
                         "--trainer.max_time", "DD:HH:MM:SS"])
    where = f"checkpoint {checkpoint}; to go on, give a larger --trainer.max_time (it counts the run's training time " \
            f"across resumes): {resume}" if checkpoint else "no checkpoint was written"
    print(f"hyperrl: stopped: --trainer.max_time {duration_text(limit)} reached after step {trainer.global_step}; {where}",
          file=sys.stderr)
