"""hyperrl analyze gradients: the estimator on problems with a known gradient, snapshots, a real SAC smoke run."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from hyperrl.analysis.gradients import (
    MujocoStateEnv,
    analyse,
    analyse_state,
    batched_returns,
    bootstrap_mean_ci,
    cosine,
    ols_gradient,
    perturbed_actions,
)
from hyperrl.errors import ConfigurationError


class LineEnv:
    """A restorable synthetic env, linear in the action so that the return's action-gradient is known in closed
    form: state = (position x, step t), ``r = wᵀa``, ``x ← x + a``; the time limit truncates after ``length`` steps."""

    def __init__(self, w, length: int) -> None:
        self.w, self.length = np.asarray(w, float), length
        self.x, self.t = np.zeros_like(self.w), 0

    def capture(self):
        return (self.x.copy(), self.t), self.x.astype(np.float32)

    def restore(self, state):
        self.x, self.t = state[0].copy(), state[1]
        return self.x.astype(np.float32)

    def reset(self, seed):
        self.x, self.t = np.zeros_like(self.w), 0
        return self.x.astype(np.float32)

    def step(self, action):
        action = np.asarray(action, float)
        self.x = self.x + action
        self.t += 1
        return self.x.astype(np.float32), float(self.w @ action), False, self.t >= self.length


class BowlEnv(LineEnv):
    """One-step episodes with ``r = −|a − a*|²``: the true gradient at ``a`` is ``−2 (a − a*)``."""

    def __init__(self, target) -> None:
        super().__init__(np.zeros(len(target)), 1)
        self.target = np.asarray(target, float)

    def step(self, action):
        action = np.asarray(action, float)
        self.t += 1
        return self.x.astype(np.float32), float(-np.sum((action - self.target) ** 2)), True, False


def test_ols_gradient_recovers_a_linear_return_with_intercept():
    rng = np.random.default_rng(0)
    g, c = np.array([1.5, -2.0, 0.25]), 7.0
    actions = rng.normal(size=(15, 3))
    assert np.allclose(ols_gradient(actions, c + actions @ g), g, atol=1e-10)
    # a constant offset does not move the slope; the slope of a constant is 0
    assert np.allclose(ols_gradient(actions, np.full(15, 3.0)), 0, atol=1e-10)


def test_cosine_and_bootstrap_ci():
    assert cosine([1, 0], [2, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 3]) == pytest.approx(0.0)
    assert cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert np.isnan(cosine([0, 0], [1, 0]))
    mean, low, high = bootstrap_mean_ci([0.5] * 10 + [float("nan")])
    assert (mean, low, high) == (0.5, 0.5, 0.5)
    mean, low, high = bootstrap_mean_ci(np.random.default_rng(1).normal(size=200), seed=3)
    assert low < mean < high and high - low < 0.4


def test_perturbed_actions_keep_pi_s_first_scale_sigma_by_the_radius_and_clip():
    rng = np.random.default_rng(0)
    a0 = np.array([0.0, 0.0])
    acts = perturbed_actions(a0, 0.3, [-3.0, -1.0], [3.0, 1.0], 4001, rng)
    assert acts.shape == (4001, 2) and np.array_equal(acts[0], a0)
    # radius 3 and 1: std 0.9 and 0.3 (the first is never clipped at ±3 here in practice)
    assert acts[1:, 0].std() == pytest.approx(0.9, rel=0.05)
    near = perturbed_actions(np.array([0.95, 0.95]), 0.3, -1.0, 1.0, 500, rng)
    assert near.max() <= 1.0 and (near[1:] == 1.0).mean() > 0.3


def test_batched_returns_closed_form_hold_and_bootstrap():
    """Return of holding a for h steps then π(o) = a0 on r = wᵀa, cut at length L and bootstrapped with b:
    R(a) = Σ_{j<h} γ^j wᵀa + Σ_{h≤j<L} γ^j wᵀa0 + γ^L b, so ∂R/∂a = (Σ_{j<h} γ^j) w exactly."""
    w, gamma, length = np.array([2.0, -1.0]), 0.9, 6
    a0 = np.array([0.1, 0.2])
    policy = lambda obs: np.tile(a0, (len(obs), 1))  # noqa: E731
    rng = np.random.default_rng(0)
    actions = perturbed_actions(a0, 0.3, -1, 1, 9, rng)
    for hold in (1, 3):
        envs = [LineEnv(w, length) for _ in range(9)]
        state = envs[0].capture()[0]
        returns, steps = batched_returns(envs, state, actions, hold, policy, gamma, bootstrap=lambda o: np.full(len(o), 5.0))
        discounts = gamma ** np.arange(length)
        expected = (discounts[:hold].sum() * actions @ w + discounts[hold:].sum() * (a0 @ w) + gamma**length * 5.0)
        assert np.allclose(returns, expected) and steps == 9 * length
        assert np.allclose(ols_gradient(actions, returns), discounts[:hold].sum() * w)
    # horizon 2 < length: cut at 2 steps and bootstrapped there; no bootstrap -> just the rewards
    returns, _ = batched_returns(envs, state, actions, 1, policy, gamma, horizon=2)
    assert np.allclose(returns, actions @ w + gamma * (a0 @ w))


class _BowlModel:
    """Q(s, a) = sign · (−|a − a*|²) and π(s) = a0: ∇_a Q is known."""

    def __init__(self, a0, target, sign=1.0) -> None:
        self.a0, self.target, self.sign = np.asarray(a0, float), np.asarray(target, float), sign

    def policy(self, obs):
        return np.tile(self.a0, (len(obs), 1))

    def q_values(self, obs, actions):
        return self.sign * -np.sum((actions - self.target) ** 2, axis=1)

    def q_gradient(self, obs, action):
        return self.sign * -2 * (np.asarray(action) - self.target)

    def target_value(self, obs):
        return np.zeros(len(obs))


@pytest.mark.parametrize("sign, expected", [(1.0, 1.0), (-1.0, -1.0)])
def test_analyse_state_on_a_bowl_finds_the_true_gradient(sign, expected):
    target, a0 = np.array([0.5, -0.4, 0.2]), np.array([-0.2, 0.3, 0.0])
    model = _BowlModel(a0, target, sign)
    envs = [BowlEnv(target) for _ in range(40 * 2)]
    state = envs[0].capture()[0]
    record = analyse_state(model, envs, state, np.zeros(3, np.float32), -1.0, 1.0, actions=40, rollouts=2, sigma=0.05,
                           hold=1, gamma=0.99, horizon=None, bootstrap=True, rng=np.random.default_rng(0))
    true = -2 * (a0 - target)
    assert np.allclose(record["grad_mc"], true, rtol=0.05, atol=0.02)
    assert record["cosine"] == pytest.approx(expected, abs=0.01)
    assert record["rollout_std"] == 0.0  # a deterministic env: both rollouts of every action agree
    if sign > 0:  # Q equals the MC return exactly
        assert np.allclose(record["q_minus_mc"], 0.0, atol=1e-9)


def test_an_env_whose_state_cannot_be_restored_is_refused():
    with pytest.raises(ConfigurationError, match="cannot be saved and restored"):
        MujocoStateEnv("Pendulum-v1")


def test_a_folder_without_snapshots_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigurationError, match="no analysis snapshots"):
        analyse(str(tmp_path))


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from hyperrl.commands import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradients", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no analysis snapshots" in err[0]
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradients", str(tmp_path / "file")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].endswith("file: not a folder")
    monkeypatch.setitem(sys.modules, "hyperrl.analysis.pg_variance", None)  # an installation without that analysis
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "pg-variance"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "not available" in err[0]


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A tiny SAC fit on InvertedDoublePendulum with snapshots every 20 steps (in process: no CLI start-up)."""
    from conftest import make_trainer, tiny_kwargs

    from hyperrl.algos import SAC
    from hyperrl.analysis import AnalysisSnapshots

    folder = tmp_path_factory.mktemp("sac")
    model = SAC(**tiny_kwargs(env="InvertedDoublePendulum-v5",
                              replay={"warmup_frames": 20, "learning_starts": 20, "batch_size": 16}))
    callback = AnalysisSnapshots(every_n_steps=20)
    make_trainer(folder, max_steps=50, callbacks=[callback]).fit(model)
    return folder / "run" / "v", model


