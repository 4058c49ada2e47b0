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
        f"    seed: {seed}\n    replay:\n      frames_per_batch: {frames_per_batch}\n")
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
    final_md = (tmp_path / "r" / "final.md").read_text()
    assert "| Reacher-v5 | hyper | 4 | 80 | 2 | 25.0 [" in final_md
    assert "mean of its last 2 evaluations. IQM" in final_md  # every run has at least 2


def test_final_md_says_when_a_run_has_fewer_evaluations_than_last(sweep, tmp_path):
    folder, _ = sweep
    report(str(folder), str(tmp_path / "r"), last=5, reps=50)
    text = (tmp_path / "r" / "final.md").read_text()
    assert "(or of all of them when it has fewer: column evals)" in text
    assert "| Reacher-v5 | slow | 2 | 40–80 | 2–4 |" in text and "| Reacher-v5 | mlp | 4 | 80 | 4 |" in text


def test_runs_pruned_by_asha_are_left_out_and_said_to_be(sweep, tmp_path, capsys):
    folder, _ = sweep
    report(str(folder), str(tmp_path / "before"), last=2, reps=50)
    assert "pruned" not in (tmp_path / "before" / "final.md").read_text()
    write_run(folder, "mlp-seed4", "mlp", 4, [0.0, -50.0], state="pruned")  # below the others at its rung
    record = json.loads((folder / "mlp-seed4" / "sweep_run.json").read_text())
    (folder / "mlp-seed4" / "sweep_run.json").write_text(json.dumps({**record, "pruned_at_frames": 42.0}))
    result = report(str(folder), str(tmp_path / "r"), last=2, reps=50)
    assert {r["variant"]: r["runs"] for r in result["final"]}["mlp"] == 4  # the pruned one is not counted
    assert "skipped mlp-seed4/version_0: pruned by the sweep's ASHA scheduler at 42 frames" in capsys.readouterr().out
    assert "mlp-seed4/version_0: pruned by the sweep's ASHA scheduler at 42 frames\n" in (
        tmp_path / "r" / "skipped.txt").read_text()
    assert "\n1 run(s) pruned by the sweep's ASHA scheduler are left out (skipped.txt): each variant's scores are " \
           "those of its runs that survived" in (tmp_path / "r" / "final.md").read_text()


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
    with pytest.raises(ConfigurationError, match=r"--reps 0 is not allowed: expected a positive integer"):
        report(str(tmp_path), reps=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match=r"the report folder .*file/r cannot be created: .*file is a file, "
                                                 r"not a folder \(set another place with --out\)"):
        report(str(tmp_path), str(tmp_path / "file" / "r"))
    with pytest.raises(ConfigurationError, match=r"file: not a folder$"):
        report(str(tmp_path / "file"))


def test_runs_a_sweep_has_not_finished_are_said_to_be(sweep, tmp_path):
    folder, _ = sweep
    report(str(folder), str(tmp_path / "before"), last=2, reps=50)
    assert "not finished" not in (tmp_path / "before" / "final.md").read_text()
    record = json.loads((folder / "mlp-seed0" / "sweep_run.json").read_text())
    (folder / "mlp-seed0" / "sweep_run.json").write_text(json.dumps({**record, "state": "stopped"}))
    report(str(folder), str(tmp_path / "r"), last=2, reps=50)
    assert "\n1 run(s) have not finished (1 stopped, by their sweep records): their scores are at fewer frames" in (
        tmp_path / "r" / "final.md").read_text()


def write_meta_run(folder, name, class_path, init, rows, header, sweep_labels=None, seed=0):
    run = folder / name / "version_0"
    run.mkdir(parents=True)
    if sweep_labels is not None:
        (folder / name / "sweep_run.json").write_text(json.dumps({"name": name, "labels": sweep_labels, "seed": seed}))
    lines = "".join(f"    {k}: {v}\n" for k, v in init.items())
    (run / "config.yaml").write_text(f"model:\n  class_path: {class_path}\n  init_args:\n{lines}    seed: {seed}\n")
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return run


def test_metasac_frames_are_the_frames_collected_by_each_evaluation(tmp_path):
    """MetaSAC/PEARL collect in bursts (8000 initial frames, then 1000 at the start of every 500-update iteration):
    an evaluation at step s is plotted at the frames collected by then, not at a straight-line share of them."""
    rows = []
    frames = 8000
    for step in range(2000):
        if step % 500 == 0:
            frames += 1000
        if (step + 1) % 50 == 0:
            rows.append({"step": step, "train/frames": frames})
        if (step + 1) % 1000 == 0:
            rows.append({"step": step, "eval/test_tasks_return": -float(step)})
    header = ["step", "train/frames", "eval/test_tasks_return"]
    init = {"env": "hyperrl/Navigation2D-v0", "context": "oracle", "policy": "hyper", "critic": "hyper"}
    write_meta_run(tmp_path, "m", "hyperrl.algos.MetaSAC", init, rows, header)
    result = report(str(tmp_path), str(tmp_path / "r"), last=1, reps=50)
    (run,) = result["runs"]
    assert run.frames.tolist() == [10000, 12000] and run.metric == "eval/test_tasks_return"
    assert run.variant == "MetaSAC:policy=hyper,critic=hyper,context=oracle"


