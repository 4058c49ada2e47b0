"""The meta-RL configs and MetaSAC through the ``hyperrl`` command."""

from __future__ import annotations

import glob
import json
import os

import pytest
from conftest import run_entry

from hyperrl.commands import main  # the console entry point (`hyperrl`)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "conf", "meta", "*.yaml")))
TINY_META = [
    "--config", os.path.join(ROOT, "conf", "meta", "quickstart.yaml"),
    "--model.init_args.tasks.n_train_tasks", "3",
    "--model.init_args.tasks.n_test_tasks", "2",
    *[f"--model.init_args.{net}.{name}={size}" for net in ("policy", "critic", "value")
      for name, size in (("primary_widths", "[8, 8, 16]"), ("dynamic_hidden", "[8]"))],
    "--model.init_args.replay.meta_batch_size", "2",
    "--model.init_args.replay.batch_size", "8",
    "--model.init_args.replay.initial_steps", "10",
    "--model.init_args.replay.steps_per_task", "10",
    "--model.init_args.replay.updates_per_iteration", "3",
    "--trainer.max_steps", "6",
    "--trainer.val_check_interval", "6",
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false",
]


@pytest.fixture(autouse=True)
def _no_stale_log_streams(no_stale_log_streams):
    pass


def run_cli(args, capsys):
    return run_entry(main, args, capsys)


@pytest.mark.parametrize("config", META_CONFIGS, ids=os.path.basename)
def test_every_meta_config_parses(config, capsys):
    """Each experiment config names only settings its module has (a typo would fail here, not after hours)."""
    code, out, err = run_cli(["fit", "--config", config, "--print_config"], capsys)
    assert code == 0, err
    assert "class_path: hyperrl.algos." in out


def test_meta_quickstart_runs_through_the_cli(capsys, tmp_path, monkeypatch):
    """``hyperrl fit`` of a meta config finishes with exit status 0 and writes the per-task evaluation."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY_META], capsys)
    assert code == 0, err
    [metrics] = glob.glob(str(tmp_path / "**" / "metrics.csv"), recursive=True)
    text = open(metrics).read()
    assert "eval/test_tasks_return" in text and "train/critic_loss" in text
    per_task = json.load(open(os.path.join(os.path.dirname(metrics), "eval_tasks.json")))
    assert len(per_task["returns"]["test"]) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model.init_args.env", "HalfCheetah-v5"], "has no task API"),
        (["--model.init_args.tasks.n_train_tasks", "0"], "tasks.n_train_tasks=0 is not allowed"),
        (["--model.init_args.context", "telepathy"], "unknown context provider 'telepathy'"),
        (["--model.init_args.policy", "nope"], "unknown policy 'nope'"),
        (["--model.init_args.policy", "context_mlp", "--model.init_args.policy.hidden", "[8]"],
         "name its class with them (--model.policy ContextMLPPolicy --model.policy.hidden ...)"),
    ],
)
def test_meta_mistakes_are_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY_META, *args], capsys)
    lines = [line for line in err.splitlines() if line.startswith("hyperrl:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_plain_sac_with_a_task_family_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", "--config", os.path.join(ROOT, "conf", "quickstart.yaml"),
                            "--model.init_args.env", "hyperrl/Navigation2D-v0", "--trainer.max_steps", "2"], capsys)
    assert code == 2 and "task famil" in err and "Traceback" not in err


def test_meta_runs_log_frames_per_second(capsys, tmp_path, monkeypatch):
    """MetaSAC collects once per iteration of many updates: its frames/s still reaches the log (and the bar) from
    the first log line, not only after a second collection."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY_META, "--model.init_args.replay.updates_per_iteration", "6",
                            "--trainer.log_every_n_steps", "2"], capsys)
    assert code == 0, err
    [metrics] = glob.glob(str(tmp_path / "**" / "metrics.csv"), recursive=True)
    import csv

    with open(metrics) as f:
        rates = [row["train/fps"] for row in csv.DictReader(f) if row.get("train/fps")]
    assert rates and float(rates[0]) > 0


GROUPS = ("tasks", "optim", "replay", "evaluation")


def _flat(hparams: dict) -> dict:
    """Hyperparameters as checkpoints held them before the settings were grouped: every group's fields top-level."""
    flat = {key: value for key, value in hparams.items() if key not in GROUPS}
    for group in GROUPS:
        flat.update(hparams.get(group) or {})
    return flat