def test_an_out_that_is_a_file_is_refused_before_the_analysis(sac_run, tmp_path, capsys, monkeypatch):
    from hyperrl.analysis import gradients
    from hyperrl.commands import main

    run_dir, _ = sac_run
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(gradients, "analyse", lambda *a, **k: pytest.fail("the analysis ran"))
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradients", str(run_dir), "--out", str(tmp_path / "file" / "g")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "file is a file, not a folder (set another place with --out)" \
        in err[0]


def test_snapshots_every_n_steps_and_at_the_end_rebuild_the_module(sac_run):
    from hyperrl.analysis import find_snapshots, load_snapshot

    run_dir, model = sac_run
    snaps = find_snapshots(str(run_dir))
    assert [s for s, _ in snaps] == [20, 40, 50]
    rebuilt, snapshot = load_snapshot(snaps[-1][1])
    assert snapshot["env"] == "InvertedDoublePendulum-v5" and snapshot["frames"] == 50
    assert "hyperrl" not in snapshot  # no replay buffer
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value.cpu()), key


def test_analyze_gradients_on_a_real_sac_snapshot(sac_run, tmp_path, capsys):
    from hyperrl.commands import main

    run_dir, _ = sac_run
    out = tmp_path / "g"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradients", str(run_dir), "--states", "2", "--actions", "4", "--rollouts", "2",
              "--horizon", "15", "--out", str(out)])
    assert exc.value.code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (run,) = line["runs"].values()
    assert run["snapshots"] == 3 and -1 <= run["mean_cosine"] <= 1
    assert line["settings"]["rollouts_effective"] == 1  # MuJoCo restored exactly: the 2 rollouts were identical
    result = json.load(open(out / "gradients.json"))
    state = result["runs"][0]["snapshots"][0]["states"][0]
    assert len(state["actions"]) == 4 and len(state["grad_q"]) == 1 and len(state["q_minus_mc"]) == 4
    assert os.path.getsize(out / "cosine.png") > 1000
    assert "| from the 2nd snapshot: 40–50 |" in open(out / "gradients.md").read()
    assert line["variants"][0]["variants"][0]["states"] == 6  # 3 snapshots x 2 states


