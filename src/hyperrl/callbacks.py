"""What the ``hyperrl`` command adds to every Trainer: a clean stop on SIGTERM/SIGINT, an honest progress bar, and a
CSV logger that continues a resumed run's ``metrics.csv`` instead of deleting it.

:class:`StopOnSignal` turns SIGTERM (what SLURM, Kubernetes and ``timeout`` send) and SIGINT (Ctrl-C) into: finish the
training step in progress, write ``last.ckpt`` through the run's own ``ModelCheckpoint`` (its last-checkpoint saving,
through the atomic checkpoint writer), stop the loop with ``trainer.should_stop``. The CLI then exits with
``128 + signal`` (143 / 130) and one line naming the checkpoint and the command that resumes it. The checkpoint is
written at the same point of a step as the periodic ones (``on_train_batch_end``), so resuming it continues exactly
as the uninterrupted run would have. A second signal while stopping falls back to the default action (immediate).
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import threading
import time
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(Callback):
    """Stop training after the current step on SIGTERM/SIGINT, with ``last.ckpt`` written.

    After ``trainer.fit`` returns, :attr:`received` is the signal number (``None`` if none came), :attr:`step` the
    training step the run stopped after and :attr:`checkpoint` the file written (``None`` if nothing could be).
    Under data parallelism the ranks agree on the step to stop after (one all-reduce of a flag per step).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.interrupted = False  # a KeyboardInterrupt reached Lightning (Ctrl-C before training, or a second one)
        self.step: int | None = None
        self.checkpoint: str | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ handlers
    def on_train_start(self, trainer, pl_module) -> None:
        # installed here, after Lightning's own SIGTERM handler (registered just before this hook): ours replaces it
        # (Lightning's would raise SIGTERMException, a SystemExit with status 0, at the end of the step, unsaved)
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # a second signal: stop now, the default way
            self._restore()
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()
        if self.step is None:  # a signal after the last training step (in the last evaluation): the run ended on its
            self.received = None  # own, with its final checkpoint; nothing was stopped

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()
        self.interrupted = self.interrupted or isinstance(exception, KeyboardInterrupt)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    # ------------------------------------------------------------------ stopping
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or self.step is not None:
            return
        if self.received is None:  # the signal reached another rank
            self.received = signal.SIGTERM
        self.step = trainer.global_step
        self.checkpoint = save_last_checkpoint(trainer, pl_module, outputs, batch, batch_idx)
        trainer.should_stop = True
        # finish with this step: Lightning would otherwise run one more validation when should_stop is set
        trainer.limit_val_batches = 0


def save_last_checkpoint(trainer, pl_module, outputs=None, batch=None, batch_idx: int = 0) -> str:
    """Write ``last.ckpt`` now (inside ``on_train_batch_end``) through the trainer's ``ModelCheckpoint`` callbacks;
    returns its path. A periodic checkpoint due at this step is written first, as it would have been."""
    written = None
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        callback.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # the periodic save, if due now
        if callback.save_last:
            if callback._last_global_step_saved != trainer.global_step:  # no periodic save at this step
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            written = written or callback.last_model_path
    if written is None:  # no ModelCheckpoint keeps a last.ckpt: write one where checkpoints go
        checkpoint_dir = next(
            (cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)),
            os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints"),
        )
        written = os.path.join(checkpoint_dir, "last.ckpt")
        trainer.save_checkpoint(written)
    return written


class CurrentLastCheckpoint(Callback):
    """``last.ckpt`` holds the end of the run. Lightning's ``ModelCheckpoint`` writes it at the end of training only
    when it wrote nothing during the run: with periodic checkpoints every 20 steps, a 50-step run ended with a
    ``last.ckpt`` of step 40. This writes it at the end too, in the same hook (``on_train_end``), through the same
    ``ModelCheckpoint`` method."""

    def on_train_end(self, trainer, pl_module) -> None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and \
                    callback._last_global_step_saved != trainer.global_step:
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


