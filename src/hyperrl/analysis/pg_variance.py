"""``hyperrl analyze pg-variance``: how noisy is the (meta-)policy gradient at a checkpoint, and how much does that
noise move the policy's return? (The poster's "50 different uncorrelated gradients"; not in the authors' code.)

    hyperrl analyze pg-variance --ckpt runs/.../step=500.ckpt [--ckpt other.ckpt ...] --estimates 50 \\
        [--tasks M] [--episodes E] [--update trpo|sgd] [--lr 0.1] [--eval-tasks N] [--eval-episodes N] [--out DIR]

Protocol, at the checkpoint's parameters θ₀ (a :class:`~hyperrl.algos.MAML` or ``ContextMAML`` checkpoint):

1. K times (``--estimates``): draw an independent meta-batch (``--tasks`` train tasks with replacement, fresh
   episodes: the task RNG and the action noise run on, never reseeded), compute the algorithm's own gradient estimate
   ``g_k = ∇S(θ₀)`` (MAML: the meta-gradient of the post-adaptation surrogate through the inner step; context-MAML:
   the multi-task policy gradient);
2. apply it as an update from θ₀: ``trpo`` (default: the algorithm's own outer step, CG + line search, KL ≤ max_kl)
   or ``sgd`` (``θ₀ − lr·g_k``); evaluate the updated policy's mean return on a FIXED evaluation set (the test tasks,
   the same episode noise for every k: common random numbers, so the spread is the update's, not the evaluation's);
   restore θ₀ bit for bit;
3. figures, each with a percentile bootstrap 95% CI over the K estimates (``--bootstrap`` resamples): the std of the
   K updated returns; the total gradient variance ``tr Σ = Σ_j Var(g_j) = (Σ_k ‖g_k − ḡ‖²)/(K − 1)``; the relative
   variance ``tr Σ / ‖ḡ‖²`` (scale-free: comparable between parametrisations; ≈ K for a zero-mean gradient, see
   :func:`gram_statistics`) and its noise-debiased form ``tr Σ / mean_{k≠l} g_k·g_l``; the mean pairwise cosine
   similarity ``mean_{k≠l} cos(g_k, g_l)`` (Ilyas et al. 2020). All gradient figures come from the Gram matrix.

Writes ``pg_variance.json`` and ``pg_variance.png`` under ``--out``; stdout is one strict JSON line
``{"pg_variance": {label: figures, ...}}`` with one entry per checkpoint (label: policy name and step), a value
without a finite bound written as ``null``. Progress (one line per estimate, with an ETA) and anything the libraries
print go to stderr.
Memory: the K gradient vectors are kept (``K × P × 4`` bytes: 1.5 GB for 50 paper-size hypernetwork gradients).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import dataclasses
import os
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

from hyperrl.nn.policies import POLICY
from hyperrl.errors import ConfigurationError, require_positive
from hyperrl.jsonio import dumps, write_json


DESCRIPTION = """How noisy is the (meta-)policy gradient at a MAML or context-MAML checkpoint, and how much does that noise
move the policy's return? K independent gradient estimates, each applied as one update from the checkpoint and
evaluated on a fixed set of test tasks; writes pg_variance.json and pg_variance.png under --out and prints one JSON
line on stdout (progress on stderr). The protocol: docs/maml.md."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperrl analyze pg-variance", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="MAML/ContextMAML checkpoint (repeatable)")
    p.add_argument("--estimates", type=int, default=50, help="K independent gradient estimates")
    p.add_argument("--tasks", type=int, default=None, help="tasks per estimate (None: the run's meta_batch_size)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per task (None: the run's fast_batch_size)")
    p.add_argument("--update", choices=("trpo", "sgd"), default="trpo",
                   help="trpo: the algorithm's own outer step; sgd: theta - lr * g")
    p.add_argument("--lr", type=float, default=0.1, help="step size of --update sgd")
    p.add_argument("--eval-tasks", type=int, default=None, help="test tasks in the fixed evaluation (None: all)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per evaluation task (None: the run's setting)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of each 95%% CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the meta-batches and the evaluation")
    p.add_argument("--out", default="pg_variance", help="folder of pg_variance.json and pg_variance.png")
    p.add_argument("--no-plot", action="store_true", help="write no figure")
    return p


