"""MAML's cost: episodes per second of the batched TorchRL episodic sampler, and the wall time of one meta-update.

    python benchmarks/maml_speed.py [--env hyperrl/Navigation2D-v0] [--policy mlp] [--tasks 40] [--episodes 20]
                                    [--updates 2] [--quick]

Defaults are the authors' sizes (40 tasks x 20 episodes, 2x100 MLP). Prints one JSON line: sampler episodes/s
(``M·E`` episodes in one rollout of the horizon), and per meta-update the median wall time of sampling, of the TRPO
step and of the whole update (second-order, the default). ``--quick``: 4 tasks x 5 episodes, 1 update.
Not measured here (left for a follow-up): the authors' plain-PyTorch multiprocessing sampler for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="hyperrl/Navigation2D-v0")
    p.add_argument("--policy", default="mlp")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.tasks, a.episodes, a.updates = 4, 5, 1
    load_start = os.getloadavg()[0]
    import torch

    from _common import run_info
    from hyperrl.algos import MAML
    from hyperrl.algos.trpo import trpo_step

    m = MAML(env=a.env, policy=a.policy, meta_batch_size=a.tasks, fast_batch_size=a.episodes,
             first_order=a.first_order)
    m.data = m.make_data()
    sample_s, trpo_s, eps = [], [], []
    with m._threads():
        meta = m._detached(m.meta_params())
        m.data.rollout(m.data.collect(), a.episodes, m.actor_factory([meta] * a.tasks, a.episodes))  # warm-up
        for _ in range(a.updates):
            tasks = m.data.collect()
            t = time.perf_counter()
            m.data.rollout(tasks, a.episodes, m.actor_factory([meta] * a.tasks, a.episodes))
            eps.append(a.tasks * a.episodes / (time.perf_counter() - t))
            t = time.perf_counter()
            batch = m.sample_meta_batch(tasks)
            sample_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.enable_grad():
                loss, kl, old = m.outer_terms(*batch)

                def evaluate():
                    new_loss, new_kl, _ = m.outer_terms(*batch, old, create_graph=False)
                    return new_loss.item(), new_kl.item()

                trpo_step(list(m.meta_params().values()), loss, kl, evaluate)
            trpo_s.append(time.perf_counter() - t)
    out = {
        "benchmark": "maml_speed", "env": a.env, "policy": a.policy, "tasks": a.tasks, "episodes": a.episodes,
        "first_order": a.first_order, "sampler_episodes_per_s": round(statistics.median(eps), 1),
        "meta_update_sampling_s": round(statistics.median(sample_s), 2),
        "meta_update_trpo_s": round(statistics.median(trpo_s), 2),
        "meta_update_s": round(statistics.median([s + t for s, t in zip(sample_s, trpo_s)]), 2),
        **run_info(load_start, a.quick),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
