"""``hyperrl analyze gradients``: does the critic's action-gradient point where the return increases?

The protocol of ``hyperrl-paper.md`` §4 (the authors' ``TD3/bias_test.py``), with the weaknesses of §8 item 6
fixed or made options. For every analysis snapshot of a run (:mod:`hyperrl.analysis.snapshots`):

1. **States** from the policy's own state distribution: for state ``i``, reset the env (seed ``seed·1000 + i``) and
   follow the deterministic policy for ``n_i ~ U{0 .. T−1}`` steps (``T`` the time limit; resetting when an episode
   ends), then save the simulator state exactly (:func:`hyperrl.envs.env_state`: full MuJoCo physics, time-limit
   counter, env RNG).
2. **Actions**: ``a_0 = π(s)`` and ``a_k = clip(a_0 + σ r ε_k, low, high)``, ``ε_k ~ N(0, I)``, ``k = 1..K−1``
   (``r`` the action radius, so ``σ = 0.3`` on ``[−1, 1]`` is the authors' setting).
3. **Monte-Carlo returns**: from the restored state, hold ``a_k`` for ``h`` steps (``--hold``, 3 as the authors, or 1),
   then follow the deterministic policy until the episode ends or ``--horizon`` steps:
   ``R = Σ_j γ^j r_j (+ γ^J min_i Q̄_i(o_J, π(o_J)) if the rollout was cut by the time limit/horizon and
   --bootstrap target``; nothing when it terminated). ``M`` rollouts per action (``--rollouts``) are averaged; the
   rollouts of a deterministic simulator and policy are identical, which is detected at the first state and then
   computed once (reported as ``rollouts_effective``).
4. **MC action-gradient**: the least-squares slope ``g`` of ``R_k ≈ c + gᵀ a_k`` (with an intercept) — what the
   authors' pairwise-difference regression computes, without its 225 duplicate rows.
5. **Critic action-gradient** ``∇_a Q_1(s, a)|_{a = π(s)}`` of the online first critic; ``cos(∇_a Q_1, g)`` per
   state; per snapshot the mean over states with a percentile-bootstrap 95% CI (resampling states).
6. **Critic vs MC value** at the same ``(s, a_k)``: ``Q_1(s, a_k) − R_k`` (over- or under-estimation).

7. **Per variant** (:func:`aggregate`), over windows of snapshots (all; from the second; the second half; the last):
   the cosine pooled over runs, snapshots and states with a two-level bootstrap CI (runs, then states) and a
   states-only CI, and each variant minus ``mlp`` with a two-level CI.

Output in ``--out`` (default ``<folder>/gradients``): ``gradients.json`` (every number above), ``gradients.md`` (the
per-variant tables), ``cosine.png`` (mean cosine similarity over training frames, one line per run, coloured by
critic), and on stdout one JSON line with the per-run means and the per-variant aggregates. ``--from-json
gradients.json`` recomputes only the per-variant aggregates of an earlier analysis (no rollouts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from hyperrl.errors import ConfigurationError, require_positive
from hyperrl.jsonio import dumps, write_json
from hyperrl.runs import check_writable


# --------------------------------------------------------------------------------------------- estimators
def ols_gradient(actions: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Slope ``g`` of the least-squares fit ``R ≈ c + gᵀ a`` (intercept ``c``): actions ``(K, A)``, returns ``(K,)``
    -> ``(A,)``. Minimum-norm solution when ``K ≤ A`` (then the fit is exact and says little)."""
    actions = np.asarray(actions, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    if actions.ndim != 2 or actions.shape[0] != returns.shape[0]:
        raise ValueError(f"actions {actions.shape} and returns {returns.shape} do not match")
    design = np.column_stack([np.ones(len(returns)), actions])
    coef, *_ = np.linalg.lstsq(design, returns, rcond=None)
    return coef[1:]


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """``uᵀv / (|u| |v|)``; NaN when either vector is zero (no direction)."""
    u, v = np.asarray(u, dtype=np.float64).ravel(), np.asarray(v, dtype=np.float64).ravel()
    norm = np.linalg.norm(u) * np.linalg.norm(v)
    return float(u @ v / norm) if norm > 0 else float("nan")


def bootstrap_mean_ci(values: Sequence[float], reps: int = 2000, confidence: float = 0.95, seed: int = 0):
    """``(mean, low, high)``: the mean of the finite ``values`` and its percentile-bootstrap CI."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(1)
    tail = (1 - confidence) / 2 * 100
    return float(x.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def perturbed_actions(a0: np.ndarray, sigma: float, low, high, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, A)``: row 0 is ``a0``, rows 1.. are ``clip(a0 + σ r ε, low, high)`` (``r = (high − low)/2``)."""
    a0 = np.asarray(a0, dtype=np.float64)
    low, high = np.broadcast_to(np.asarray(low, float), a0.shape), np.broadcast_to(np.asarray(high, float), a0.shape)
    radius = (high - low) / 2
    noise = rng.standard_normal((count - 1, a0.shape[0])) * sigma * radius
    return np.concatenate([a0[None], np.clip(a0 + noise, low, high)])


# --------------------------------------------------------------------------------------------- rollouts
class RestorableEnv(Protocol):
    """An environment whose exact state can be captured and restored."""

    def capture(self): ...  # -> (state, observation)

    def restore(self, state) -> np.ndarray: ...  # -> observation

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]: ...  # obs, reward, term, trunc

    def reset(self, seed: int) -> np.ndarray: ...