# ---------------------------------------------------------------------------------------------- statistics
def gram_statistics(gram: np.ndarray, idx: np.ndarray | None = None) -> dict[str, float]:
    """Gradient figures of the estimates ``idx`` (default all; repeats allowed) from the Gram matrix ``G = g_k·g_l``.

    ``trace_variance = (Σ_k ‖g_k‖² − K ‖ḡ‖²)/(K − 1)``, ``‖ḡ‖² = Σ_kl G_kl / K²``, ``relative_variance =
    trace_variance / ‖ḡ‖²``, ``mean_cosine`` = mean over pairs ``k ≠ l`` of distinct estimates of
    ``G_kl / √(G_kk G_ll)``, ``mean_sq_norm = mean_k ‖g_k‖²``.

    ``‖ḡ‖²`` is biased upwards by the noise: ``E‖ḡ‖² = ‖μ‖² + tr Σ / K``, so ``relative_variance`` estimates
    ``r / (1 + r/K)`` for the population ``r = tr Σ / ‖μ‖²`` and is ≈ K when the gradient has no mean at all.
    ``signal_sq_norm = mean_{k≠l} g_k·g_l = ‖ḡ‖² − tr Σ / K`` (pairs of distinct estimates) is unbiased for
    ``‖μ‖²`` (it can be ≤ 0 when the mean is lost in the noise), ``signal_to_noise = signal_sq_norm /
    trace_variance`` and ``relative_variance_unbiased = trace_variance / signal_sq_norm`` (inf if
    ``signal_sq_norm ≤ 0``).
    """
    gram = np.asarray(gram, dtype=np.float64)
    idx = np.arange(len(gram)) if idx is None else np.asarray(idx)
    g = gram[np.ix_(idx, idx)]
    k = len(idx)
    diag = np.diag(g)
    mean_sq = g.sum() / k**2
    trace_var = (diag.sum() - k * mean_sq) / (k - 1)
    norms = np.sqrt(np.maximum(diag, 1e-300))
    cos = g / np.outer(norms, norms)
    distinct = idx[:, None] != idx[None, :]
    # pairs of distinct estimates only (a resample's repeats would add ‖g_k‖² terms): = ‖ḡ‖² − tr Σ / K for idx None
    signal = g[distinct].mean() if distinct.any() else float("nan")
    return {
        "trace_variance": float(trace_var),
        "mean_sq_norm": float(diag.mean()),
        "mean_gradient_sq_norm": float(mean_sq),
        "relative_variance": float(trace_var / mean_sq) if mean_sq > 0 else float("inf"),
        "mean_cosine": float(cos[distinct].mean()) if distinct.any() else float("nan"),
        "signal_sq_norm": float(signal),
        "signal_to_noise": float(signal / trace_var) if trace_var > 0 else float("nan"),
        "relative_variance_unbiased": float(trace_var / signal) if signal > 0 else float("inf"),
    }