def _tiny_pearl_checkpoint(tmp_path, capsys, flat=False, **saved_settings):
    """A 3-step PEARL run's last.ckpt with ``saved_settings`` added to its hyperparameters (with ``flat``, first made
    flat, as older checkpoints hold them); the fit's arguments."""
    import torch

    base = ["fit", "--config", os.path.join(ROOT, "conf", "meta", "pearl_quickstart.yaml"),
            "--model.init_args.replay.initial_steps", "20", "--model.init_args.replay.batch_size", "8",
            "--trainer.default_root_dir", str(tmp_path)]
    code, _, err = run_cli([*base, "--trainer.max_steps", "3"], capsys)
    assert code == 0, err
    path = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    if flat:
        checkpoint["hyper_parameters"] = _flat(checkpoint["hyper_parameters"])
    checkpoint["hyper_parameters"].update(saved_settings)
    torch.save(checkpoint, path)
    return base, path


def test_a_pearl_checkpoint_with_retired_or_renamed_settings_still_resumes(tmp_path, capsys):
    """Checkpoints written before PEARL was composed of parts carry settings PEARL now derives (``context``,
    ``steps_per_task``, ...), and older ones ``meta_batch`` (now ``meta_batch_size``, MAML's name), all flat (before
    the settings were grouped): resuming drops the first, renames the second with its value, and continues, instead
    of failing to rebuild the model."""
    import yaml

    from hyperrl.algos import PEARL

    legacy = {"context": "pearl", "context_kwargs": None, "context_dim": 8, "steps_per_task": 500, "eval_episodes": 1}
    assert set(legacy) == PEARL.RETIRED_HPARAMS and PEARL.RENAMED_HPARAMS == {"meta_batch": "meta_batch_size"}
    base, path = _tiny_pearl_checkpoint(tmp_path, capsys, flat=True, **legacy)
    import torch

    checkpoint = torch.load(path, weights_only=False)
    checkpoint["hyper_parameters"]["meta_batch"] = checkpoint["hyper_parameters"].pop("meta_batch_size")
    torch.save(checkpoint, path)
    code, _, err = run_cli([*base, "--trainer.max_steps", "5", "--ckpt_path", str(path)], capsys)
    assert code == 0, err
    with open(tmp_path / "version_0" / "config.yaml") as f:
        resumed = yaml.safe_load(f)["model"]["init_args"]
    assert resumed["replay"]["meta_batch_size"] == 16 and "meta_batch" not in resumed | resumed["replay"]
    assert not set(legacy) & set(resumed) and set(GROUPS) <= set(resumed), resumed


def test_a_checkpoint_with_network_kwargs_resumes_with_the_networks_as_class_path_settings(tmp_path, capsys):
    """Checkpoints written before networks took ``class_path``/``init_args`` name a preset and give its settings in
    ``<network>_kwargs`` (and hold the settings flat, ungrouped): resuming reads them as the preset's class with those
    settings, builds the same networks (the weights load) and continues."""
    import yaml

    legacy = {"policy": "hyper", "policy_kwargs": {"primary_widths": [32, 32, 64], "blocks_per_stage": 1,
                                                   "dynamic_hidden": [64]},
              "critic": "mlp", "critic_kwargs": {"hidden": [64, 64]}, "value": "mlp", "value_kwargs": {"hidden": [64, 64]}}
    base, path = _tiny_pearl_checkpoint(tmp_path, capsys, flat=True, **legacy)
    code, _, err = run_cli([*base, "--trainer.max_steps", "5", "--ckpt_path", str(path)], capsys)
    assert code == 0, err
    with open(tmp_path / "version_0" / "config.yaml") as f:
        resumed = yaml.safe_load(f)["model"]["init_args"]
    assert not any(key.endswith("_kwargs") and key != "env_kwargs" for key in resumed), resumed
    assert resumed["critic"] == {"class_path": "hyperrl.nn.MLPMetaQ", "init_args": {"hidden": [64, 64]}}
    assert resumed["policy"]["init_args"]["primary_widths"] == [32, 32, 64]


def test_a_checkpoint_whose_model_no_longer_builds_is_refused_in_one_line(tmp_path, capsys):
    """A saved setting the algorithm does not know (a checkpoint of another version): one line naming the
    checkpoint, exit 2, no traceback."""
    base, path = _tiny_pearl_checkpoint(tmp_path, capsys, setting_of_a_later_version=1)
    code, _, err = run_cli([*base, "--trainer.max_steps", "5", "--ckpt_path", str(path)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert any(str(path) in line and "setting_of_a_later_version" in line for line in lines), err
