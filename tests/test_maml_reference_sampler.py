"""The authors'-way reference sampler of ``benchmarks/maml_speed.py`` (``benchmarks/_maml_reference.py``): episodes,
returns and masks on policies with a known answer, the meta-update sampling phase, errors and clean shutdown."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from _maml_reference import ReferenceSampler, reference_meta_batch, reference_rollout  # noqa: E402

ENV = "hyperrl/Navigation2D-v0"
GOAL = (0.6, 0.8)  # on the unit circle


@pytest.fixture(scope="module")
def sampler():
    with ReferenceSampler(ENV, workers=2) as s:
        yield s
    assert not any(p.is_alive() for p in s.processes)


def test_standing_still_gives_full_episodes(sampler):
    sampler.set_task({"goal": list(GOAL)})
    episodes = sampler.sample(lambda obs: np.zeros((len(obs), 2), dtype=np.float32), 3)
    assert episodes.lengths == [100, 100, 100]
    batch = episodes.padded()
    assert batch["observation"].shape == (3, 100, 2) and batch["mask"].sum() == 300
    np.testing.assert_allclose(batch["reward"], -1.0, rtol=1e-6)  # distance 1 from the origin at every step


def test_heading_to_the_goal_ends_episodes_early_and_reuses_workers(sampler):
    sampler.set_task({"goal": list(GOAL)})
    step = 0.1 * np.asarray(GOAL, dtype=np.float32)
    episodes = sampler.sample(lambda obs: np.tile(step, (len(obs), 1)), 5)  # 5 episodes on 2 workers
    assert episodes.lengths == [10] * 5  # d = 1 - 0.1 k < 0.01 at k = 10
    batch = episodes.tensors(np.zeros(2, dtype=np.float32))
    np.testing.assert_allclose(batch["return"].numpy(), -4.5, rtol=1e-5)  # -sum(1 - 0.1 k), k = 1..10
    np.testing.assert_allclose(batch["observation"][:, 0].numpy(), 0.0)  # every episode starts at the origin
    assert batch["context"].shape == (5, 10, 2)


def test_meta_batch_with_the_maml_policy(sampler):
    from hyperrl.algos import MAML

    m = MAML(env=ENV, sampling={"meta_batch_size": 2, "fast_batch_size": 3})
    m.data = m.make_data()
    tasks = m.data.collect()
    g = torch.Generator().manual_seed(0)
    with m._threads():
        rollout = reference_rollout(m, sampler, tasks, 3, m._detached(m.meta_params()), g)
        batch = reference_meta_batch(m, sampler, tasks, g)
    assert [b["return"].shape for b in rollout] == [torch.Size([3])] * 2
    assert len(batch) == 2
    for train, train_adv, valid, valid_adv in batch:
        assert train["mask"].shape == valid["mask"].shape == (3, 100)
        assert train_adv.shape == valid_adv.shape == (3, 100)
        assert torch.isfinite(valid["return"]).all() and (valid["return"] < 0).all()


def test_a_failing_actor_shuts_the_workers_down():
    s = ReferenceSampler(ENV, workers=1)
    try:
        s.set_task({"goal": list(GOAL)})

        def actor(obs):
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            s.sample(actor, 2)
        assert s.closed and not any(p.is_alive() for p in s.processes)
    finally:
        s.close()


def test_a_worker_error_is_raised_and_the_sampler_still_works(sampler):
    with pytest.raises(RuntimeError, match="worker failed"):
        sampler.set_task({"velocity": 1.0})
    sampler.set_task({"goal": list(GOAL)})
    assert sampler.sample(lambda obs: np.zeros((len(obs), 2), dtype=np.float32), 2).lengths == [100, 100]


def test_a_dead_worker_raises_instead_of_hanging_and_shuts_the_others_down():
    s = ReferenceSampler(ENV, workers=2)
    try:
        s.set_task({"goal": list(GOAL)})
        s.processes[0].kill()
        s.processes[0].join(30)
        with pytest.raises(RuntimeError, match="died"):
            s.sample(lambda obs: np.zeros((len(obs), 2), dtype=np.float32), 2)
        assert s.closed and not any(p.is_alive() for p in s.processes)
    finally:
        s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        s.sample(lambda obs: obs, 1)
