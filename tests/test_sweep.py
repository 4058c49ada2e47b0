"""hyperrl sweep: the grid, validation before any run, one-line errors, runs in their folders, skip and resume."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from hyperrl.errors import ConfigurationError
from hyperrl.experiments.sweep import fit_args, load_sweep, run_sweep, setting_args, validate

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "conf", "quickstart.yaml")
TINY = """
configs: [{quickstart}]
overrides:
  trainer.val_check_interval: 30
  model.init_args.warmup_frames: 20
  model.init_args.learning_starts: 20
  model.init_args.batch_size: 16
  model.init_args.eval_episodes: 1
  model.init_args.actor_hidden: [16, 16]
  model.init_args.critic: mlp
  model.init_args.critic_kwargs: null
{extra}
"""


def sweep_file(tmp_path, extra: str = "grid: {}\nseeds: [0]", name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(TINY.format(quickstart=os.path.abspath(QUICKSTART), extra=textwrap.dedent(extra)))
    return str(path)


def test_grid_is_crossed_with_seeds_in_order(tmp_path):
    path = sweep_file(tmp_path, """
        grid:
          critic:
            hyper: {model.init_args.critic: sa_hyper, model.init_args.critic_kwargs: {dynamic_hidden: [8]}}
            mlp: {model.init_args.critic: mlp}
          model.init_args.env: [InvertedPendulum-v5, Reacher-v5]
        seeds: [3, 4]
        """)
    sweep = load_sweep(path)
    assert [r.name for r in sweep.runs][:3] == [
        "hyper-InvertedPendulum-v5-seed3", "hyper-InvertedPendulum-v5-seed4", "hyper-Reacher-v5-seed3"]
    assert len(sweep.runs) == 8
    run = sweep.runs[0]
    assert run.labels == {"critic": "hyper", "env": "InvertedPendulum-v5"}
    settings = dict(run.settings)
    assert settings["model.init_args.critic_kwargs"] == {"dynamic_hidden": [8]}
    assert settings["model.init_args.env"] == "InvertedPendulum-v5" and settings["model.init_args.seed"] == 3
    assert setting_args([("a.b", None), ("c", [1, 2]), ("trainer.callbacks+", "X")]) == [
        "--a.b", "null", "--c", "[1, 2]", "--trainer.callbacks+=X"]
    args = fit_args(sweep, run, "/o", ["--trainer.max_steps", "9"])
    assert args[0] == "fit" and args[-2:] == ["--trainer.max_steps", "9"]  # the -- FIT OPTIONS come last and win
    assert args[args.index("--trainer.default_root_dir") + 1] == f"/o/{run.name}"


@pytest.mark.parametrize("extra, message", [
    ("grid: {}\nseeds: [0]\nlaunch: now", "unknown key 'launch'"),
    ("grid: {}\nseeds: []", "the grid is empty"),
    ("grid: {critic: {}}\nseeds: [0]", "the grid is empty"),
    ("grid: {critic: 3}", "must be a list of values"),
    ("seeds: [a]", "seeds="),
])
def test_bad_sweep_files(tmp_path, extra, message):
    with pytest.raises(ConfigurationError, match=message):
        load_sweep(sweep_file(tmp_path, extra))


def test_overrides_fit_would_reject_are_caught_before_any_run(tmp_path):
    bad_key = load_sweep(sweep_file(tmp_path, "grid: {}\nseeds: [0]\n", "a.yaml"))
    bad_key.runs[0].settings.insert(0, ("model.init_args.no_such_option", 1))
    with pytest.raises(ConfigurationError, match="no_such_option"):
        validate(bad_key, str(tmp_path / "o"), [], report=lambda _: None)
    bad_critic = sweep_file(tmp_path, "grid: {critic: {x: {model.init_args.critic: resnet_feature}}}", "b.yaml")
    with pytest.raises(ConfigurationError, match="run x-seed0: .*resnet_feature"):
        validate(load_sweep(bad_critic), str(tmp_path / "o"), [], report=lambda _: None)
    bad_trainer = sweep_file(tmp_path, "grid: {v: {x: {trainer.val_check_interval: 0}}}", "c.yaml")
    with pytest.raises(ConfigurationError, match="run x-seed0: trainer.val_check_interval=0 is not allowed"):
        validate(load_sweep(bad_trainer), str(tmp_path / "o"), [], report=lambda _: None)
    assert not (tmp_path / "o").exists()  # nothing ran


def test_ray_missing_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from hyperrl.commands import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, whether Ray is installed or not
    with pytest.raises(SystemExit) as exc:
        main(["sweep", sweep_file(tmp_path), "--launcher", "ray", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "pip install 'hyperrl[ray]'" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tmp_path / "missing.yaml")])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err


def test_help_lists_the_experiment_commands(capsys):
    from hyperrl.commands import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "fit" in out and "sweep" in out and "analyze gradients" in out and "report" in out


def test_a_sweep_runs_each_fit_in_its_folder_and_skips_it_next_time(tmp_path, capsys):
    out = tmp_path / "out"
    runs = run_sweep(sweep_file(tmp_path), str(out), fit_options=["--trainer.max_steps", "40"], poll=0.2)
    assert [r.state for r in runs] == ["done"]
    assert json.loads((out / "seed0" / "sweep_run.json").read_text())["state"] == "done"
    run_dir = out / "seed0" / "version_0"
    config = (run_dir / "config.yaml").read_text()
    assert "max_steps: 40" in config and "critic: mlp" in config  # the full resolved config of the fit
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "metrics.csv").is_file()
    again = run_sweep(sweep_file(tmp_path), str(out), fit_options=["--trainer.max_steps", "40"], poll=0.2, check=False)
    assert [r.state for r in again] == ["skipped"]
    text = capsys.readouterr().out
    assert "seed0: done in" in text and "done before: skipped" in text and "1 done, 0 skipped" in text
    assert "0 frames" not in text, "40 steps log no training row (log_every_n_steps 50): no frame count, not 0"


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_others_and_an_interrupted_run_resumes(tmp_path, capsys):
    from hyperrl.experiments.report import read_metrics

    # a GPU accelerator passes the check (a run may land on a GPU node) and fails on this CPU machine: a failing run
    path = sweep_file(tmp_path, """
        grid:
          variant:
            ok: {}
            bad: {trainer.accelerator: gpu}
        seeds: [0]
        """)
    out = tmp_path / "out"
    runs = run_sweep(path, str(out), fit_options=["--trainer.max_steps", "60"], poll=0.2)
    assert [r.state for r in runs] == ["done", "failed"]
    assert "No supported gpu backend found" in runs[1].error
    assert (out / "bad-seed0" / "fit.log").is_file()
    # mark the finished run as interrupted: the next sweep resumes it from last.ckpt and keeps its first metrics
    record = json.loads((out / "ok-seed0" / "sweep_run.json").read_text())
    (out / "ok-seed0" / "sweep_run.json").write_text(json.dumps({**record, "state": "running"}))
    runs = run_sweep(path, str(out), fit_options=["--trainer.max_steps", "90"], poll=0.2, check=False)
    assert [r.state for r in runs] == ["done", "failed"] and runs[0].resumed
    assert "--ckpt_path" in json.loads((out / "ok-seed0" / "sweep_run.json").read_text())["command"]
    assert not (out / "ok-seed0" / "version_1").exists()  # continued in its own folder
    evals = [int(r["step"]) for r in read_metrics(str(out / "ok-seed0" / "version_0")) if r.get("eval/return")]
    assert evals == [29, 59, 89]
    assert "1 failed" in capsys.readouterr().out
