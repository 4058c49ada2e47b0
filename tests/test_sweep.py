"""hyperrl sweep without Ray: the grid, the check before any run, one-line errors (tests/test_sweep_ray.py runs
sweeps)."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from hyperrl.errors import ConfigurationError
from hyperrl.experiments.sweep_file import Scheduler, fit_args, load_sweep, setting_args, validate

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "conf", "quickstart.yaml")
TINY = """
configs: [{quickstart}]
overrides:
  trainer.val_check_interval: 30
  model.init_args.replay.warmup_frames: 20
  model.init_args.replay.learning_starts: 20
  model.init_args.replay.batch_size: 16
  model.init_args.evaluation.eval_episodes: 1
  model.init_args.actor_hidden: [16, 16]
  model.init_args.critic: mlp
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
            hyper: {model.init_args.critic: {class_path: SAHyperCritic, init_args: {dynamic_hidden: [8]}}}
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
    assert settings["model.init_args.critic"] == {"class_path": "SAHyperCritic", "init_args": {"dynamic_hidden": [8]}}
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
    ("scheduler: asha", r"scheduler must be a mapping with keys type, max_t, grace_period, reduction_factor, "
                        r"got 'asha'"),
    ("scheduler: {type: asha, max_t: 10, grace_period: 1, metric: x}", "unknown scheduler key 'metric'"),
    ("scheduler: {type: asha, grace_period: 1}", "scheduler needs max_t"),
    ("scheduler: {type: hyperband, max_t: 10, grace_period: 1}",
     r"scheduler.type='hyperband' is not allowed: expected one of asha$"),
    ("scheduler: {type: asha, max_t: 0, grace_period: 1}", "scheduler.max_t=0 is not allowed: expected a positive"),
    ("scheduler: {type: asha, max_t: 10, grace_period: 2.5}", "scheduler.grace_period=2.5 is not allowed"),
    ("scheduler: {type: asha, max_t: 10, grace_period: 1, reduction_factor: 1}",
     r"scheduler.reduction_factor=1 is not allowed: expected a number in \[1.5, 100\]$"),
    ("scheduler: {type: asha, max_t: 10, grace_period: 1, reduction_factor: .inf}", "reduction_factor=inf"),
    ("scheduler: {type: asha, max_t: 10, grace_period: 20}",
     r"scheduler.grace_period=20 is not allowed: expected <= max_t \(10\)$"),
])
def test_bad_sweep_files(tmp_path, extra, message):
    with pytest.raises(ConfigurationError, match=message):
        load_sweep(sweep_file(tmp_path, extra))


def test_a_scheduler_makes_pruned_runs_final(tmp_path):
    from hyperrl.experiments.sweep import final_states

    plain = load_sweep(sweep_file(tmp_path))
    assert plain.scheduler is None and final_states(plain) == ("done",)  # a pruned run resumes to its end
    asha = load_sweep(sweep_file(tmp_path, "seeds: [0]\nscheduler: {type: asha, max_t: 4000, grace_period: 500}"))
    assert asha.scheduler == Scheduler("asha", 4000, 500, 4.0) and final_states(asha) == ("done", "pruned")


@pytest.mark.parametrize("extra, fit_options, message", [
    ("", [], r"^run seed0: scheduler.grace_period=20 is not allowed: expected > the run's replay.learning_starts \(20\), "
             r"or its first rung ranks policies never updated$"),
    ("", ["--model.init_args.replay.learning_starts", "19", "--trainer.max_steps", "19"],
     r"^run seed0: scheduler.grace_period=20 is not allowed: expected <= the run's 19 frames "
     r"\(trainer.max_steps x replay.frames_per_batch\), or the scheduler never acts$"),
    ("grid: {algo: {sac: {}, td3: {model.class_path: hyperrl.algos.TD3}}}",
     ["--model.init_args.replay.learning_starts", "19"],
     r"^a scheduler ranks the runs of one algorithm: run sac-seed0 is hyperrl.algos.SAC, run td3-seed0 is "
     r"hyperrl.algos.TD3; sweep each algorithm in its own file$"),
    ("grid: {task: {reacher: {config: REACHER}, pendulum: {}}}", ["--model.init_args.replay.learning_starts", "19"],
     r"^a scheduler would rank runs reacher-seed0 \(Reacher-v5\) and pendulum-seed0 \(InvertedPendulum-v5\) "
     r"against each other: give the environment a grid axis of its own"),
])
def test_what_ranking_runs_needs_is_checked_before_any_run(tmp_path, extra, fit_options, message):
    (tmp_path / "reacher.yaml").write_text("model:\n  init_args:\n    env: Reacher-v5\n")  # the environment, not
    extra = extra.replace("REACHER", str(tmp_path / "reacher.yaml"))  # through model.init_args.env: one scheduler
    path = sweep_file(tmp_path, f"{extra}\nseeds: [0]\nscheduler: {{type: asha, max_t: 400, grace_period: 20}}")
    with pytest.raises(ConfigurationError, match=message):
        validate(load_sweep(path), str(tmp_path), fit_options, report=lambda line: None)