def _synthetic_result(per_run_offsets, states=15, steps=(1000, 2000, 3000, 4000), seed=0):
    """A gradients.json-like result: variant ``a`` runs with the given offsets, variant ``mlp`` runs around 0."""
    rng = np.random.default_rng(seed)
    runs = []
    for variant, offsets in (("a", per_run_offsets), ("mlp", [0.0] * len(per_run_offsets))):
        for i, off in enumerate(offsets):
            snaps = []
            for step in steps:
                cos = np.clip(off + 0.1 * rng.standard_normal(states), -1, 1)
                snaps.append({"step": step, "frames": step, "cosine_per_state": cos.tolist(),
                              "cosine_mean": float(cos.mean()), "cosine_ci": list(bootstrap_mean_ci(cos)[1:]),
                              "q_minus_mc_mean": 1.0})
            runs.append({"name": f"{variant}-seed{i}", "variant": variant, "env": "E-v0", "snapshots": snaps})
    return {"settings": {"states": states, "actions": 15, "sigma": 0.3, "hold": 3}, "runs": runs}


def test_aggregate_pools_runs_and_its_two_level_ci_sees_the_spread_between_runs():
    from hyperrl.analysis.gradients import aggregate, default_windows

    assert [w[0] for w in default_windows([1000, 2000, 3000, 4000])] == [
        "all: 1k–4k", "from the 2nd snapshot: 2k–4k", "second half: 3k–4k", "last: 4k"]
    # runs of one variant far apart: the states-only CI is narrow, the two-level CI spans the run means
    result = _synthetic_result([0.1, 0.5, 0.9])
    windows = aggregate(result, reps=2000, seed=0)
    first = {v["variant"]: v for v in windows[0]["variants"]}
    a = first["a"]
    values = np.concatenate([s["cosine_per_state"] for r in result["runs"][:3] for s in r["snapshots"]])
    assert a["mean"] == pytest.approx(values.mean()) and a["states"] == 180 and a["runs"] == 3
    assert a["run_means"] == pytest.approx([0.1, 0.5, 0.9], abs=0.05)
    states_width = a["ci_states_only"][1] - a["ci_states_only"][0]
    two_width = a["ci_runs_and_states"][1] - a["ci_runs_and_states"][0]
    assert states_width < 0.05 and two_width > 0.3
    assert a["ci_runs_and_states"][0] < a["mean"] < a["ci_runs_and_states"][1]
    assert a["snapshot_cis_above_0"] == 12 and first["mlp"]["snapshot_cis_above_0"] <= 2
    (diff,) = windows[0]["differences"]
    assert (diff["variant"], diff["reference"]) == ("a", "mlp")
    assert diff["mean"] == pytest.approx(a["mean"] - first["mlp"]["mean"]) and diff["ci"][0] < diff["mean"] < diff["ci"][1]
    # the last window holds one snapshot per run; seeded: the same numbers twice
    assert windows[-1]["variants"][0]["states"] == 45
    assert aggregate(result, reps=2000, seed=0) == windows