def bootstrap_ci(k: int, statistic, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% CI of ``statistic(idx)`` over ``resamples`` index resamples with replacement of ``range(k)``."""
    values = np.array([statistic(rng.integers(0, k, size=k)) for _ in range(int(resamples))], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def summarize(gram: np.ndarray, returns: np.ndarray, base_return: float, resamples: int, seed: int) -> dict:
    """All figures with bootstrap CIs (module docstring)."""
    rng = np.random.default_rng(seed)
    returns = np.asarray(returns, dtype=np.float64)
    k = len(returns)
    out: dict = {"estimates": k, "return_before_update": float(base_return),
                 "return_mean": float(returns.mean()), "return_std": float(returns.std(ddof=1)),
                 "returns": returns.tolist()}
    out["return_std_ci"] = bootstrap_ci(k, lambda i: returns[i].std(ddof=1), resamples, rng)
    out["return_mean_ci"] = bootstrap_ci(k, lambda i: returns[i].mean(), resamples, rng)
    stats = gram_statistics(gram)
    out.update(stats)
    for name in ("trace_variance", "relative_variance", "signal_sq_norm", "signal_to_noise", "mean_cosine"):
        out[f"{name}_ci"] = bootstrap_ci(k, lambda i, n=name: gram_statistics(gram, i)[n], resamples, rng)
    # 1/x is non-increasing from signal_to_noise to relative_variance_unbiased (inf at ≤ 0): map the percentiles
    lo, hi = out["signal_to_noise_ci"]
    out["relative_variance_unbiased_ci"] = (1.0 / hi if hi > 0 else float("inf"), 1.0 / lo if lo > 0 else float("inf"))
    return out


# ---------------------------------------------------------------------------------------------- model
def load_module(path: str):
    """A MAML/ContextMAML module from a Lightning checkpoint or an analysis snapshot (its hparams + weights)."""
    from hyperrl.algos import MAML

    if not os.path.isfile(path):
        raise ConfigurationError(f"--ckpt {path!r} is not allowed: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigurationError(f"--ckpt {path!r} is not allowed: not a readable checkpoint ({exc})") from None
    hparams = MAML.current_hparams(dict(ckpt.get("hyper_parameters") or ckpt.get("hparams") or {}))
    if "adaptation" not in hparams or "policy" not in hparams:
        raise ConfigurationError(f"--ckpt {path!r} is not allowed: not a MAML or ContextMAML checkpoint")
    # LightningCLI adds its own keys (``_class_path``, ``_instantiator``): not constructor arguments. Both classes
    # build as MAML (ContextMAML is MAML with ``adaptation_steps`` 0, which the hparams carry).
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    module = MAML(**hparams)
    module.load_state_dict(ckpt["state_dict"])
    module.step = int(ckpt.get("global_step", ckpt.get("step", 0)))
    return module


@contextmanager
def _eval_adaptation_steps(module, steps: int):
    previous = module.eval_adaptation_steps
    module.eval_adaptation_steps = steps
    try:
        yield
    finally:
        module.eval_adaptation_steps = previous


def analyse(module, estimates: int, tasks: int | None = None, episodes: int | None = None, update: str = "trpo",
            lr: float = 0.1, eval_tasks: int | None = None, eval_episodes: int | None = None,
            resamples: int = 1000, seed: int = 0, progress=None) -> dict:
    """The protocol of the module docstring on one module; returns the figures (plain data). ``progress(done,
    total, seconds)`` is called after each estimate."""
    from hyperrl.algos.trpo import flat, trpo_step

    require_positive("--estimates", estimates, integer=True)
    if estimates < 2:
        raise ConfigurationError(f"--estimates={estimates} is not allowed: expected at least 2")
    hp = module.optim
    if tasks is not None:
        require_positive("--tasks", tasks, integer=True)
        module.data = None
        module.sampling = dataclasses.replace(module.sampling, meta_batch_size=int(tasks))
    if episodes is not None:
        require_positive("--episodes", episodes, integer=True)
        module.sampling = dataclasses.replace(module.sampling, fast_batch_size=int(episodes))
    if module.data is None:
        module.data = module.make_data()
    module.data._task_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    module.data.reseed("train", 1_000_003 + seed)
    eval_set = module.pools.test[:eval_tasks] if eval_tasks else module.pools.test
    objective = 1 if module.adaptation.adaptation_steps > 0 else 0  # after adaptation for MAML, before for context-MAML
    params = list(module.meta_params().values())
    saved = [p.detach().clone() for p in params]

    def eval_return() -> float:
        return module.evaluate_tasks(eval_set, eval_episodes, reseed=seed + 100)[objective]

    grads, returns = [], []
    start = time.perf_counter()
    # context-MAML's figure is the return before adaptation: the evaluation skips its adaptation rollouts (the same
    # number: the before-rollout comes first on a reseeded stream), restored afterwards
    eval_steps = 0 if objective == 0 else module.eval_adaptation_steps
    with module._threads(), _eval_adaptation_steps(module, eval_steps):
        base = eval_return()
        for _ in range(int(estimates)):
            batch = module.sample_meta_batch(module.data.collect())
            with torch.enable_grad():
                loss, kl, old = module.outer_terms(*batch)
                grads.append(flat(torch.autograd.grad(loss, params, retain_graph=True)).detach().float().cpu())
                if update == "trpo":
                    def evaluate():
                        new_loss, new_kl, _ = module.outer_terms(*batch, old, create_graph=False)
                        return new_loss.item(), new_kl.item()

                    trpo_step(params, loss, kl, evaluate, max_kl=hp.max_kl, damping=hp.cg_damping,
                              cg_iterations=hp.cg_iterations, ratio=hp.ls_ratio, max_steps=hp.ls_max_steps)
                else:
                    with torch.no_grad():
                        offset = 0
                        for p in params:
                            p.sub_(lr * grads[-1][offset:offset + p.numel()].view_as(p).to(p))
                            offset += p.numel()
            returns.append(eval_return())
            with torch.no_grad():
                for p, p0 in zip(params, saved):
                    p.copy_(p0)
            if progress is not None:
                progress(len(returns), int(estimates), time.perf_counter() - start)
    g = torch.stack(grads).double()
    gram = (g @ g.T).numpy()
    out = summarize(gram, np.asarray(returns), base, resamples, seed)
    out.update({"policy": POLICY.label(module.hparams.policy), "step": int(getattr(module, "step", 0)),
                "env": module.hparams.env, "update": update,
                "tasks": int(module.sampling.meta_batch_size), "episodes": int(module.sampling.fast_batch_size),
                "parameters": int(g.shape[1]), "seconds": time.perf_counter() - start})
    return out


def plot(results: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = list(results)
    for label in labels:
        r = results[label]
        axes[0].hist(r["returns"], bins=15, alpha=0.5, label=label)
        axes[0].axvline(r["return_before_update"], ls="--", lw=0.8)
    axes[0].set(title="return after one update (K estimates)", xlabel="mean return", ylabel="estimates")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
    axes[0].legend(fontsize=7)
    for ax, name, title in ((axes[1], "mean_cosine", "mean pairwise cosine"),
                            (axes[2], "relative_variance", "tr Var(g) / |mean g|^2")):
        values = [results[k][name] for k in labels]
        lo = [results[k][name] - results[k][f"{name}_ci"][0] for k in labels]
        hi = [results[k][f"{name}_ci"][1] - results[k][name] for k in labels]
        # a percentile CI of a biased figure can lie beside its estimate: draw the part on each side, or none
        yerr = np.nan_to_num(np.clip([lo, hi], 0.0, None), nan=0.0, posinf=0.0)
        ax.bar(range(len(labels)), values, yerr=yerr, capsize=4)
        ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=7)
        ax.set_title(title)
    k = max(results[label]["estimates"] for label in labels)
    axes[2].axhline(k, color="k", ls=":", lw=0.8, label=f"K={k}: the value for a zero-mean gradient")
    axes[2].set_ylim(top=max(axes[2].get_ylim()[1], 1.25 * k))  # room above the line for the legend
    axes[2].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _progress(path: str):
    def report(done: int, total: int, seconds: float) -> None:
        eta = seconds / done * (total - done)
        print(f"pg-variance {path}: estimate {done}/{total}, {seconds:.0f} s, ETA {eta:.0f} s", file=sys.stderr,
              flush=True)
    return report


def main(args: list[str] | None = None) -> int:
    ns = _parser().parse_args(list(sys.argv[1:] if args is None else args))
    require_positive("--bootstrap", ns.bootstrap, integer=True)
    if ns.update == "sgd" and ns.lr < 0:
        raise ConfigurationError(f"--lr={ns.lr} is not allowed: expected a number >= 0")
    # stdout is the JSON line alone: TorchRL's info lines (and any other print) go to stderr
    os.environ.setdefault("RL_LOGGING_LEVEL", "WARNING")
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(sys.stderr):
        results = _analyse_all(ns)
    keys = ("return_before_update", "return_mean", "return_std", "return_std_ci", "trace_variance",
            "relative_variance", "relative_variance_ci", "relative_variance_unbiased",
            "relative_variance_unbiased_ci", "mean_cosine", "mean_cosine_ci", "estimates")
    print(dumps({"pg_variance": {k: {n: r[n] for n in keys} for k, r in results.items()}}))
    return 0


def _analyse_all(ns) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for path in ns.ckpt:
        module = load_module(path)
        print(f"pg-variance {path}: {ns.estimates} estimates", file=sys.stderr, flush=True)
        r = analyse(module, ns.estimates, ns.tasks, ns.episodes, ns.update, ns.lr, ns.eval_tasks,
                    ns.eval_episodes, ns.bootstrap, ns.seed, progress=_progress(path))
        r["ckpt"] = path
        label = f"{r['policy']}@{r['step']}"
        while label in results:
            label += "'"
        results[label] = r
    os.makedirs(ns.out, exist_ok=True)
    write_json(os.path.join(ns.out, "pg_variance.json"), results)
    if not ns.no_plot:
        plot(results, os.path.join(ns.out, "pg_variance.png"))
    return results