class MujocoStateEnv:
    """A gymnasium MuJoCo env with :func:`hyperrl.envs.env_state` / :func:`hyperrl.envs.load_env_state`."""

    def __init__(self, env_id: str, env_kwargs: dict | None = None) -> None:
        import gymnasium as gym

        from hyperrl.envs import check_env_kwargs, env_state

        self.env_id = env_id
        self.env = gym.make(env_id, **check_env_kwargs(env_id, env_kwargs))
        self._shim = type("Wrapped", (), {"_env": self.env})()  # what env_state expects: a TorchRL env's _env
        self.env.reset(seed=0)
        if env_state(self._shim) is None:
            self.env.close()
            raise ConfigurationError(
                f"environment {env_id!r}: its simulator state cannot be saved and restored exactly (only gymnasium "
                "MuJoCo environments can), which the gradient analysis needs"
            )
        self.max_steps = int(getattr(self.env.spec, "max_episode_steps", None) or 1000)

    def _obs(self) -> np.ndarray:
        return np.asarray(self.env.unwrapped._get_obs(), dtype=np.float32)

    def reset(self, seed: int) -> np.ndarray:
        return np.asarray(self.env.reset(seed=int(seed))[0], dtype=np.float32)

    def capture(self):
        from hyperrl.envs import env_state

        return env_state(self._shim), self._obs()

    def restore(self, state) -> np.ndarray:
        from hyperrl.envs import load_env_state

        load_env_state(self._shim, state)
        return self._obs()

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self.env.close()


