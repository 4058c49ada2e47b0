"""Collection and evaluation of the PEARL navigation demo: tasks side by side against one task at a time.

What is compared (``conf/meta/pearl_quickstart.yaml``'s module: hyperrl/Navigation2D-v0, hypernetwork policy,
5 tasks per iteration of 2 prior + 3 posterior-phase episodes, evaluation of 20 test + 3 train goals × 3 episodes)
----------------------------------------------------------------------------------------------------------------
* **side by side** (what the library does): the collection env has one row per task of an iteration
  (``make_task_env(num_envs=5)``) and the evaluation env one row per evaluation run of an evaluated task (3 runs ×
  23 tasks = 69 rows), so one TorchRL step and one policy call serve every task and run
  (:func:`hyperrl.data.multitask.task_episodes`).
* **runs in turn** (evaluation only; the library until session 11): the tasks of a pool side by side (20 rows),
  the 3 runs and the 2 pools one after another, 6 rounds of episodes instead of 1.
* **one at a time**: the same module and code with one-row envs, which is how the tasks were collected before
  (one ``env.rollout`` per episode and task).

Timed: one collection iteration (``PEARLData.collect()`` after the initial one) and one full evaluation
(``evaluate_pools()``; runs in turn: the same episodes per task and run, collected as the old loop did),
interleaved, order alternating, medians over repeats.

    python benchmarks/multitask_collection.py --quick     # 3 repeats
    python benchmarks/multitask_collection.py             # 7 repeats

The last line printed is one JSON object (``speedup_collection``, ``speedup_evaluation`` = one at a time / side by
side; ``speedup_evaluation_vs_runs_in_turn`` = runs in turn / side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/update_speed.py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "meta",
                      "pearl_quickstart.yaml")


def build(rows_one: bool):
    """The demo's module and its data, with one-row envs when ``rows_one``."""
    from hyperrl.algos.pearl import PEARL

    with open(CONFIG) as f:
        kwargs = yaml.safe_load(f)["model"]["init_args"]
    module = PEARL(**kwargs)
    if rows_one:
        module._collection_rows = lambda: 1
        module._envs["eval"] = module._task_env(None, 1)
    data = module.make_data()
    data.collect()  # iteration 0: the initial collection on every train task
    return module, data


def evaluate_runs_in_turn(module, env) -> dict:
    """The evaluation as the library did it until session 11: per pool, its tasks side by side in ``env``, the
    ``num_evals`` runs one after another (the same episodes per task and run as ``evaluate_pools``)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from hyperrl.envs import env_rows

    policy, rows = module.acting_policy(), env_rows(env)
    generator = torch.Generator().manual_seed(module.hparams.seed + 100)
    results = {}
    with torch.random.fork_rng(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for pool, tasks in module.evaluation_pools().items():
            final = []
            for start in range(0, len(tasks), rows):
                chunk = tasks[start : start + rows]
                runs = [module.adapt_on_tasks(env, policy, chunk, generator)
                        for _ in range(module.evaluation.num_evals)]
                final += [sum(run[i][-1] for run in runs) / len(runs) for i in range(len(chunk))]
            results[pool] = final
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    sides = {"side_by_side": build(False), "one_at_a_time": build(True)}
    times = {name: {"collection": [], "evaluation": []} for name in sides}
    module = sides["side_by_side"][0]
    pool_rows = module._task_env(None, max(len(tasks) for tasks in module.evaluation_pools().values()))
    times["runs_in_turn"] = {"evaluation": []}
    for r in range(repeats):
        start = time.perf_counter()
        evaluate_runs_in_turn(module, pool_rows)
        times["runs_in_turn"]["evaluation"].append(time.perf_counter() - start)
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            module, data = sides[name]
            start = time.perf_counter()
            data.collect()
            times[name]["collection"].append(time.perf_counter() - start)
            start = time.perf_counter()
            module.evaluate_pools()
            times[name]["evaluation"].append(time.perf_counter() - start)
    medians = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    for name, m in medians.items():
        print(f"{name:>14}: " + ", ".join(f"{k} {v:.2f} s" for k, v in m.items()))
    result = {
        "benchmark": "multitask_collection",
        "collection_s": {name: round(m["collection"], 3) for name, m in medians.items() if "collection" in m},
        "evaluation_s": {name: round(m["evaluation"], 3) for name, m in medians.items()},
        "speedup_collection": round(medians["one_at_a_time"]["collection"] / medians["side_by_side"]["collection"], 2),
        "speedup_evaluation": round(medians["one_at_a_time"]["evaluation"] / medians["side_by_side"]["evaluation"], 2),
        "speedup_evaluation_vs_runs_in_turn": round(
            medians["runs_in_turn"]["evaluation"] / medians["side_by_side"]["evaluation"], 2),
        "repeats": repeats,
        **run_info(load_start, args.quick),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