def test_eval_frames_win_and_maml_gives_before_and_after_curves(tmp_path):
    header = ["step", "train/frames", "eval/frames", "eval/test_after_return", "eval/test_before_return"]
    rows = [{"step": 0, "train/frames": 800}, {"step": 1, "train/frames": 1600},
            {"step": 1, "eval/frames": 1600, "eval/test_after_return": -10.0, "eval/test_before_return": -12.0},
            {"step": 2, "train/frames": 2400}, {"step": 3, "train/frames": 3200},
            {"step": 3, "eval/frames": 3300, "eval/test_after_return": -8.0, "eval/test_before_return": -11.0}]
    for seed in (0, 1):
        write_meta_run(tmp_path, f"hyper-seed{seed}", "hyperrl.algos.MAML", {"env": "hyperrl/HalfCheetahVel-v0",
                       "policy": "hyper"}, rows, header, sweep_labels={"policy": "hyper"}, seed=seed)
    result = report(str(tmp_path), str(tmp_path / "r"), last=1, reps=50)
    final = {r["variant"]: r for r in result["final"]}
    assert set(final) == {"hyper [after]", "hyper [before]"}
    assert final["hyper [after]"]["mean"] == pytest.approx(-8.0) and final["hyper [before]"]["mean"] == -11.0
    assert [r["frames"] for r in result["curves"] if r["variant"] == "hyper [after]"] == [1600, 3300]
    p = {(r["x"], r["y"]): r["p_x_better"] for r in result["improvement"]}
    assert p["hyper [after]", "hyper [before]"] == pytest.approx(1.0)


def test_two_runs_of_one_config_and_seed_are_refused_or_the_newest_kept(tmp_path, capsys):
    from hyperrl.commands import main

    write_run(tmp_path, "mlp-seed0", "mlp", 0, [1.0, 2.0])
    write_run(tmp_path, "mlp-seed1", "mlp", 1, [3.0, 4.0])
    twin = tmp_path / "mlp-seed0" / "version_1"  # a second fit of the same sweep run, e.g. two sweeps into one --out
    twin.mkdir()
    for f in ("config.yaml", "metrics.csv"):
        (twin / f).write_text((tmp_path / "mlp-seed0" / "version_0" / f).read_text().replace(",2.0,", ",9.0,"))
    os.utime(twin / "metrics.csv", (2e9, 2e9))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path), "--reps", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "2 runs of env Reacher-v5, variant mlp, seed 0:" in err[0] and "--duplicates newest" in err[0]
    result = report(str(tmp_path), str(tmp_path / "r"), last=1, reps=20, duplicates="newest")
    assert sorted(r.path for r in result["runs"]) == sorted([str(twin), str(tmp_path / "mlp-seed1" / "version_0")])
    assert result["final"][0]["runs"] == 2
    assert "duplicate of" in (tmp_path / "r" / "skipped.txt").read_text()
    # same variant label and seed but other model settings: a label clash, refused even with --duplicates newest
    (twin / "config.yaml").write_text((twin / "config.yaml").read_text() + "    optim:\n      critic_lr: 0.001\n")
    with pytest.raises(ConfigurationError, match="differ in their model settings"):
        report(str(tmp_path), str(tmp_path / "r"), duplicates="newest")


def test_a_folder_mixing_algorithms_names_each_curves_metric(tmp_path):
    write_run(tmp_path, "sac-seed0", "mlp", 0, [1.0, 2.0], env="hyperrl/HalfCheetahVel-v0")
    header = ["step", "train/frames", "eval/test_tasks_return"]
    rows = [{"step": 9, "train/frames": 100}, {"step": 9, "eval/test_tasks_return": 5.0},
            {"step": 19, "train/frames": 200}, {"step": 19, "eval/test_tasks_return": 6.0}]
    write_meta_run(tmp_path, "pearl", "hyperrl.algos.PEARL", {"env": "hyperrl/HalfCheetahVel-v0", "policy": "hyper",
                   "critic": "hyper"}, rows, header)
    result = report(str(tmp_path), str(tmp_path / "r"), last=1, reps=20)
    assert {r["variant"] for r in result["final"]} == {"mlp", "PEARL:policy=hyper,critic=hyper"}
    assert len(result["figures"]) == 1 and os.path.getsize(result["figures"][0]) > 1000


def test_a_run_without_sweep_labels_is_named_by_its_algorithm_and_networks():
    """A network given as class_path/init_args is named by its class (a preset by its name), in the report's
    variants and the gradient study's."""
    from hyperrl.experiments.report import _variant, network_label

    small = {"class_path": "hyperrl.nn.SAHyperCritic", "init_args": {"dynamic_hidden": [8]}}
    assert network_label(small) == "SAHyperCritic" and network_label("mlp_large") == "mlp_large"
    assert _variant({"class_path": "hyperrl.algos.SAC", "init_args": {"critic": small}}, {}) == "SAC:SAHyperCritic"
    meta = {"class_path": "hyperrl.algos.MetaSAC",
            "init_args": {"policy": {"class_path": "hyperrl.nn.HyperPolicy"}, "critic": "mlp", "context": "oracle"}}
    assert _variant(meta, {}) == "MetaSAC:policy=HyperPolicy,critic=mlp,context=oracle"
    assert _variant(meta, {"critic": "hyper"}) == "hyper"
