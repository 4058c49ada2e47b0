"""Every sweep file expands and every run of it passes the sweep's own validation (``hyperrl fit --print_config``
plus the model built on the meta device); the PEARL/oracle grids equal their tasks' config files."""

from __future__ import annotations

import contextlib
import glob
import io
import os

import pytest
import yaml

from hyperrl.experiments.sweep_file import fit_args, load_sweep, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = sorted(glob.glob(os.path.join(ROOT, "conf", "sweeps", "*.yaml")))
RUNS = {"paper_sac": 160, "paper_td3": 180, "paper_maml": 180, "paper_context_maml": 60, "paper_ood": 25,
        "paper_pearl": 70, "paper_oracle": 70, "cpu_demo": 12, "sa_hyper_sizes": 12}


@pytest.mark.parametrize("path", SWEEPS, ids=[os.path.basename(p) for p in SWEEPS])
def test_every_sweep_file_expands_and_validates(path, tmp_path):
    sweep = load_sweep(path)
    assert len(sweep.runs) == RUNS[sweep.name]
    validate(sweep, str(tmp_path), [], report=lambda line: None)


def _printed_model(args: list[str]) -> dict:
    from hyperrl.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--print_config"])
    assert exc.value.code in (0, None)
    config = yaml.safe_load(out.getvalue())
    return {"model": config["model"], "max_steps": config["trainer"]["max_steps"],
            "val_check_interval": config["trainer"]["val_check_interval"]}


@pytest.mark.parametrize("name,pattern", [("paper_pearl", "pearl_{env}{hyper}.yaml"),
                                          ("paper_oracle", "oracle_{env}_{agent}.yaml")])
def test_pearl_and_oracle_grids_equal_their_task_configs(name, pattern, tmp_path):
    sweep = load_sweep(os.path.join(ROOT, "conf", "sweeps", f"{name}.yaml"))
    for run in [r for r in sweep.runs if r.seed == 0]:
        env, agent = run.labels["env"], run.labels["agent"]
        config = pattern.format(env=env, agent=agent, hyper="_hyper" if agent == "pearl_hyper" else "")
        expected = _printed_model(["fit", "--config", os.path.join(ROOT, "conf", "meta", config)])
        got = _printed_model(fit_args(sweep, run, str(tmp_path), [])[:-2] + ["--model.init_args.seed", "0"])
        assert got == expected, run.name


def test_paper_gradient_grids_snapshot_every_10k_up_to_590k():
    for name in ("paper_sac", "paper_td3"):
        sweep = load_sweep(os.path.join(ROOT, "conf", "sweeps", f"{name}.yaml"))
        callbacks = [v for k, v in sweep.runs[0].settings if k == "trainer.callbacks+"]
        assert callbacks == [{"class_path": "hyperrl.analysis.AnalysisSnapshots",
                              "init_args": {"every_n_steps": 10000, "last_step": 590000}}]
    assert any(r.labels["critic"] == "random_hyper" for r in load_sweep(
        os.path.join(ROOT, "conf", "sweeps", "paper_td3.yaml")).runs)


def test_snapshots_stop_after_last_step(tmp_path):
    from types import SimpleNamespace

    import torch

    from hyperrl.analysis import AnalysisSnapshots, find_snapshots
    from hyperrl.errors import ConfigurationError

    module = SimpleNamespace(hparams={"env": "Pendulum-v1"}, state_dict=lambda: {"w": torch.zeros(1)})
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, log_dir=str(tmp_path), default_root_dir=None,
                              world_size=1)
    callback = AnalysisSnapshots(every_n_steps=10, last_step=30)
    for step in range(1, 61):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, 0)
    callback.on_train_end(trainer, module)
    assert [s for s, _ in find_snapshots(str(tmp_path))] == [10, 20, 30, 60]
    with pytest.raises(ConfigurationError, match="last_step"):
        AnalysisSnapshots(every_n_steps=10, last_step=0)