def batched_returns(
    envs: Sequence[RestorableEnv],
    state,
    first_actions: np.ndarray,
    hold: int,
    policy: Callable[[np.ndarray], np.ndarray],
    gamma: float,
    horizon: int | None = None,
    bootstrap: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Discounted returns of ``len(first_actions)`` rollouts from ``state``, run in lockstep on ``envs`` (one per
    rollout) so that the policy is evaluated once per step for all of them: each holds its first action for
    ``hold`` steps, then follows ``policy``. A rollout that reaches ``horizon`` steps or is truncated by the time limit
    adds ``γ^J bootstrap(o_J)`` (if given); a terminated one adds nothing. Returns ``(returns (N,), env steps)``."""
    n = len(first_actions)
    if len(envs) < n:
        raise ValueError(f"{n} rollouts need {n} environments, got {len(envs)}")
    obs = np.stack([envs[i].restore(state) for i in range(n)])
    returns = np.zeros(n)
    discount = np.ones(n)
    active = np.ones(n, dtype=bool)
    cut = np.zeros(n, dtype=bool)
    last_obs = obs.copy()
    steps, t = 0, 0
    while active.any():
        idx = np.flatnonzero(active)
        actions = first_actions[idx] if t < hold else policy(obs[idx])
        for j, i in enumerate(idx):
            o, r, terminated, truncated = envs[i].step(actions[j])
            steps += 1
            returns[i] += discount[i] * r
            discount[i] *= gamma
            obs[i] = o
            if terminated:
                active[i] = False
            elif truncated or (horizon is not None and t + 1 >= horizon):
                active[i], cut[i], last_obs[i] = False, True, o
        t += 1
    if bootstrap is not None and cut.any():
        returns[cut] += discount[cut] * bootstrap(last_obs[cut])
    return returns, steps


def sample_states(
    env: RestorableEnv, policy: Callable[[np.ndarray], np.ndarray], count: int, rng: np.random.Generator,
    seed: int, max_steps: int,
) -> list[tuple[object, np.ndarray, int]]:
    """``count`` states of the policy's own state distribution: ``(state, observation, steps taken)``."""
    states = []
    for i in range(count):
        obs = env.reset(seed * 1000 + i)
        steps = int(rng.integers(0, max_steps))
        for _ in range(steps):
            obs, _, terminated, truncated = env.step(policy(obs[None])[0])
            if terminated or truncated:
                obs = env.reset(int(rng.integers(2**31)))
        state, obs = env.capture()
        states.append((state, obs, steps))
    return states


# --------------------------------------------------------------------------------------------- one snapshot
class SnapshotModel:
    """The pieces of a trained SAC/TD3 module the analysis uses: deterministic ``π``, ``Q_1``, the target critics."""

    def __init__(self, module) -> None:
        for name in ("critics", "target_critics", "acting_policy"):
            if not hasattr(module, name):
                raise ConfigurationError(
                    f"{type(module).__name__} has no {name}: the gradient analysis needs an actor-critic with twin "
                    "critics (SAC, TD3)"
                )
        import torch

        self.torch = torch
        self.module = module
        self._policy = module.acting_policy()
        self.q1 = module.critics.member(0)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        torch = self.torch
        from tensordict import TensorDict
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            td = TensorDict({"observation": torch.as_tensor(obs, dtype=torch.float32)}, batch_size=[len(obs)])
            return self._policy(td).get("action").numpy().astype(np.float64)

    def q_values(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            o = torch.as_tensor(np.broadcast_to(obs, (len(actions), obs.shape[-1])).copy(), dtype=torch.float32)
            return self.q1(o, torch.as_tensor(actions, dtype=torch.float32)).reshape(-1).numpy().astype(np.float64)

    def q_gradient(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        torch = self.torch
        a = torch.as_tensor(action, dtype=torch.float32).reshape(1, -1).requires_grad_(True)
        o = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        (grad,) = torch.autograd.grad(self.q1(o, a).sum(), a)
        return grad.reshape(-1).numpy().astype(np.float64)

    def target_value(self, obs: np.ndarray) -> np.ndarray:
        """``min_i Q̄_i(o, π(o))``."""
        torch = self.torch
        actions = self.policy(obs)
        with torch.no_grad():
            q = self.module.target_critics(torch.as_tensor(obs, dtype=torch.float32),
                                           torch.as_tensor(actions, dtype=torch.float32))
            return q.float().amin(0).reshape(-1).numpy().astype(np.float64)


def analyse_state(
    model, envs, state, obs, low, high, *, actions: int, rollouts: int, sigma: float, hold: int, gamma: float,
    horizon: int | None, bootstrap: bool, rng: np.random.Generator,
) -> dict:
    """Everything measured at one state (see the module docstring)."""
    a0 = model.policy(obs[None])[0]
    cand = perturbed_actions(a0, sigma, low, high, actions, rng)
    first = np.repeat(cand, rollouts, axis=0)
    boot = model.target_value if bootstrap else None
    returns, steps = batched_returns(envs, state, first, hold, model.policy, gamma, horizon, boot)
    returns = returns.reshape(actions, rollouts)
    mc = returns.mean(1)
    g_mc = ols_gradient(cand, mc)
    g_q = model.q_gradient(obs, a0)
    q = model.q_values(obs, cand)
    span = np.asarray(high, float) - np.asarray(low, float)
    clipped = np.isclose(cand[1:], low) | np.isclose(cand[1:], high) if actions > 1 else np.zeros((0,))
    return {
        "cosine": cosine(g_q, g_mc),
        "grad_q": g_q.tolist(),
        "grad_mc": g_mc.tolist(),
        "actions": cand.tolist(),
        "mc_returns": mc.tolist(),
        "rollout_std": float(returns.std(1).max()) if rollouts > 1 else 0.0,
        "q_values": q.tolist(),
        "q_minus_mc": (q - mc).tolist(),
        "clipped_fraction": float(clipped.mean()) if clipped.size else 0.0,
        "action_span": span.tolist(),
        "env_steps": int(steps),
    }


# --------------------------------------------------------------------------------------------- runs and the command
def find_runs(folder: str) -> list[str]:
    """Run folders at or under ``folder`` that hold analysis snapshots."""
    from hyperrl.analysis.snapshots import SNAPSHOT_DIR, find_snapshots

    from hyperrl.experiments.report import check_folder

    check_folder(folder)
    runs = []
    for root, dirs, _ in os.walk(folder):
        dirs.sort()
        if SNAPSHOT_DIR in dirs and find_snapshots(root):
            runs.append(root)
            dirs.remove(SNAPSHOT_DIR)
    if not runs:
        raise ConfigurationError(
            f"{folder}: no analysis snapshots (snapshots/step_*.pt) in this run or sweep folder: enable them in the "
            "fit with --trainer.callbacks+=hyperrl.analysis.AnalysisSnapshots --trainer.callbacks.every_n_steps N"
        )
    return runs


def run_label(run_dir: str, snapshot: dict) -> tuple[str, str]:
    """``(run name, variant)``: the sweep's labels when the run came from ``hyperrl sweep``, else the critic."""
    from hyperrl.experiments.report import network_label
    from hyperrl.experiments.sweep_file import read_run_file

    record = read_run_file(run_dir) or read_run_file(os.path.dirname(os.path.normpath(run_dir)))
    name = record.get("name") or os.path.basename(os.path.normpath(run_dir))
    labels = {k: v for k, v in (record.get("labels") or {}).items() if k not in ("env",)}
    variant = "/".join(labels.values()) if labels else network_label(snapshot["hparams"].get("critic", "?"))
    return name, variant


def analyse(
    folder: str, *, states: int = 15, actions: int = 15, rollouts: int = 5, sigma: float = 0.3, hold: int = 3,
    gamma: float | None = None, horizon: int | None = None, bootstrap: str = "target", seed: int = 0,
    max_snapshots: int | None = None, progress: bool = True,
) -> dict:
    """Run the analysis on every snapshot under ``folder``; returns the JSON-ready result."""
    import torch
    from tqdm import tqdm

    from hyperrl.analysis.snapshots import find_snapshots, load_snapshot, read_snapshot

    for name, value in (("--states", states), ("--actions", actions), ("--rollouts", rollouts), ("--hold", hold)):
        require_positive(name, value, integer=True)
    require_positive("--sigma", sigma)
    if actions < 2:
        raise ConfigurationError(f"--actions {actions} is not allowed: the regression needs at least 2 actions")
    if horizon is not None:
        require_positive("--horizon", horizon, integer=True)
    if bootstrap not in ("target", "none"):
        raise ConfigurationError(f"--bootstrap {bootstrap!r} is not allowed: expected target or none")

    runs = find_runs(folder)
    plan = []
    for run_dir in runs:
        snaps = find_snapshots(run_dir)
        if max_snapshots is not None and len(snaps) > max_snapshots:  # evenly spaced, always the last one
            keep = np.unique(np.linspace(0, len(snaps) - 1, max_snapshots).round().astype(int))
            snaps = [snaps[i] for i in keep]
        plan.append((run_dir, snaps))
    envs_by_id: dict[str, list] = {}
    bar = tqdm(total=sum(len(s) for _, s in plan) * states, desc="gradients", unit="state", disable=not progress,
               mininterval=1.0, file=sys.stderr)
    result_runs = []
    effective_rollouts = rollouts
    started = time.perf_counter()
    torch.set_grad_enabled(True)
    for run_dir, snaps in plan:
        first = read_snapshot(snaps[0][1])
        env_id = first.get("env")
        if not isinstance(env_id, str):
            raise ConfigurationError(f"{snaps[0][1]}: the snapshot names no environment (hparams.env)")
        env_kwargs = dict(first["hparams"].get("env_kwargs") or {})
        env_key = env_id + (dumps(env_kwargs) if env_kwargs else "")
        name, variant = run_label(run_dir, first)
        entry = {"run": run_dir, "name": name, "variant": variant, "env": env_id, "env_kwargs": env_kwargs,
                 "critic": first["hparams"].get("critic"), "class_path": first["class_path"], "snapshots": []}
        for step, path in snaps:
            module, snapshot = load_snapshot(path)
            model = SnapshotModel(module)
            pool = envs_by_id.setdefault(env_key, [])
            while len(pool) < actions * rollouts + 1:
                pool.append(MujocoStateEnv(env_id, env_kwargs))
            sampler, workers = pool[0], pool[1:]
            spec = module.env_spec
            discount = float(module.optim.gamma) if gamma is None else gamma
            rng = np.random.default_rng([seed, step])
            per_state = []
            for state, obs, n_steps in sample_states(sampler, model.policy, states, rng, seed, sampler.max_steps):
                m = effective_rollouts
                record = analyse_state(
                    model, workers, state, obs, spec.action_low, spec.action_high, actions=actions, rollouts=m,
                    sigma=sigma, hold=hold, gamma=discount, horizon=horizon, bootstrap=bootstrap == "target", rng=rng,
                )
                record["policy_steps_before"] = n_steps
                if m > 1 and record["rollout_std"] == 0.0 and effective_rollouts == rollouts:
                    effective_rollouts = 1  # deterministic simulator and policy: every rollout is the same
                per_state.append(record)
                bar.update(1)
            cos = [r["cosine"] for r in per_state]
            mean, low, high = bootstrap_mean_ci(cos, seed=seed)
            bias = [b for r in per_state for b in r["q_minus_mc"]]
            q_all = np.concatenate([r["q_values"] for r in per_state])
            mc_all = np.concatenate([r["mc_returns"] for r in per_state])
            corr = float(np.corrcoef(q_all, mc_all)[0, 1]) if q_all.std() > 0 and mc_all.std() > 0 else float("nan")
            entry["snapshots"].append({
                "step": int(snapshot["step"]), "frames": int(snapshot["frames"]), "path": path,
                "cosine_mean": mean, "cosine_ci": [low, high], "cosine_per_state": cos,
                "q_minus_mc_mean": float(np.mean(bias)), "q_mc_correlation": corr,
                "mc_return_mean": float(mc_all.mean()),
                "grad_q_norm_median": float(np.median([np.linalg.norm(r["grad_q"]) for r in per_state])),
                "grad_mc_norm_median": float(np.median([np.linalg.norm(r["grad_mc"]) for r in per_state])),
                "mc_spread_median": float(np.median([np.std(r["mc_returns"]) for r in per_state])),
                "states": per_state,
            })  # fmt: skip
        means = [s["cosine_mean"] for s in entry["snapshots"] if np.isfinite(s["cosine_mean"])]
        entry["mean_cosine"] = float(np.mean(means)) if means else float("nan")
        entry["final_cosine"] = entry["snapshots"][-1]["cosine_mean"]
        result_runs.append(entry)
    bar.close()
    for pool in envs_by_id.values():
        for env in pool:
            env.close()
    settings = {"states": states, "actions": actions, "rollouts": rollouts, "rollouts_effective": effective_rollouts,
                "sigma": sigma, "hold": hold, "gamma": gamma, "horizon": horizon, "bootstrap": bootstrap,
                "seed": seed, "wall_s": round(time.perf_counter() - started, 1)}
    result = {"folder": os.path.abspath(folder), "settings": settings, "runs": result_runs}
    result["variants"] = aggregate(result, seed=seed)
    return result


# --------------------------------------------------------------------------------------------- per-variant aggregates
def _replicates(runs: list[list[np.ndarray]], reps: int, rng: np.random.Generator, resample_runs: bool) -> np.ndarray:
    """``(reps,)`` bootstrap replicates of the pooled mean of ``runs`` (per run, per snapshot, the per-state values).

    Two levels (``resample_runs``): draw the runs with replacement, then, in each drawn run, the states of each
    snapshot with replacement; the replicate is the mean over every drawn state. States only: the runs stay fixed."""
    runs = [[np.asarray(s, float) for s in snaps if len(s)] for snaps in runs]
    runs = [snaps for snaps in runs if snaps]
    n = len(runs)
    if n == 0:
        return np.full(reps, np.nan)
    chosen = rng.integers(0, n, size=(reps, n)) if resample_runs else np.tile(np.arange(n), (reps, 1))
    sums, counts = np.zeros(reps), np.zeros(reps)
    for r, snaps in enumerate(runs):
        values = np.concatenate(snaps)
        sizes = np.concatenate([np.full(len(x), len(x)) for x in snaps])
        starts = np.repeat(np.cumsum([0] + [len(x) for x in snaps[:-1]]), [len(x) for x in snaps])
        rows = np.nonzero(chosen == r)[0]
        step = max(1, 2_000_000 // len(values))
        for i in range(0, len(rows), step):
            block = rows[i : i + step]
            idx = starts + (rng.random((len(block), len(values))) * sizes).astype(np.int64)
            np.add.at(sums, block, values[idx].sum(1))
            np.add.at(counts, block, len(values))
    return sums / counts


def _ci(replicates: np.ndarray, confidence: float = 0.95) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return [float("nan"), float("nan")]
    return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]


def _k(step: int) -> str:
    return f"{step / 1000:g}k" if step >= 1000 else str(step)


def default_windows(steps: Sequence[int]) -> list[tuple[str, int, int]]:
    """``(label, first step, last step)``: every snapshot; from the second one on (the first is taken as learning
    starts, with critics near their initialisation); the second half of training; the last snapshot."""
    steps = sorted(set(int(s) for s in steps))
    if not steps:
        return []
    last = steps[-1]
    later = [s for s in steps if s > last / 2] or [last]
    windows = [("all", steps[0], last)]
    if len(steps) > 1:
        windows.append(("from the 2nd snapshot", steps[1], last))
    windows += [("second half", later[0], last), ("last", last, last)]
    out, seen = [], set()
    for label, lo, hi in windows:
        if (lo, hi) not in seen:
            seen.add((lo, hi))
            out.append((f"{label}: {_k(lo)}–{_k(hi)}" if lo != hi else f"{label}: {_k(hi)}", lo, hi))
    return out


def aggregate(result: dict, reps: int = 5000, seed: int = 0, reference: str | None = None) -> list[dict]:
    """Per environment and variant, over each window of :func:`default_windows`: the mean cosine pooled over runs,
    snapshots and states, its two-level bootstrap 95% CI (runs, then states within each run and snapshot: the runs
    are the real sample size) and its states-only CI (the runs held fixed), the run means, how many snapshot CIs
    lie above / below 0, the mean ``Q1 − MC``; and each variant minus its reference with a two-level CI. The
    reference is the variant ``reference`` (default ``mlp``), or in a grid of several axes (variants ``a/b``) the
    variant with that label in place of one of the variant's own (``sa_hyper/lr3e-4`` − ``mlp/lr3e-4``). Every
    replicate stream is seeded from ``seed``, so the numbers repeat."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in result["runs"]:
        groups.setdefault((run["env"], run["variant"]), []).append(run)
    # the windows cover the snapshot steps every run has: runs of different lengths (a stopped or pruned run) are
    # compared over the same steps, and the steps beyond the shortest run are left out (and named)
    steps_of_runs = [{int(s["step"]) for s in run["snapshots"]} for run in result["runs"]]
    shared = set.intersection(*steps_of_runs) if steps_of_runs else set()
    if steps_of_runs and not shared:
        raise ConfigurationError("the runs share no snapshot step, so no window compares them over the same steps: "
                                 "analyse runs with the same snapshot interval (--trainer.val_check_interval)")
    left_out = sorted(set().union(*steps_of_runs) - shared)
    variants = {v for _, v in groups}
    reference = "mlp" if reference is None else reference
    out = []
    for w, (label, lo, hi) in enumerate(default_windows(sorted(shared))):
        window = {"window": label, "steps": [lo, hi], "steps_left_out": left_out, "variants": [], "differences": []}
        replicates = {}

        def within(snapshot: dict) -> bool:
            return lo <= snapshot["step"] <= hi and int(snapshot["step"]) in shared

        for g, ((env, variant), runs) in enumerate(sorted(groups.items())):
            per_run = [[np.asarray([c for c in s["cosine_per_state"] if c is not None and np.isfinite(c)])
                        for s in run["snapshots"] if within(s)] for run in runs]
            snaps = [s for run in runs for s in run["snapshots"] if within(s)]
            if not snaps:
                continue
            two = _replicates(per_run, reps, np.random.default_rng([seed, w, g, 0]), True)
            fixed = _replicates(per_run, reps, np.random.default_rng([seed, w, g, 1]), False)
            replicates[(env, variant)] = two
            values = np.concatenate([x for r in per_run for x in r]) if per_run else np.zeros(0)
            window["variants"].append({
                "env": env, "variant": variant, "runs": len(runs), "snapshots": len(snaps), "states": int(len(values)),
                "mean": float(values.mean()) if len(values) else float("nan"),
                "ci_runs_and_states": _ci(two), "ci_states_only": _ci(fixed),
                "run_means": [float(np.concatenate(r).mean()) if sum(map(len, r)) else float("nan") for r in per_run],
                "snapshot_cis_above_0": sum(1 for s in snaps if s["cosine_ci"][0] > 0),
                "snapshot_cis_below_0": sum(1 for s in snaps if s["cosine_ci"][1] < 0),
                "q_minus_mc_mean": float(np.mean([s["q_minus_mc_mean"] for s in snaps])),
            })  # fmt: skip
        for (env, variant), two in replicates.items():
            ref = _reference(variant, reference, variants)
            if ref is None or (env, ref) not in replicates:
                continue
            a = next(v for v in window["variants"] if (v["env"], v["variant"]) == (env, variant))
            b = next(v for v in window["variants"] if (v["env"], v["variant"]) == (env, ref))
            window["differences"].append({"env": env, "variant": variant, "reference": ref,
                                          "mean": a["mean"] - b["mean"], "ci": _ci(two - replicates[(env, ref)])})
        out.append(window)
    return out


def _reference(variant: str, label: str, variants: set[str]) -> str | None:
    """The variant ``variant`` is compared with: ``label`` itself, else ``variant`` with one of its ``/``-separated
    labels replaced by ``label`` (the same settings on the other axes); ``None`` if there is none."""
    if label in variants:
        return label if variant != label else None
    parts = variant.split("/")
    candidates = ["/".join([*parts[:i], label, *parts[i + 1:]]) for i in range(len(parts))]
    return next((c for c in candidates if c != variant and c in variants), None)


def _signed(x: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(x) else f"{x:+.{digits}f}".replace("-", "−")


def aggregate_markdown(windows: list[dict], reps: int = 5000) -> str:
    """The per-variant aggregates as the Markdown tables docs/results.md quotes."""
    lines = [f"Per environment and variant, pooled over runs, snapshots and states; 95% percentile-bootstrap CIs, "
             f"{reps} resamples (two-level: runs, then states within each run and snapshot; states only: runs fixed).",
             "", "| snapshots | env | variant | runs | states | mean cosine | 95% CI (runs, states) | "
             "95% CI (states only) | run means | snapshot CIs > 0 / < 0 | Q1 − MC |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    left_out = windows[0].get("steps_left_out") if windows else None
    if left_out:  # runs of different lengths: the tables cover the steps they all reached
        lines[1:1] = ["", f"Snapshot steps that not every run reached are left out: {', '.join(map(_k, left_out))}."]
    for w in windows:
        for v in w["variants"]:
            lo, hi = v["ci_runs_and_states"]
            slo, shi = v["ci_states_only"]
            lines.append(f"| {w['window']} | {v['env']} | {v['variant']} | {v['runs']} | {v['states']} | "
                         f"{_signed(v['mean'])} | [{_signed(lo)}, {_signed(hi)}] | [{_signed(slo)}, {_signed(shi)}] | "
                         f"{', '.join(_signed(m) for m in v['run_means'])} | "
                         f"{v['snapshot_cis_above_0']} / {v['snapshot_cis_below_0']} | {_signed(v['q_minus_mc_mean'], 2)} |")
    diffs = [(w, d) for w in windows for d in w["differences"]]
    if diffs:
        lines += ["", "| snapshots | env | difference | mean | 95% CI (runs, states) |", "|---|---|---|---|---|"]
        for w, d in diffs:
            lo, hi = d["ci"]
            lines.append(f"| {w['window']} | {d['env']} | {d['variant']} − {d['reference']} | {_signed(d['mean'])} | "
                         f"[{_signed(lo)}, {_signed(hi)}] |")
    return "\n".join(lines) + "\n"


def plot_cosine(result: dict, path: str, reps: int = 1000, seed: int = 0) -> None:
    """One column per environment. Top: each run's mean cosine similarity with its 95% CI over states at each
    snapshot, one colour per variant (runs shifted a little along x so that their CI bars do not overlap). Bottom:
    per variant, the mean over its runs and states at each snapshot with a two-level bootstrap 95% CI (runs, then
    states)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({r["variant"] for r in result["runs"]})
    envs = sorted({r["env"] for r in result["runs"]})
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(2, len(envs), figsize=(7 * len(envs), 7.5), dpi=100, squeeze=False, sharex="col")
    for col, env in enumerate(envs):
        top, bottom = axes[0][col], axes[1][col]
        runs = [r for r in result["runs"] if r["env"] == env]
        frames = sorted({s["frames"] for r in runs for s in r["snapshots"]})
        gap = float(min(np.diff(frames))) if len(frames) > 1 else float(max(frames[0], 1))
        seen = set()
        for i, run in enumerate(runs):
            shift = (i - (len(runs) - 1) / 2) * 0.6 * gap / max(len(runs), 1)
            x = np.array([s["frames"] for s in run["snapshots"]], float) + shift
            y = np.array([s["cosine_mean"] for s in run["snapshots"]])
            lo = np.array([s["cosine_ci"][0] for s in run["snapshots"]])
            hi = np.array([s["cosine_ci"][1] for s in run["snapshots"]])
            label = run["variant"] if run["variant"] not in seen else None
            seen.add(run["variant"])
            top.errorbar(x, y, yerr=[y - lo, hi - y], color=colours[run["variant"]], label=label, marker="o", ms=3,
                         lw=1.0, elinewidth=1.4, capsize=2.5, alpha=0.9)
        for v, variant in enumerate(variants):
            mine = [r for r in runs if r["variant"] == variant]
            if not mine:
                continue
            xs, ys, los, his = [], [], [], []
            for f in frames:
                per_run = [[np.asarray([c for c in s["cosine_per_state"] if c is not None and np.isfinite(c)])
                            for s in r["snapshots"] if s["frames"] == f] for r in mine]
                values = [x for r in per_run for x in r]
                if not values or not sum(map(len, values)):
                    continue
                rep = _replicates(per_run, reps, np.random.default_rng([seed, col, v, int(f)]), True)
                lo, hi = _ci(rep)
                xs.append(f), ys.append(float(np.concatenate(values).mean())), los.append(lo), his.append(hi)
            xs, ys, los, his = map(np.asarray, (xs, ys, los, his))
            colour = colours[variant]
            bottom.fill_between(xs, los, his, color=colour, alpha=0.25, lw=0)
            bottom.errorbar(xs, ys, yerr=[ys - los, his - ys], color=colour, marker="o", ms=3, lw=1.6,
                            elinewidth=1.0, capsize=2, label=f"{variant} ({len(mine)} runs)")
        for ax in (top, bottom):
            ax.axhline(0, color="grey", lw=0.8)
            ax.legend(fontsize=8)
        top.set_title(f"{env}: each run (95% CI over states)", fontsize=10, wrap=True)
        bottom.set_title(f"{env}: per variant (95% CI, runs then states)", fontsize=10, wrap=True)
        top.set_ylabel("mean cosine similarity")
        bottom.set_ylabel("mean cosine similarity")
        bottom.set_xlabel("training frames")
    s = result["settings"]
    fig.suptitle(f"cos(∇a Q1, MC gradient): {s['states']} states × {s['actions']} actions, σ={s['sigma']}, "
                 f"hold {s['hold']}", fontsize=10, wrap=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigurationError(message)


def main(argv: list[str]) -> int:
    parser = _Parser(prog="hyperrl analyze gradients",
                     description="Critic action-gradient vs Monte-Carlo action-gradient on analysis snapshots.")
    parser.add_argument("folder", nargs="?", default=None, help="a run folder with snapshots/, or a sweep folder")
    parser.add_argument("--states", type=int, default=15)
    parser.add_argument("--actions", type=int, default=15)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.3, help="perturbation std, a fraction of the action radius")
    parser.add_argument("--hold", type=int, default=3, help="steps the perturbed action is held (3 or 1)")
    parser.add_argument("--horizon", type=int, default=None, help="max rollout steps (default: rest of the episode)")
    parser.add_argument("--bootstrap", default="target", choices=["target", "none"])
    parser.add_argument("--gamma", type=float, default=None, help="default: the run's gamma")
    parser.add_argument("--max-snapshots", type=int, default=None, help="evenly spaced snapshots per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", default=None, metavar="GRADIENTS_JSON",
                        help="recompute only the per-variant aggregates (and, with --out, the figure) of an earlier "
                             "analysis's gradients.json or a summary of it with the per-state cosines: no rollouts")
    parser.add_argument("--out", default=None, help="default <folder>/gradients (with --from-json: print only)")
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.from_json is None):
        raise ConfigurationError("give a run or sweep folder, or --from-json GRADIENTS_JSON (one of the two)")
    if args.from_json is not None:
        return _main_from_json(args.from_json, args.out, args.seed)
    out = args.out or os.path.join(args.folder, "gradients")
    find_runs(args.folder)  # the folder and its snapshots, then the output folder: before hours of analysis
    check_writable(out, "output folder", flag="--out")
    result = analyse(args.folder, states=args.states, actions=args.actions, rollouts=args.rollouts, sigma=args.sigma,
                     hold=args.hold, gamma=args.gamma, horizon=args.horizon, bootstrap=args.bootstrap, seed=args.seed,
                     max_snapshots=args.max_snapshots)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "gradients.json"), result)
    plot_cosine(result, os.path.join(out, "cosine.png"))
    with open(os.path.join(out, "gradients.md"), "w") as f:
        f.write(aggregate_markdown(result["variants"]))
    summary = {"gradients": os.path.join(out, "gradients.json"), "figure": os.path.join(out, "cosine.png"),
               "tables": os.path.join(out, "gradients.md"), "settings": result["settings"],
               "runs": {r["name"]: {"variant": r["variant"], "env": r["env"], "mean_cosine": r["mean_cosine"],
                                    "final_cosine": r["final_cosine"], "snapshots": len(r["snapshots"]),
                                    "q_minus_mc_mean": float(np.mean([s["q_minus_mc_mean"] for s in r["snapshots"]]))}
                        for r in result["runs"]},
               "variants": result["variants"]}
    print(dumps(summary))
    return 0


def _main_from_json(path: str, out: str | None, seed: int) -> int:
    import json

    try:
        with open(path) as f:
            result = json.load(f)
        runs = result["runs"]
        for run in runs:
            for snap in run["snapshots"]:
                snap["cosine_per_state"], snap["step"], snap["cosine_ci"]  # noqa: B018 - the keys the tables need
    except OSError as exc:
        raise ConfigurationError(f"--from-json {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"--from-json {path}: not a gradients.json of hyperrl analyze gradients ({type(exc).__name__}: {exc})"
        ) from None
    if out is not None:
        check_writable(out, "output folder", flag="--out")
    windows = aggregate(result, seed=seed)
    text = aggregate_markdown(windows)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gradients.md"), "w") as f:
            f.write(text)
        write_json(os.path.join(out, "variants.json"), windows)
        plot_cosine(result, os.path.join(out, "cosine.png"), seed=seed)
    sys.stderr.write(text)
    print(dumps({"from": path, "variants": windows}))
    return 0
