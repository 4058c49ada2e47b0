"""``hyperrl analyze pg-variance``: gradient figures from the Gram matrix, a population known answer, and the
end-to-end command (a zero-step update has zero return spread; θ₀ is restored bit for bit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperrl.analysis.pg_variance import analyse, gram_statistics, main, summarize
from hyperrl.errors import ConfigurationError
from hyperrl.nn import POLICY

TINY = dict(env="hyperrl/Navigation2D-v0", policy=POLICY.with_settings("mlp", {"hidden": [8]}),
            sampling={"meta_batch_size": 2, "fast_batch_size": 2}, tasks={"n_train_tasks": 6, "n_test_tasks": 2},
            evaluation={"eval_episodes": 2})


def test_gram_statistics_equal_the_direct_computation():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 40)) + 0.5
    s = gram_statistics(g @ g.T)
    assert s["trace_variance"] == pytest.approx(g.var(axis=0, ddof=1).sum())
    assert s["mean_gradient_sq_norm"] == pytest.approx(np.square(g.mean(0)).sum())
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert s["mean_cosine"] == pytest.approx(cos[~np.eye(6, dtype=bool)].mean())
    # a resample with repeats ignores the pairs of an estimate with itself
    sub = gram_statistics(g @ g.T, np.array([0, 0, 1]))
    assert sub["mean_cosine"] == pytest.approx(cos[0, 1])


def test_population_known_answer_for_noisy_gradients():
    """g = μ + σ ε in P dims: E tr Var = P σ², mean cosine → ‖μ‖² / (‖μ‖² + P σ²)."""
    rng = np.random.default_rng(1)
    p, sigma = 4000, 0.05
    mu = np.ones(p) * 0.05  # ‖μ‖² = 10, P σ² = 10: cosine 1/2
    g = mu + sigma * rng.normal(size=(50, p))
    out = summarize(g @ g.T, np.zeros(50), 0.0, resamples=200, seed=0)
    assert out["trace_variance"] == pytest.approx(p * sigma**2, rel=0.05)
    assert out["mean_cosine"] == pytest.approx(0.5, abs=0.03)
    lo, hi = out["mean_cosine_ci"]
    assert lo <= out["mean_cosine"] <= hi
    # identical gradients: no variance, cosine 1
    same = np.tile(mu, (5, 1))
    s = gram_statistics(same @ same.T)
    assert s["trace_variance"] == pytest.approx(0.0, abs=1e-9) and s["mean_cosine"] == pytest.approx(1.0)


def _checkpoint(tmp_path):
    from hyperrl.algos import MAML

    m = MAML(**TINY)
    path = tmp_path / "maml.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict(), "global_step": 7}, path)
    return m, path


def _strict_loads(text: str):
    """JSON as every other reader parses it: ``Infinity`` / ``NaN`` are errors."""
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=reject)


def test_command_with_a_zero_step_has_no_return_spread(tmp_path, capsys):
    _, path = _checkpoint(tmp_path)
    out = tmp_path / "out"
    code = main(["--ckpt", str(path), "--estimates", "2", "--update", "sgd", "--lr", "0", "--episodes", "2",
                 "--eval-episodes", "2", "--bootstrap", "20", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    [line] = captured.out.strip().splitlines()  # stdout is the JSON line alone; progress goes to stderr
    assert "estimate 2/2" in captured.err and "ETA" in captured.err
    last = _strict_loads(line)
    figures = last["pg_variance"]["MLPPolicy@7"]  # the policy's class: the checkpoint's policy has settings
    # every "updated" policy is θ₀ and the evaluation uses common random numbers: identical returns
    assert figures["return_std"] == 0.0 and figures["return_mean"] == pytest.approx(figures["return_before_update"])
    assert figures["estimates"] == 2 and -1.0 <= figures["mean_cosine"] <= 1.0 and figures["trace_variance"] > 0
    saved = _strict_loads((out / "pg_variance.json").read_text())
    # two estimates: a bootstrap resample's signal can reach zero, the unbounded CI end is written as null
    assert all(b is None or np.isfinite(b) for b in figures["relative_variance_unbiased_ci"])
    assert saved["MLPPolicy@7"]["parameters"] == sum(p.numel() for p in _checkpoint(tmp_path)[0].parameters())
    assert (out / "pg_variance.png").stat().st_size > 0


def test_trpo_updates_are_measured_and_the_parameters_restored(tmp_path):
    from hyperrl.analysis.pg_variance import load_module

    _, path = _checkpoint(tmp_path)
    module = load_module(str(path))
    before = [p.detach().clone() for p in module.parameters()]
    r = analyse(module, 2, episodes=2, eval_episodes=2, resamples=10)
    assert len(r["returns"]) == 2 and r["update"] == "trpo"
    assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before))


def test_bad_arguments_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="no such file"):
        main(["--ckpt", str(tmp_path / "missing.ckpt")])
    _, path = _checkpoint(tmp_path)
    with pytest.raises(ConfigurationError, match="--estimates=1 is not allowed"):
        main(["--ckpt", str(path), "--estimates", "1", "--no-plot", "--out", str(tmp_path / "o")])


def test_relative_variance_has_a_noise_bias_and_the_unbiased_figure_removes_it():
    """E‖ḡ‖² = ‖μ‖² + tr Σ / K: a zero-mean gradient has relative_variance ≈ K; signal_sq_norm = mean_{k≠l} g_k·g_l
    is unbiased for ‖μ‖², so relative_variance_unbiased estimates tr Σ / ‖μ‖² itself."""
    rng = np.random.default_rng(2)
    p, k, sigma = 4000, 50, 0.05
    noise = sigma * rng.normal(size=(k, p))
    zero = summarize(noise @ noise.T, np.zeros(k), 0.0, resamples=200, seed=0)
    assert zero["relative_variance"] == pytest.approx(k, rel=0.1)
    assert abs(zero["signal_sq_norm"]) < 0.05 * zero["trace_variance"]
    g = np.ones(p) * 0.05 + noise  # ‖μ‖² = 10 = P σ²: population ratio 1
    out = summarize(g @ g.T, np.zeros(k), 0.0, resamples=200, seed=0)
    assert out["signal_sq_norm"] == pytest.approx(10.0, rel=0.05)
    assert out["relative_variance_unbiased"] == pytest.approx(1.0, rel=0.08)
    assert out["relative_variance"] < out["relative_variance_unbiased"]
    # the percentile bootstrap shifts tr Σ by (K − 1)/K (a resample's variance); the CI still covers the truth, 1
    lo, hi = out["relative_variance_unbiased_ci"]
    assert lo <= 1.0 <= hi and lo < hi
    s = out["signal_to_noise"]
    assert s == pytest.approx(1.0 / out["relative_variance_unbiased"])


def test_a_lightning_cli_context_maml_checkpoint_loads_and_its_evaluation_skips_adaptation(tmp_path):
    """LightningCLI writes ``_class_path`` and ``_instantiator`` into the hyper-parameters; context-MAML's figure is
    the return before adaptation, which the analysis measures without the adaptation rollouts: the same number as
    the full evaluation (the evaluation setting is restored afterwards)."""
    from hyperrl.algos import ContextMAML
    from hyperrl.analysis.pg_variance import load_module

    m = ContextMAML(**{**TINY, "policy": "context_mlp"})
    hparams = {"_class_path": "hyperrl.algos.ContextMAML", **dict(m.hparams),
               "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    path = tmp_path / "context.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": m.state_dict(), "global_step": 3}, path)
    module = load_module(str(path))
    assert module.adaptation.adaptation_steps == 0 and module.step == 3 and module.eval_adaptation_steps == 1
    r = analyse(module, 2, episodes=2, eval_episodes=2, resamples=10, seed=0)
    assert module.eval_adaptation_steps == 1
    before, after = module.evaluate_tasks(module.pools.test, 2, reseed=100)
    assert r["return_before_update"] == before and before != after


def test_an_unbounded_ratio_is_written_as_null_not_infinity(tmp_path):
    """Two opposite estimates have a negative signal estimate: the debiased ratio is unbounded. The result file is
    still JSON (``null``), which ``json.dump`` alone would not give (``Infinity``)."""
    from hyperrl.jsonio import write_json

    g = np.array([[1.0, 2.0, 0.5], [-1.0, -2.0, -0.5]])
    out = summarize(g @ g.T, np.zeros(2), 0.0, resamples=20, seed=0)
    assert out["relative_variance_unbiased"] == float("inf")
    with pytest.raises(ValueError):
        _strict_loads(json.dumps(out))
    write_json(str(tmp_path / "r.json"), {"run": out})
    saved = _strict_loads((tmp_path / "r.json").read_text())["run"]
    assert saved["relative_variance_unbiased"] is None
    assert saved["mean_cosine"] == pytest.approx(out["mean_cosine"]) and saved["estimates"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_help_shows_defaults_without_rst(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pg_variance)" in text and "(default: 0.1)" in text and "``" not in text


def test_plot_draws_a_ci_that_lies_beside_its_estimate(tmp_path):
    """A percentile CI of a biased figure need not contain the estimate (matplotlib refused negative error bars)."""
    from hyperrl.analysis.pg_variance import plot

    g = np.array([[1.0, 2.0, 0.5], [1.1, 1.9, 0.4], [0.9, 2.2, 0.6]])
    r = summarize(g @ g.T, np.array([-20.0, -19.0, -21.0]), -20.0, resamples=20, seed=0)
    r["relative_variance_ci"] = (r["relative_variance"] + 1.0, r["relative_variance"] + 2.0)
    plot({"mlp@1": r}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0
