"""``--trainer.max_time``: a fit it ends says so and how to go on; a resume whose limit the run already spent is
refused before it starts (Lightning's Timer counts a run's training time across resumes)."""

from __future__ import annotations

import csv
import subprocess
import sys

import torch

FIT = ["fit", "--model", "SAC", "--model.init_args.env", "Pendulum-v1", "--model.init_args.critic", "mlp",
       "--model.init_args.actor_hidden", "[8]", "--model.init_args.replay.warmup_frames", "10",
       "--model.init_args.replay.learning_starts", "10", "--model.init_args.replay.batch_size", "8",
       "--trainer.max_steps", "10000000", "--trainer.val_check_interval", "100000", "--torch_threads", "1"]


def _hyperrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyperrl.cli", *args], capture_output=True, text=True, timeout=600)


def test_a_fit_ended_by_max_time_says_so_and_a_spent_limit_is_refused_on_resume(tmp_path):
    root = ["--trainer.default_root_dir", str(tmp_path)]
    first = _hyperrl(*FIT, *root, "--trainer.max_time", "00:00:00:03")
    assert first.returncode == 0, first.stderr
    checkpoint = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    step = torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"]
    line = first.stderr.strip().splitlines()[-1]
    assert line.startswith(f"hyperrl: stopped: --trainer.max_time 0:00:03 reached after step {step}; checkpoint "
                           f"{checkpoint}; to go on, give a larger --trainer.max_time"), line
    assert line.endswith(f"--ckpt_path {checkpoint} --trainer.max_time DD:HH:MM:SS"), line
    # the row Lightning writes at the stopping step holds that step's values, not a copy of the last row's
    with open(tmp_path / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["train/frames"]]
    frames = [float(r["train/frames"]) for r in rows]
    assert int(rows[-1]["step"]) == step - 1 and frames == sorted(set(frames)), rows[-3:]

    again = _hyperrl(*FIT, *root, "--trainer.max_time", "00:00:00:03", "--ckpt_path", str(checkpoint))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"hyperrl: error: --trainer.max_time 0:00:03 is already spent by the run of --ckpt_path {checkpoint}: it has "
        f"trained for {again.stderr.split('trained for ')[1].split(' ')[0]} (the limit counts a run's training time "
        "across resumes); give a larger --trainer.max_time, or none"]

    more = _hyperrl(*FIT, *root, "--trainer.max_time", "00:00:00:06", "--ckpt_path", str(checkpoint))
    assert more.returncode == 0, more.stderr
    assert torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"] > step
    # a fit that reaches max_steps within its time says nothing about the limit
    done = _hyperrl(*FIT[:-6], "--trainer.max_steps", "20", "--torch_threads", "1", "--trainer.default_root_dir",
                    str(tmp_path / "short"), "--trainer.max_time", "00:01:00:00")
    assert done.returncode == 0 and "max_time" not in done.stderr, done.stderr
