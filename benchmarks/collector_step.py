"""The per-frame cost of the off-policy data path outside the update: one TorchRL collector step (one frame, a
tiny policy, HalfCheetah-v5) under the collector options that could make it leaner, and one replay-buffer write of
the transition, as ``OffPolicyData`` builds them. Once the update is a CUDA-graph replay these costs bound a GPU
fit's steps per second (docs/benchmarks.md, "GPU").

Variants run interleaved (one of each per repeat); the JSON line gives the median ms per frame and the speedup of
each variant over the collector as ``OffPolicyData`` builds it.

    python benchmarks/collector_step.py            # 1500 frames per variant, 3 repeats
    python benchmarks/collector_step.py --quick    # 300 frames, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from _common import run_info  # noqa: E402

#: collector options beyond those ``OffPolicyData`` passes (``{}``: as it builds the collector)
COLLECTOR_VARIANTS = {
    "as_built": {},
    "trust_policy": {"trust_policy": True},
    "no_traj_ids": {"track_traj_ids": False},
    "return_same_td": {"return_same_td": True},
    "all_three": {"trust_policy": True, "track_traj_ids": False, "return_same_td": True},
}


def collector_ms(options: dict, frames: int, env_id: str) -> float:
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector

    from hyperrl.envs import make_env

    probe = make_env(env_id)
    obs, act = probe.observation_spec["observation"].shape[-1], probe.action_spec.shape[-1]
    probe.close()
    net = torch.nn.Sequential(torch.nn.Linear(obs, 32), torch.nn.ReLU(), torch.nn.Linear(32, act), torch.nn.Tanh())
    collector = Collector(lambda: make_env(env_id, seed=0), TensorDictModule(net, ["observation"], ["action"]),
                          frames_per_batch=1, total_frames=-1, init_random_frames=0,
                          auto_register_policy_transforms=False, **options)
    batches = iter(collector)
    for _ in range(100):  # warm-up
        next(batches)
    start = time.perf_counter()
    for _ in range(frames):
        next(batches)
    elapsed = time.perf_counter() - start
    collector.shutdown()
    return elapsed / frames * 1e3


def buffer_write_ms(frames: int, tensordict_buffer: bool) -> float:
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer

    from hyperrl.data.offpolicy import TRANSITION_KEYS

    kind = TensorDictReplayBuffer if tensordict_buffer else ReplayBuffer
    buffer = kind(storage=LazyTensorStorage(100_000), batch_size=256)
    step = TensorDict({"observation": torch.randn(1, 17), "action": torch.randn(1, 6),
                       "next": {"observation": torch.randn(1, 17), "reward": torch.randn(1, 1),
                                "terminated": torch.zeros(1, 1, dtype=torch.bool),
                                "done": torch.zeros(1, 1, dtype=torch.bool)}}, batch_size=[1])
    for _ in range(100):
        buffer.extend(step.select(*TRANSITION_KEYS))
    start = time.perf_counter()
    for _ in range(frames):
        buffer.extend(step.select(*TRANSITION_KEYS))
    return (time.perf_counter() - start) / frames * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--env", default="HalfCheetah-v5")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    frames, repeats = (300, 1) if args.quick else (1500, 3)
    times: dict[str, list[float]] = {name: [] for name in [*COLLECTOR_VARIANTS, "buffer_tensordict", "buffer_plain"]}
    for _ in range(repeats):
        for name, options in COLLECTOR_VARIANTS.items():
            times[name].append(collector_ms(options, frames, args.env))
        times["buffer_tensordict"].append(buffer_write_ms(frames, True))
        times["buffer_plain"].append(buffer_write_ms(frames, False))
    medians = {k: round(statistics.median(v), 4) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "collector_step", "env": args.env, "frames": frames, "repeats": repeats,
        "ms_per_frame": medians,
        "collector_speedup_vs_as_built": {k: round(medians["as_built"] / medians[k], 3) for k in COLLECTOR_VARIANTS},
        **run_info(load, args.quick),
    }))


if __name__ == "__main__":
    main()
