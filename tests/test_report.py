"""hyperrl report on synthetic run folders: frames, IQM / mean with CIs, P(improvement), partial sweeps, errors."""

from __future__ import annotations

import csv
import json
import os

import pytest

from hyperrl.errors import ConfigurationError
from hyperrl.experiments.report import read_metrics, report

HEADER = ["epoch", "eval/return", "eval/return_std", "step", "train/critic_loss", "train/frames"]


def write_run(folder, name, variant, seed, evals, env="Reacher-v5", frames_per_batch=2, sweep=True, state="done"):
    """A run as ``hyperrl sweep`` leaves it: ``<name>/sweep_run.json`` and ``<name>/version_0/`` with the fit's
    ``config.yaml`` and ``metrics.csv`` (an evaluation every 10 steps, training rows in between)."""
    run = folder / name
    fit = run / "version_0"
    fit.mkdir(parents=True)
    if sweep:
        (run / "sweep_run.json").write_text(json.dumps({"name": name, "labels": {"critic": variant, "env": env},
                                                        "seed": seed, "state": state}))
    (fit / "config.yaml").write_text(
        f"model:\n  class_path: hyperrl.algos.SAC\n  init_args:\n    env: {env}\n    critic: {variant}\n"
        f"    seed: {seed}\n    frames_per_batch: {frames_per_batch}\n")
    with open(fit / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        for i, value in enumerate(evals):
            step = 10 * i + 4
            writer.writerow({"epoch": 0, "step": step, "train/critic_loss": 1.0,
                             "train/frames": (step + 1) * frames_per_batch})
            writer.writerow({"epoch": 0, "step": 10 * i + 9, "eval/return": value, "eval/return_std": 0.0})
    return fit


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "sweep"
    for seed, score in enumerate([10.0, 20.0, 30.0, 100.0]):
        write_run(folder, f"hyper-seed{seed}", "hyper", seed, [0.0, score - 6, score + 1, score - 1])
    for seed, score in enumerate([1.0, 2.0, 3.0, 4.0]):
        write_run(folder, f"mlp-seed{seed}", "mlp", seed, [0.0, score, score, score])
    write_run(folder, "slow-seed0", "slow", 0, [1.0, 2.0, 3.0, 4.0])
    write_run(folder, "slow-seed1", "slow", 1, [5.0, 6.0])  # a partial run: 2 evaluations so far
    noeval = write_run(folder, "late-seed0", "late", 0, [])
    (folder / "queued-seed0").mkdir()
    (folder / "queued-seed0" / "sweep_run.json").write_text(json.dumps({"name": "queued-seed0", "state": "queued"}))
    return folder, noeval


def test_report_tables_curves_and_improvement(sweep, tmp_path, capsys):
    folder, _ = sweep
    result = report(str(folder), str(tmp_path / "r"), last=2, reps=300)
    final = {r["variant"]: r for r in result["final"]}
    # a run's score: the mean of its last 2 evaluations = the seed's score; IQM of 4 = mean of the middle 2
    assert final["hyper"]["iqm"] == pytest.approx(25.0) and final["hyper"]["mean"] == pytest.approx(40.0)
    assert final["mlp"]["iqm"] == pytest.approx(2.5) and final["mlp"]["runs"] == 4
    assert final["hyper"]["iqm_low"] <= 25.0 <= final["hyper"]["iqm_high"]
    assert final["hyper"]["mean_low"] < final["hyper"]["mean_high"]
    assert final["slow"]["frames_min"] == 40 and final["slow"]["frames_max"] == 80  # (step + 1) * frames_per_batch
    p = {(r["x"], r["y"]): r["p_x_better"] for r in result["improvement"]}
    assert p["hyper", "mlp"] == pytest.approx(1.0) and p["mlp", "hyper"] == pytest.approx(0.0)
    curves = [r for r in result["curves"] if r["variant"] == "mlp"]
    assert [r["frames"] for r in curves] == [20, 40, 60, 80]
    assert [r["iqm"] for r in curves] == pytest.approx([0.0, 2.5, 2.5, 2.5])
    # the partial variant is plotted where every one of its runs has evaluated
    assert [r["frames"] for r in result["curves"] if r["variant"] == "slow"] == [20, 40]
    out = capsys.readouterr().out
    assert "skipped late-seed0/version_0: no evaluation yet" in out
    assert "skipped queued-seed0: no metrics.csv yet (sweep state: queued)" in out
    files = set(os.listdir(tmp_path / "r"))
    assert {"final.md", "final.csv", "curves.csv", "improvement.md", "improvement.csv", "skipped.txt"} <= files
    assert os.path.getsize(tmp_path / "r" / "curves_Reacher-v5.png") > 1000
    assert "| Reacher-v5 | hyper | 4 | 80 | 25.0 [" in (tmp_path / "r" / "final.md").read_text()


def test_runs_outside_a_sweep_are_named_by_algorithm_and_critic(tmp_path):
    write_run(tmp_path, "a", "mlp", 0, [1.0, 2.0], sweep=False)
    result = report(str(tmp_path), str(tmp_path / "r"), last=1, reps=50)
    assert [r["variant"] for r in result["final"]] == ["SAC:mlp"]


def test_read_metrics_joins_the_parts_of_a_resumed_run(tmp_path):
    (tmp_path / "metrics.resume0.csv").write_text("step,eval/return\n9,1\n19,2\n29,3\n")
    (tmp_path / "metrics.csv").write_text("step,eval/return\n19,20\n29,30\n")
    assert [(r["step"], r["eval/return"]) for r in read_metrics(str(tmp_path))] == [("9", "1"), ("19", "20"),
                                                                                   ("29", "30")]


def test_a_folder_without_runs_is_one_line_exit_2(tmp_path, capsys):
    from hyperrl.commands import main

    with pytest.raises(ConfigurationError, match="no runs"):
        report(str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "no runs in this folder" in err[0]
    write_run(tmp_path, "x", "mlp", 0, [])
    with pytest.raises(ConfigurationError, match="no run with evaluations"):
        report(str(tmp_path))
