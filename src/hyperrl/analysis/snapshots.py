"""Light analysis snapshots of a fit: the module's weights (policy, critics, target critics) without the replay buffer.

Enabled from config, e.g.::

    hyperrl fit --config conf/sac_hyper.yaml \\
        --trainer.callbacks+=hyperrl.analysis.AnalysisSnapshots --trainer.callbacks.every_n_steps 10000

Every ``every_n_steps`` training steps and once when the fit ends, rank 0 writes
``<log dir>/snapshots/step_<global step, 9 digits>.pt``: a dict (loadable with ``torch.load(weights_only=True)``)

    {"format": 1, "step": int, "frames": int, "class_path": "hyperrl.algos.SAC", "env": "Hopper-v5",
     "hparams": {...constructor arguments...}, "state_dict": {...the LightningModule's parameters and buffers...}}

A paper-scale SAC snapshot is the twin critic and its target (~4 × 8.5M fp32 parameters, ~140 MB), not the 440 MB
of a checkpoint with its replay buffer. :func:`load_snapshot` rebuilds the module from it (``cls(**hparams)``).
"""

from __future__ import annotations

import glob
import importlib
import os
import re

import torch
from lightning.pytorch.callbacks import Callback

from hyperrl.errors import ConfigurationError, require_positive

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FORMAT = 1
_NAME = re.compile(r"step_(\d+)\.pt$")


def _plain(value):
    """hparams values as plain Python containers (jsonargparse may hand over Namespaces/tuples)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class AnalysisSnapshots(Callback):
    """Write an analysis snapshot every ``every_n_steps`` training steps and at the end of the fit.

    Args:
        every_n_steps: interval in training steps (``trainer.global_step``), > 0.
        at_fit_end: also write one when the fit ends (the final policy and critics).
        dirname: folder under the run's log dir.
        last_step: no interval snapshot after this step (``None``: none skipped); the paper's gradient study
            reads checkpoints every 10k steps up to 590k (hyperrl-paper.md §4).
    """

    def __init__(self, every_n_steps: int = 5000, at_fit_end: bool = True, dirname: str = SNAPSHOT_DIR,
                 last_step: int | None = None) -> None:
        require_positive("AnalysisSnapshots.every_n_steps", every_n_steps, integer=True)
        if last_step is not None:
            require_positive("AnalysisSnapshots.last_step", last_step, integer=True)
        self.last_step = None if last_step is None else int(last_step)
        self.every_n_steps = int(every_n_steps)
        self.at_fit_end = bool(at_fit_end)
        self.dirname = str(dirname)
        self._last_step: int | None = None

    def directory(self, trainer) -> str:
        root = trainer.log_dir or trainer.default_root_dir
        return os.path.join(root, self.dirname)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and (self.last_step is None or step <= self.last_step):
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_fit_end:
            self.save(trainer, pl_module)

    def save(self, trainer, pl_module) -> str | None:
        """Write the snapshot of ``pl_module`` at the current step (once per step; rank 0 only)."""
        step = int(trainer.global_step)
        if step == self._last_step or not trainer.is_global_zero:
            return None
        self._last_step = step
        hparams = {k: _plain(v) for k, v in dict(pl_module.hparams).items() if not str(k).startswith("_")}
        frames_per_batch = int(getattr(getattr(pl_module, "replay", None), "frames_per_batch", 1) or 1)
        cls = type(pl_module)
        snapshot = {
            "format": SNAPSHOT_FORMAT,
            "step": step,
            "frames": step * frames_per_batch * trainer.world_size,
            "class_path": f"{cls.__module__}.{cls.__qualname__}",
            "env": hparams.get("env"),
            "hparams": hparams,
            "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
        }
        folder = self.directory(trainer)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{step:09d}.pt")
        tmp = path + ".tmp"
        torch.save(snapshot, tmp)
        os.replace(tmp, path)  # a fit killed mid-write leaves no half-written snapshot
        return path


def find_snapshots(run_dir: str, dirname: str = SNAPSHOT_DIR) -> list[tuple[int, str]]:
    """``(step, path)`` of the snapshots of one run folder, by step."""
    found = []
    for path in glob.glob(os.path.join(run_dir, dirname, "step_*.pt")):
        match = _NAME.search(path)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_snapshot(path: str) -> dict:
    """The snapshot dict at ``path``; a file that is not one raises :class:`ConfigurationError`."""
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is the file's
        raise ConfigurationError(f"{path} cannot be read as an analysis snapshot: {' '.join(str(exc).split())[:200]}")
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT or "state_dict" not in snapshot:
        raise ConfigurationError(f"{path} is not an analysis snapshot (format {SNAPSHOT_FORMAT})")
    return snapshot


def load_snapshot(path: str):
    """Rebuild the LightningModule a snapshot was taken from, with its weights, in eval mode. Returns
    ``(module, snapshot)``."""
    snapshot = read_snapshot(path)
    module_name, _, class_name = snapshot["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: cannot import the algorithm {snapshot['class_path']!r}: {exc}") from None
    module = cls(**cls.current_hparams(snapshot["hparams"]))
    module.load_state_dict(snapshot["state_dict"])
    return module.eval(), snapshot
