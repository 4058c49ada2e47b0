"""MAML's cost: episodes per second of the batched TorchRL episodic sampler and the wall time of one meta-update,
side by side with the authors' plain-PyTorch multiprocessing sampler.

    python benchmarks/maml_speed.py [--env hyperrl/Navigation2D-v0] [--policy mlp] [--tasks 40] [--episodes 20]
                                    [--updates 2] [--workers N] [--no-reference] [--first-order] [--quick]

Defaults are the authors' sizes (40 tasks x 20 episodes, 2x100 MLP). Prints one JSON line with medians over
``--updates`` repeats, each repeat on a fresh meta-batch of tasks:

* ``sampler_episodes_per_s``: ours, ``M·E`` episodes in one ``OnPolicyData.rollout`` of the horizon (all tasks at
  once, the meta-policy θ);
* ``reference_sampler_episodes_per_s``: the same tasks, episodes and policy parameters through the authors' way
  (``_maml_reference.py``: ``--workers`` worker processes, default ``cpu_count - 1`` as the authors' ``BatchSampler``,
  an episode-id queue, lockstep stepping with one policy forward per step, numpy episode storage, one task after
  another); ``speedup_vs_reference`` = ours / reference;
* ``meta_update_sampling_s`` / ``reference_meta_update_sampling_s``: the sampling phase of one meta-update (train
  episodes, advantages, the inner step, validation episodes, for all tasks), ours (``MAML.sample_meta_batch``) and
  the reference (``MetaLearner.sample``'s order: task by task), the same math on both;
* ``meta_update_trpo_s``, ``meta_update_s``: the TRPO step and the whole update (ours; second-order by default).

Fairness checks in the line: episodes and env steps per sampler pass of each, mean episode return of each (θ, and
after adaptation) and their per-task difference in standard errors (``diff_se``, paired by task; the same θ
with independent noise: |diff_se| of about 2 at most; after adaptation the inner steps differ too, from different
train episodes), and ``reference_workers_left`` (live worker processes after shutdown: 0).
``--quick``: 4 tasks x 5 episodes, 2 repeats. ``--no-reference``: ours only (the fields of before).

``--compile``: instead, the TRPO outer step eager against ``compile=True`` (``MAML.outer_step``), side by side on the
same meta-batches and the same θ (the compiled module is reset to the eager one's parameters after each repeat;
which goes first alternates). Medians over ``--updates`` repeats after one warm-up meta-batch that compiles:
``eager_trpo_s``, ``compiled_trpo_s``, ``trpo_speedup`` = eager / compiled, ``compile_s`` (the warm-up's compiled
call, compilation included), the sampling phase ``meta_update_sampling_s`` (not compiled) and
``meta_update_speedup`` = (sampling + eager) / (sampling + compiled); ``max_param_diff``: the largest difference of
the two modules' parameters after a step (a check that both did the same step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _compare(ours: list[list[float]], ref: list[list[float]]) -> dict:
    """Mean episode return of each, and the mean per-task difference (reference − ours) in standard errors of that
    mean: paired by task (the same tasks on both), so task-to-task spread cancels."""
    diffs = [sum(r) / len(r) - sum(o) / len(o) for o, r in zip(ours, ref)]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1) / n)
    flat = lambda rows: sum(map(sum, rows)) / sum(map(len, rows))  # noqa: E731
    return {"ours": round(flat(ours), 2), "reference": round(flat(ref), 2), "tasks": n,
            "diff_se": round(mean / max(se, 1e-12), 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="hyperrl/Navigation2D-v0")
    p.add_argument("--policy", default="mlp")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="reference worker processes (default cpu_count - 1)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--compile", action="store_true", help="eager against compiled outer step (module docstring)")
    a = p.parse_args()
    if a.quick:
        a.tasks, a.episodes, a.updates = 4, 5, 2
    if a.compile:
        return compare_compile(a)
    workers = a.workers if a.workers is not None else max((os.cpu_count() or 2) - 1, 1)
    load_start = os.getloadavg()[0]
    import multiprocessing as mp

    import torch

    from _common import run_info
    from _maml_reference import ReferenceSampler, reference_meta_batch, reference_rollout
    from hyperrl.algos import MAML
    from hyperrl.algos.trpo import trpo_step

    m = MAML(env=a.env, policy=a.policy, sampling={"meta_batch_size": a.tasks, "fast_batch_size": a.episodes},
             adaptation={"first_order": a.first_order})
    m.data = m.make_data()
    e = a.episodes
    sample_s, trpo_s, eps = [], [], []
    ref_sample_s, ref_eps = [], []
    counts = {"ours": set(), "reference": set()}  # (episodes, env steps) of each sampler pass
    returns = {"ours": [], "reference": [], "ours_valid": [], "reference_valid": []}
    generator = torch.Generator().manual_seed(12345)
    sampler = None if a.no_reference else ReferenceSampler(a.env, workers, seed=m.hparams.seed)
    try:
        with m._threads():
            meta = m._detached(m.meta_params())
            m.data.rollout(m.data.collect(), e, m.actor_factory([meta] * a.tasks, e))  # warm-up
            if sampler is not None:  # warm-up: workers import and build their envs
                reference_rollout(m, sampler, m.data.sample()[:1], e, meta, generator)

            def ours_pass(tasks):
                t = time.perf_counter()
                td = m.data.rollout(tasks, e, m.actor_factory([meta] * a.tasks, e))
                eps.append(a.tasks * e / (time.perf_counter() - t))
                counts["ours"].add((td["mask"].shape[0] * td["mask"].shape[1], int(td["mask"].sum())))
                returns["ours"] += td["return"].tolist()

            def reference_pass(tasks):
                t = time.perf_counter()
                out = reference_rollout(m, sampler, tasks, e, meta, generator)
                ref_eps.append(a.tasks * e / (time.perf_counter() - t))
                counts["reference"].add((sum(b["mask"].shape[0] for b in out), int(sum(b["mask"].sum() for b in out))))
                returns["reference"] += [b["return"].tolist() for b in out]

            def ours_meta(tasks):
                t = time.perf_counter()
                batch = m.sample_meta_batch(tasks)
                sample_s.append(time.perf_counter() - t)
                returns["ours_valid"] += batch[2]["return"].tolist()
                return batch

            def reference_meta(tasks):
                t = time.perf_counter()
                out = reference_meta_batch(m, sampler, tasks, generator)
                ref_sample_s.append(time.perf_counter() - t)
                returns["reference_valid"] += [b[2]["return"].tolist() for b in out]

            for k in range(a.updates):
                tasks = m.data.collect()
                # alternate which sampler goes first, so that a change of load hits both alike
                if sampler is not None and k % 2:
                    reference_pass(tasks)
                ours_pass(tasks)
                if sampler is not None and not k % 2:
                    reference_pass(tasks)
                if sampler is not None and k % 2:
                    reference_meta(tasks)
                batch = ours_meta(tasks)
                if sampler is not None and not k % 2:
                    reference_meta(tasks)
                t = time.perf_counter()
                with torch.enable_grad():
                    loss, kl, old = m.outer_terms(*batch)

                    def evaluate():
                        new_loss, new_kl, _ = m.outer_terms(*batch, old, create_graph=False)
                        return new_loss.item(), new_kl.item()

                    trpo_step(list(m.meta_params().values()), loss, kl, evaluate)
                trpo_s.append(time.perf_counter() - t)
                meta = m._detached(m.meta_params())
    finally:
        if sampler is not None:
            sampler.close()
    out = {
        "benchmark": "maml_speed", "env": a.env, "policy": a.policy, "tasks": a.tasks, "episodes": a.episodes,
        "first_order": a.first_order, "repeats": a.updates, "sampler_episodes_per_s": round(statistics.median(eps), 1),
        "meta_update_sampling_s": round(statistics.median(sample_s), 2),
        "meta_update_trpo_s": round(statistics.median(trpo_s), 2),
        "meta_update_s": round(statistics.median([s + t for s, t in zip(sample_s, trpo_s)]), 2),
    }
    if sampler is not None:
        ours_eps, ref_eps_per_s = statistics.median(eps), statistics.median(ref_eps)
        out.update({
            "reference_workers": workers, "cpu_count": os.cpu_count(), "reference_start_method": "spawn",
            "reference_sampler_episodes_per_s": round(ref_eps_per_s, 1),
            "speedup_vs_reference": round(ours_eps / ref_eps_per_s, 2),
            "reference_meta_update_sampling_s": round(statistics.median(ref_sample_s), 2),
            "meta_update_sampling_speedup_vs_reference": round(
                statistics.median(ref_sample_s) / statistics.median(sample_s), 2),
            "sampler_pass_episodes_steps": sorted(counts["ours"]),
            "reference_pass_episodes_steps": sorted(counts["reference"]),
            "mean_return": _compare(returns["ours"], returns["reference"]),
            "mean_return_after_adaptation": _compare(returns["ours_valid"], returns["reference_valid"]),
            "reference_workers_left": len(mp.active_children()),
        })
    out.update(run_info(load_start, a.quick))
    print(json.dumps(out))


def compare_compile(a) -> None:
    """``--compile`` (module docstring)."""
    load_start = os.getloadavg()[0]
    import torch

    from _common import run_info
    from hyperrl.algos import MAML

    kwargs = dict(env=a.env, policy=a.policy, sampling={"meta_batch_size": a.tasks, "fast_batch_size": a.episodes},
                  adaptation={"first_order": a.first_order})
    eager, fast = MAML(**kwargs), MAML(**kwargs, compile=True)
    fast.load_state_dict(eager.state_dict())
    eager.data = eager.make_data()
    times = {"eager": [], "compiled": []}
    sample_s, diffs = [], []
    compile_s = None
    with eager._threads():
        for k in range(a.updates + 1):
            t = time.perf_counter()
            batch = eager.sample_meta_batch(eager.data.collect())
            sample_s.append(time.perf_counter() - t)
            order = [("eager", eager), ("compiled", fast)]
            for name, module in order if k % 2 else order[::-1]:
                t = time.perf_counter()
                module.outer_step(*batch)
                elapsed = time.perf_counter() - t
                if k == 0 and name == "compiled":
                    compile_s = elapsed
                elif k:
                    times[name].append(elapsed)
            with torch.no_grad():
                diffs.append(max(float((p - q).abs().max()) for p, q in zip(eager.parameters(), fast.parameters())))
            fast.load_state_dict(eager.state_dict())
    med = {n: statistics.median(v) for n, v in times.items()}
    sampling = statistics.median(sample_s[1:])
    out = {
        "benchmark": "maml_speed_compile", "env": a.env, "policy": a.policy, "tasks": a.tasks, "episodes": a.episodes,
        "first_order": a.first_order, "repeats": a.updates, "device": "cpu",
        "eager_trpo_s": round(med["eager"], 3), "compiled_trpo_s": round(med["compiled"], 3),
        "trpo_speedup": round(med["eager"] / med["compiled"], 2),
        "eager_trpo_s_all": [round(x, 3) for x in times["eager"]],
        "compiled_trpo_s_all": [round(x, 3) for x in times["compiled"]],
        "compile_s": round(compile_s, 1), "meta_update_sampling_s": round(sampling, 3),
        "meta_update_speedup": round((sampling + med["eager"]) / (sampling + med["compiled"]), 2),
        "max_param_diff": float(f"{max(diffs):.3g}"),
    }
    out.update(run_info(load_start, a.quick))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