def test_in_a_grid_of_two_axes_each_variant_is_compared_with_the_mlp_of_its_other_labels():
    """Variants ``critic/lr`` (the CPU demo's grid): ``sa_hyper/lr1`` − ``mlp/lr1`` and ``sa_hyper/lr2`` −
    ``mlp/lr2``, never across learning rates; the MLP variants have no difference of their own."""
    from hyperrl.analysis.gradients import aggregate

    result = _synthetic_result([0.4, 0.5, 0.6])
    for run in result["runs"]:
        run["variant"] = f"{run['variant'].replace('a', 'sa_hyper')}/lr1"
    other = _synthetic_result([0.0, 0.1, 0.2], seed=1)
    for run in other["runs"]:
        run["variant"] = f"{run['variant'].replace('a', 'sa_hyper')}/lr2"
        run["name"] += "-lr2"
    result["runs"] += other["runs"]
    window = aggregate(result, reps=500, seed=0)[0]
    means = {v["variant"]: v["mean"] for v in window["variants"]}
    pairs = {(d["variant"], d["reference"]): d["mean"] for d in window["differences"]}
    assert set(pairs) == {("sa_hyper/lr1", "mlp/lr1"), ("sa_hyper/lr2", "mlp/lr2")}
    for (variant, ref), mean in pairs.items():
        assert mean == pytest.approx(means[variant] - means[ref])


def test_runs_of_different_lengths_are_compared_over_the_steps_they_all_reached():
    """A stopped or pruned run has fewer snapshots: every window covers only the steps all runs have, so no window
    pools the long runs' later snapshots with the short run's earlier ones, and the tables name the steps left out."""
    from hyperrl.analysis.gradients import aggregate, aggregate_markdown

    result = _synthetic_result([0.3, 0.4])
    short = result["runs"][0]
    short["snapshots"] = [s for s in short["snapshots"] if s["step"] <= 2000]
    windows = aggregate(result, reps=200, seed=0)
    assert [w["window"] for w in windows] == ["all: 1k–2k", "from the 2nd snapshot: 2k"]
    assert all(w["steps"][1] == 2000 and w["steps_left_out"] == [3000, 4000] for w in windows)
    for window in windows:
        for variant in window["variants"]:
            assert variant["snapshots"] == variant["runs"] * len(
                [s for s in (1000, 2000) if window["steps"][0] <= s <= window["steps"][1]])
    assert "left out: 3k, 4k." in aggregate_markdown(windows)
    short["snapshots"] = [dict(s, step=s["step"] + 1) for s in short["snapshots"]]
    with pytest.raises(ConfigurationError, match="the runs share no snapshot step"):
        aggregate(result, reps=200, seed=0)


def test_from_json_recomputes_the_tables_and_figure_without_rollouts(tmp_path, capsys):
    from hyperrl.commands import main

    path = tmp_path / "gradients.json"
    path.write_text(json.dumps(_synthetic_result([0.3, 0.4])))
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradients", "--from-json", str(path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert line["variants"][0]["window"] == "all: 1k–4k" and "| a − mlp |" in captured.err
    assert os.path.getsize(tmp_path / "o" / "cosine.png") > 1000
    assert (tmp_path / "o" / "gradients.md").read_text().startswith("Per environment and variant")
    for argv, message in ((["--from-json", str(tmp_path / "none.json")], "No such file"),
                          (["--from-json", str(tmp_path / "o" / "gradients.md")], "not a gradients.json"),
                          ([], "give a run or sweep folder, or --from-json")):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", "gradients", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err


def test_gradient_envs_take_the_runs_env_kwargs():
    env = MujocoStateEnv("Ant-v5", {"ctrl_cost_weight": 0})
    assert env.env.unwrapped._ctrl_cost_weight == 0
    with pytest.raises(ConfigurationError, match="'ctrl_cost' is not accepted"):
        MujocoStateEnv("Ant-v5", {"ctrl_cost": 0})