class RunProgressBar(TQDMProgressBar):
    """One bar for the whole run: training steps done of ``max_steps`` (continuing after a resume), the elapsed time
    and an ETA, one rate (the module's ``train/fps``: environment frames per second) and the latest values of the
    module's other progress-bar metrics (``train/episode_return``, ``eval/return``). No ``v_num``.

    Off a terminal (a batch scheduler's log file) a bar redrawn every step would write ~86 bytes a step: there the
    same line is printed, as a plain line, every :attr:`LOG_INTERVAL_S` seconds, after each evaluation and at the end.
    """

    BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]"
    LINE_FORMAT = "{desc} {percentage:3.0f}% {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]"
    #: metric -> the label it gets in the bar
    LABELS = {"train/episode_return": "episode", "eval/return": "eval"}
    #: seconds between progress lines off a terminal
    LOG_INTERVAL_S = 30.0

    def __init__(self, *args, on_terminal: bool | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_terminal = sys.stdout.isatty() if on_terminal is None else on_terminal
        self._last_line = float("-inf")
        self._shown: tuple | None = None  # (step, postfix) of the last line printed off a terminal
        self._devnull = None

    def init_train_tqdm(self):
        if self.on_terminal:
            bar = super().init_train_tqdm()
            bar.bar_format = self.BAR_FORMAT
        else:  # kept up to date, drawn nowhere: _show prints its line
            self._devnull = self._devnull or open(os.devnull, "w")
            bar = Tqdm(disable=self.is_disabled, file=self._devnull, smoothing=0, bar_format=self.LINE_FORMAT)
        bar.desc = "train"
        return bar

    def init_validation_tqdm(self):
        return super().init_validation_tqdm() if self.on_terminal else Tqdm(disable=True)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._count_steps(trainer)

    def on_train_epoch_start(self, trainer, *_) -> None:
        # Lightning resets the bar to the epoch's batches ("Epoch 1 | 1800/?" after a resume); it counts steps here
        self._count_steps(trainer)
        self.train_progress_bar.refresh()

    def _count_steps(self, trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # the ETA's rate counts this session's steps only
        bar.set_description_str("train", refresh=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.on_terminal:
            due = self._should_update(trainer.global_step, self.train_progress_bar.total)
        else:
            due = time.monotonic() - self._last_line >= self.LOG_INTERVAL_S
        if due:
            self._show(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._show(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        # Lightning's own on_validation_end would also redraw the bar with the raw metric names
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if self._train_progress_bar is not None and trainer.state.fn == "fit":
            self._show(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.on_terminal:
            self._show(trainer, pl_module)
        super().on_train_end(trainer, pl_module)
        if self._devnull is not None:
            self._devnull.close()
            self._devnull = None

    def _show(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar.disable:
            return
        bar.n = trainer.global_step
        bar.set_postfix_str(self.postfix(self.get_metrics(trainer, pl_module)), refresh=False)
        if self.on_terminal:
            bar.refresh()
            return
        if self._shown != (bar.n, bar.postfix):  # an evaluation and the epoch's end at one step: one line
            print(str(bar), file=sys.stderr, flush=True)
        self._last_line, self._shown = time.monotonic(), (bar.n, bar.postfix)

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = dict(super().get_metrics(trainer, pl_module))
        metrics.pop("v_num", None)
        return metrics

    @classmethod
    def postfix(cls, metrics: dict) -> str:
        """``"54 frames/s, episode=123.4, eval=1000"``: the rate first, then the other metrics (tqdm puts the
        ``", "`` before it)."""
        parts = []
        fps = metrics.pop("train/fps", None)
        if fps is not None:
            parts.append(f"{_number(fps, rate=True)} frames/s")
        parts += [f"{cls.LABELS.get(k, k)}={_number(v)}" for k, v in metrics.items()]
        return ", ".join(parts)


def _number(value, rate: bool = False) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.0f}" if rate and abs(value) >= 10 else f"{value:.4g}"


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger``, except that an existing ``metrics.csv`` in the log folder is continued (a resumed
    run appends its rows; new columns rewrite the header with the old rows kept) instead of being deleted. At train
    start (:class:`ContinuedMetrics`) the rows logged after the checkpoint's step are dropped: a run resumed from an
    older checkpoint than its last recomputes those steps, and the file keeps one history, not two."""

    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class ContinuedMetrics(Callback):
    """A resumed run's ``metrics.csv`` (:class:`CSVLogger`) keeps the rows up to its checkpoint's step only."""

    def on_train_start(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.experiment.drop_rows_from(trainer.global_step)


class _AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes an existing metrics.csv here; this one reads its columns and appends below them
        self._continued = self._fs.isfile(self.metrics_file_path)
        if self._continued:
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))

    def drop_rows_from(self, step: int) -> None:
        """Drop the rows of step ``step`` and later (Lightning labels the rows of training step ``n`` with
        ``n - 1``: a checkpoint at step ``s`` holds the rows before ``s``, the evaluation after its last step
        included)."""
        if not self._continued:
            return
        self._continued = False
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))

        def kept(row: dict) -> bool:
            try:
                return float(row["step"]) < step
            except (KeyError, TypeError, ValueError):  # a row without a step is not a recomputed one
                return True

        keep = [r for r in rows if kept(r)]
        if len(keep) == len(rows):
            return
        tmp = f"{self.metrics_file_path}.tmp"
        with self._fs.open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, self.metrics_file_path)