def test_a_scheduler_over_one_algorithm_and_an_environment_axis_passes(tmp_path):
    path = sweep_file(tmp_path, "grid: {model.init_args.env: [InvertedPendulum-v5, Reacher-v5]}\nseeds: [0]\n"
                                "scheduler: {type: asha, max_t: 400, grace_period: 20}")
    validate(load_sweep(path), str(tmp_path), ["--model.init_args.replay.learning_starts", "19"], report=lambda line: None)


def test_a_mistyped_callback_option_points_to_the_callbacks_help(tmp_path):
    path = sweep_file(tmp_path, """
        overrides:
          trainer.val_check_interval: 30
          trainer.callbacks+: {class_path: hyperrl.analysis.AnalysisSnapshots, init_args: {every_n_step: 10}}
        seeds: [0]
        """)
    with pytest.raises(ConfigurationError, match=r"unknown option 'every_n_step' for hyperrl.analysis."
                                                 r"AnalysisSnapshots: closest: every_n_steps \(hyperrl fit "
                                                 r"--trainer.callbacks.help hyperrl.analysis.AnalysisSnapshots "):
        validate(load_sweep(path), str(tmp_path), [], report=lambda line: None)


def test_overrides_fit_would_reject_are_caught_before_any_run(tmp_path):
    bad_key = load_sweep(sweep_file(tmp_path, "grid: {}\nseeds: [0]\n", "a.yaml"))
    bad_key.runs[0].settings.insert(0, ("model.init_args.no_such_option", 1))
    with pytest.raises(ConfigurationError, match="no_such_option"):
        validate(bad_key, str(tmp_path / "o"), [], report=lambda _: None)
    bad_critic = sweep_file(tmp_path, "grid: {critic: {x: {model.init_args.critic: resnet_feature}}}", "b.yaml")
    with pytest.raises(ConfigurationError, match="run x-seed0: .*resnet_feature"):
        validate(load_sweep(bad_critic), str(tmp_path / "o"), [], report=lambda _: None)
    assert not (tmp_path / "o").exists()  # nothing ran


def test_without_ray_tune_sweep_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from hyperrl.commands import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, whether Ray is installed or not
    with pytest.raises(SystemExit) as exc:
        main(["sweep", sweep_file(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "pip install 'hyperrl[ray]'" in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tmp_path / "missing.yaml")])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["sweep", sweep_file(tmp_path), "--max-parallel", "0"])
    assert exc.value.code == 2 and "--max-parallel 0 is not allowed" in capsys.readouterr().err


def test_help_lists_the_experiment_commands(capsys):
    from hyperrl.commands import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "fit" in out and "sweep" in out and "analyze gradients" in out and "report" in out


def test_progress_scores_the_newest_evaluation_at_its_frames_and_skips_a_row_being_written(tmp_path):
    from hyperrl.experiments.sweep_file import progress

    version = tmp_path / "version_0"
    version.mkdir()
    assert progress(str(tmp_path)) == {"score": pytest.approx(float("nan"), nan_ok=True)}  # nothing logged yet
    rows = ["step,eval/return,train/frames", "9,-150.5,", "49,,50.0", "59,-120.25,", "99,,100.0"]
    (version / "metrics.csv").write_text("\r\n".join(rows) + "\r\n")
    assert progress(str(tmp_path)) == {"train/frames": 100.0, "score": -120.25, "metric": "eval/return",
                                       "score_frames": 50.0}
    (version / "metrics.csv").write_text("\r\n".join(rows) + "\r\n109,-99.75,")  # the logger mid-row
    assert progress(str(tmp_path))["score"] == -120.25
    (version / "metrics.csv").write_text("\r\n".join(rows[:2]) + "\r\n")  # scored before any frames were logged
    assert "score_frames" not in progress(str(tmp_path))
