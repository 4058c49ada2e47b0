"""How much does one evaluation of a meta-RL checkpoint vary? Re-evaluate it with other seeds (not a speed test).

A PEARL evaluation is itself random: the prior draws of ``z`` in the exploration episodes, their sampled actions
(``eval_sample_exploration``) and the posterior draw after adaptation all come from generators seeded by the
module's ``seed``. So the ``eval/test_tasks_return`` logged at one step is one draw around the policy's level. This
script loads each checkpoint, runs ``evaluate_pools()`` ``--repeats`` times with the module's ``seed`` set to
``seed + 1000 k`` (k = 0 reproduces the logged evaluation; the weights and the tasks are the checkpoint's), and
prints one JSON line per checkpoint: the mean test-task return after adaptation of each repeat, their mean and
standard deviation.

    python benchmarks/eval_spread.py RUN/version_0/checkpoints/last.ckpt [MORE.ckpt ...] --repeats 8
    python benchmarks/eval_spread.py CKPT --algo MetaSAC     # an oracle-context run
    python benchmarks/eval_spread.py CKPT --test-task-seed 1  # on a fresh test pool (same size, drawn from seed 1)

``--test-task-seed S`` replaces the checkpoint's test tasks by the test pool that ``task_seed = S`` draws (same
family, split and size; the train pool and its normalisation bounds stay the checkpoint's): goals that played no part
in training or in choosing the run's settings.

``docs/benchmarks.md`` (the PEARL demo) reports it for the demo's final checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # noqa: E402 (shared machines: no spinning OpenMP threads)

import torch  # noqa: E402

ALGOS = ("PEARL", "MetaSAC")


def load(path: str, cls: type) -> tuple:
    """The module the checkpoint at ``path`` holds, built as Lightning's ``load_from_checkpoint`` builds it but from
    its hyperparameters as the algorithm now names them (``hyperrl.runs.hyperparameters``), so that a checkpoint from
    before the settings were grouped (flat ``batch_size``, ``task_seed``, ...) still loads; and the checkpoint."""
    from hyperrl.runs import hyperparameters, read_checkpoint

    checkpoint = read_checkpoint(path)
    hparams = {k: v for k, v in hyperparameters(checkpoint, cls).items() if not k.startswith("_")}
    module = cls(**hparams)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading)
    return module, checkpoint


def spread(path: str, algo: str, repeats: int, test_task_seed: int | None = None) -> dict:
    """``repeats`` evaluations of the checkpoint at ``path`` (module docstring)."""
    import dataclasses

    import numpy as np

    from hyperrl import algos
    from hyperrl.envs.tasks import make_task_pools

    module, checkpoint = load(path, getattr(algos, algo))
    if test_task_seed is not None:
        hp, pools = module.hparams, module.pools
        fresh = make_task_pools(hp.env, test_task_seed, pools.split, len(pools.train), len(pools.test))
        module.pools = dataclasses.replace(pools, test=fresh.test)
    base = module.hparams.seed
    returns = []
    for k in range(repeats):
        module.hparams.seed = base + 1000 * k
        returns.append(float(np.mean(module.evaluate_pools()["test"]["return"])))
    module.hparams.seed = base
    step = int(checkpoint.get("global_step", -1))
    return {
        "checkpoint": path,
        "step": step,
        "test_task_seed": test_task_seed if test_task_seed is not None else module.tasks.task_seed,
        "test_returns": [round(r, 3) for r in returns],
        "mean": round(statistics.fmean(returns), 3),
        "sd": round(statistics.stdev(returns), 3) if repeats > 1 else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--algo", choices=ALGOS, default="PEARL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test-task-seed", type=int, default=None,
                        help="evaluate on the test pool this task seed draws instead of the checkpoint's")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats} is not allowed: expected at least 1")
    for path in args.checkpoints:
        if not os.path.isfile(path):
            parser.error(f"checkpoint {path!r} does not exist")
    torch.set_num_threads(args.threads)
    for path in args.checkpoints:
        print(json.dumps(spread(path, args.algo, args.repeats, args.test_task_seed)))


if __name__ == "__main__":
    main()
