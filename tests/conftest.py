"""Shared fixtures: tiny SAC/TD3 modules and a quiet CPU Trainer."""

from __future__ import annotations

import os
import warnings

import pytest
from hyperrl.nn import CRITIC

os.environ.setdefault("MUJOCO_GL", "egl")

TINY_HYPER = {"primary_widths": [16, 16, 32], "blocks_per_stage": 1, "dynamic_hidden": [16]}


#: the settings groups of SAC/TD3 (``replay={...}``): a group in tiny_kwargs' overrides is merged onto its tiny one
GROUPS = ("replay", "optim", "evaluation")


def tiny_kwargs(**overrides):
    """A tiny SAC/TD3's settings; a group given in OVERRIDES (``replay={"batch_size": 8}``) changes only the fields it
    names, the other tiny ones stay."""
    kwargs = dict(
        env="InvertedPendulum-v5",
        critic=CRITIC.with_settings("sa_hyper", dict(TINY_HYPER)),
        actor_hidden=[32, 32],
        replay={"batch_size": 32, "buffer_size": 10_000, "warmup_frames": 40, "learning_starts": 40},
        evaluation={"eval_episodes": 2},
    )
    for key, value in overrides.items():
        if key in GROUPS and isinstance(value, dict):
            value = {**kwargs.get(key, {}), **value}
        kwargs[key] = value
    return kwargs


def make_trainer(tmp_path, max_steps, callbacks=(), **overrides):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from hyperrl.checkpoint_io import AtomicCheckpointIO

    warnings.filterwarnings("ignore", message=".*pre-optimization state.*")
    warnings.filterwarnings("ignore", message=".*in eval mode.*")
    kwargs = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(tmp_path), name="run", version="v"),
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=10**9,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_checkpointing=False,
        callbacks=list(callbacks),
        plugins=[AtomicCheckpointIO()],  # the checkpoint writer the CLI uses
    )
    if any(type(c).__name__ == "ModelCheckpoint" for c in callbacks):
        kwargs["enable_checkpointing"] = True
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


@pytest.fixture
def tiny():
    return tiny_kwargs


def run_entry(main, args, capsys):
    """Run a ``hyperrl`` entry point (``hyperrl.cli.main`` or ``hyperrl.commands.main``) on ARGS in-process;
    returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_stale_log_streams(monkeypatch):
    """Lightning's log handlers keep the stderr of the test that created them; with capsys swapping streams between
    in-process runs, writing there raises inside ``logging``. That is a test artefact, not output of the CLI."""
    import logging

    monkeypatch.setattr(logging, "raiseExceptions", False)
