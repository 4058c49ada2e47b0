"""The real data path (make_env -> collector -> replay buffer): episode ends as they are stored for training."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_kwargs

from hyperrl.algos import SAC
from hyperrl.data import OffPolicyData
from hyperrl.envs import make_env


def collect(env_id, frames, frames_per_batch=50, warmup_frames=100, seed=0):
    """Build the data plumbing as ``OffPolicyAlgorithm.setup`` does, collect ``frames`` frames; return the stored
    transitions (in order) and the raw collector batches."""
    module = SAC(**tiny_kwargs(env=env_id, seed=seed))
    data = OffPolicyData(
        lambda: make_env(env_id, seed=seed),
        module.acting_policy(),
        buffer_size=10_000,
        batch_size=8,
        frames_per_batch=frames_per_batch,
        warmup_frames=warmup_frames,
    )
    try:
        batches = torch.cat([data.collect() for _ in range(frames // frames_per_batch)])
        stored = data.buffer.storage.get(torch.arange(len(data)))
    finally:
        data.shutdown()
    assert len(stored) == frames
    return stored, batches


def test_time_limit_is_stored_as_truncation_not_termination():
    """Pendulum-v1 never terminates; its 200-step time limit must reach the buffer as done (the episode ended,
    the collector resets) but not terminated (the critic target still bootstraps), only at step 200, with the
    true last observation as the next observation."""
    stored, batches = collect("Pendulum-v1", frames=250)  # one full episode and 50 steps of the next
    done = stored["next", "done"].squeeze(-1)
    terminated = stored["next", "terminated"].squeeze(-1)
    limit = 199  # the 200th transition

    assert done[limit], "the time-limit step is done"
    assert not done[:limit].any(), f"done before the time limit at {done[:limit].nonzero().flatten().tolist()}"
    assert not done[limit + 1 :].any()
    assert not terminated.any(), "a time limit is not a terminal state: its value must be bootstrapped"
    # the buffer keeps only done/terminated; the collector's batch carries the truncation flag itself
    truncated = batches["next", "truncated"].squeeze(-1)
    assert truncated[limit] and truncated.sum() == 1
    assert torch.equal(batches["next", "done"].squeeze(-1), done)

    obs, next_obs, action = stored["observation"], stored["next", "observation"], stored["action"]
    # within the episode each next observation is the following step's observation ...
    assert torch.equal(next_obs[:limit], obs[1 : limit + 1])
    # ... the time-limit step stores the episode's real last observation (Pendulum dynamics), not the reset one ...
    cos, sin, thdot = obs[limit].double().tolist()
    th, u = math.atan2(sin, cos), max(-2.0, min(2.0, action[limit].item()))
    new_thdot = max(-8.0, min(8.0, thdot + (3 * 10.0 / 2 * math.sin(th) + 3.0 * u) * 0.05))
    expected = torch.tensor([math.cos(th + new_thdot * 0.05), math.sin(th + new_thdot * 0.05), new_thdot])
    torch.testing.assert_close(next_obs[limit], expected.float(), atol=1e-4, rtol=0)
    # ... and the next episode starts from a reset
    assert not torch.allclose(obs[limit + 1], next_obs[limit])


def test_termination_is_stored_as_terminated():
    """InvertedPendulum-v5 under random actions falls within a few dozen steps: every such end is stored as
    terminated and done, exactly where the pole angle leaves [-0.2, 0.2], and the next step starts a new episode."""
    stored, batches = collect("InvertedPendulum-v5", frames=200, warmup_frames=200)  # all random actions
    done = stored["next", "done"].squeeze(-1)
    terminated = stored["next", "terminated"].squeeze(-1)
    next_obs = stored["next", "observation"]

    assert terminated.sum() >= 2, "random actions make the pendulum fall"
    assert torch.equal(done, terminated), "no time limit within 200 steps: every end is a termination"
    assert not batches["next", "truncated"].any()
    fallen = next_obs[:, 1].abs() > 0.2  # the env's termination condition, on the stored next observation
    assert torch.equal(terminated, fallen)
    ends = terminated.nonzero().flatten()
    ends = ends[ends + 1 < len(stored)]
    # after a termination the next episode starts from a reset (InvertedPendulum-v5: qpos, qvel within ±0.01)
    assert len(ends) and (stored["observation"][ends + 1].abs() <= 0.01).all()
    within = ~terminated[:-1]
    assert torch.equal(next_obs[:-1][within], stored["observation"][1:][within])


def test_meta_batches_are_gathered_exactly_as_stacked_replay_buffer_samples():
    """``sample_buffers`` (the meta-batch hot path) draws the same indices from torch's generator as TorchRL's
    ``RandomSampler`` and returns the same values, tasks repeated or not; an empty task buffer is refused."""
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    from hyperrl.data.multitask import sample_buffers

    buffers = []
    for task, n in enumerate((7, 30, 12)):
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=5)
        buffer.extend(TensorDict({
            "observation": torch.randn(n, 3), "action": torch.randn(n, 2),
            "next": {"reward": torch.randn(n, 1), "terminated": torch.rand(n, 1) > 0.5},
        }, [n]))  # fmt: skip
        buffers.append(buffer)
    buffers[1].extend(TensorDict({"observation": torch.randn(25, 3), "action": torch.randn(25, 2), "next": {
        "reward": torch.randn(25, 1), "terminated": torch.zeros(25, 1, dtype=torch.bool)}}, [25]))  # wraps around
    keys = ("observation", "action", ("next", "reward"), ("next", "terminated"))
    tasks = [1, 0, 1, 2]
    torch.manual_seed(3)
    expected = torch.stack([buffers[t].sample() for t in tasks], 0)
    after_expected = torch.rand(3)
    torch.manual_seed(3)
    got = sample_buffers(buffers, tasks, 5, keys)
    assert torch.equal(torch.rand(3), after_expected)  # the same number of draws from the global generator
    assert got.batch_size == torch.Size([4, 5])
    assert set(got.keys(True, True)) == set(keys)
    for key in keys:
        assert torch.equal(got.get(key), expected.get(key)), key
    empty = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=5)
    with pytest.raises(RuntimeError, match=r"empty replay buffers of tasks \[1\]"):
        sample_buffers([buffers[0], empty], [0, 1, 1], 5, keys)
