"""Meta-batch sampling: ``hyperrl.data.multitask.sample_buffers`` against stacking ``TensorDictReplayBuffer.sample()``.

MetaSAC and PEARL draw a meta-batch every update: ``meta_batch_size`` train tasks × ``batch_size`` transitions, each from
its task's TorchRL replay buffer (PEARL also draws each task's context batch from its encoder buffer). Both sides
here produce the same values from the same draws of torch's generator (``tests/test_data.py``):

* **buffers**: ``torch.stack([buffers[t].sample() for t in tasks])``, what the data modules did before;
* **gather**: ``sample_buffers(buffers, tasks, batch_size, TASK_TRANSITION_KEYS)``, key by key from the storages.

Setting: ``--tasks`` buffers (20: the PEARL demo's train goals) of ``--fill`` navigation-sized transitions each (the
meta-RL keys: observation, action, context and their ``next`` entries), ``--meta-batch`` 16 tasks × ``--batch``
128 (the demo's meta-batch). The two sides alternate, ``--repeats`` rounds of ``--calls`` samples each; the JSON line
reports the medians in milliseconds per meta-batch and ``speedup_vs_buffers`` (their ratio, and per round).

    python benchmarks/meta_batch_sampling.py            # 7 rounds x 200 meta-batches
    python benchmarks/meta_batch_sampling.py --quick    # 3 rounds x 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # noqa: E402 (shared machines: no spinning OpenMP threads)

import torch  # noqa: E402
from _common import run_info  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer  # noqa: E402

from hyperrl.data.multitask import TASK_TRANSITION_KEYS, sample_buffers  # noqa: E402


def make_buffers(tasks: int, fill: int, batch: int, obs: int = 2, act: int = 2, ctx: int = 2) -> list:
    buffers = []
    for _ in range(tasks):
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(100_000), batch_size=batch)
        flags = {k: torch.zeros(fill, 1, dtype=torch.bool) for k in ("terminated", "truncated", "done")}
        buffer.extend(TensorDict({
            "observation": torch.randn(fill, obs), "action": torch.randn(fill, act), "context": torch.randn(fill, ctx),
            "next": {"observation": torch.randn(fill, obs), "reward": torch.randn(fill, 1),
                     "context": torch.randn(fill, ctx), **flags},
        }, [fill]))  # fmt: skip
        buffers.append(buffer)
    return buffers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--fill", type=int, default=5000)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3 rounds x 50 meta-batches")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.calls = 3, 50
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    buffers = make_buffers(args.tasks, args.fill, args.batch)
    tasks = torch.randint(0, args.tasks, (args.meta_batch,)).tolist()

    def with_buffers():
        return torch.stack([buffers[t].sample() for t in tasks], 0)

    def with_gather():
        return sample_buffers(buffers, tasks, args.batch, TASK_TRANSITION_KEYS)

    timings = {"buffers": [], "gather": []}
    for fn in (with_buffers, with_gather):  # warm-up
        for _ in range(10):
            fn()
    for _ in range(args.repeats):
        for name, fn in (("buffers", with_buffers), ("gather", with_gather)):
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            timings[name].append((time.perf_counter() - start) / args.calls * 1e3)
    per_round = [b / g for b, g in zip(timings["buffers"], timings["gather"], strict=True)]
    buffers_ms, gather_ms = statistics.median(timings["buffers"]), statistics.median(timings["gather"])
    print(json.dumps({
        "benchmark": "meta_batch_sampling",
        "setting": {"tasks": args.tasks, "fill": args.fill, "meta_batch": args.meta_batch, "batch": args.batch,
                    "repeats": args.repeats, "calls": args.calls},
        "buffers_ms": round(buffers_ms, 3), "gather_ms": round(gather_ms, 3),
        "speedup_vs_buffers": round(buffers_ms / gather_ms, 2),
        "speedup_per_round": [round(r, 2) for r in per_round],
        **run_info(load_start, args.quick),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
