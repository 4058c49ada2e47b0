"""Tasks side by side: the batched task env (``make_task_env(num_envs=R)``), ``task_episodes`` (whole episodes per
task, the budget cut stored as a truncation, early ends, per-round hooks) and ``unique_runs``."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from hyperrl.data.multitask import task_episodes, unique_runs
from hyperrl.envs import env_rows, env_state, episode_horizon, load_env_state, make_task_env, task_envs
from hyperrl.errors import ConfigurationError

NAV = "hyperrl/Navigation2D-v0"


class TowardGoal(nn.Module):
    """Moves at full speed toward the goal (the oracle context): episodes end early, when within 0.01 of it."""

    def forward(self, observation, context):
        step = context - observation
        return (step / step.norm(dim=-1, keepdim=True).clamp_min(1e-8)).clamp(-1, 1) * torch.clamp(
            step.norm(dim=-1, keepdim=True) / 0.1, max=1.0)


class StandStill(nn.Module):
    def forward(self, observation, context):
        return torch.zeros_like(observation)


def policy(module):
    return TensorDictModule(module, in_keys=["observation", "context"], out_keys=["action"])


def test_a_batched_task_env_steps_each_row_on_its_own_task():
    env = make_task_env(NAV, seed=3, rescale_actions=True, num_envs=3)
    assert env.batch_size == (3,) and env_rows(env) == 3 and episode_horizon(env) == 100
    goals = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    for row, goal in zip(task_envs(env), goals):
        row.set_task({"goal": goal})
    rollout = env.rollout(4, policy(StandStill()))
    assert rollout.shape == (3, 4)
    assert torch.allclose(rollout.get("context")[:, 0], torch.tensor(goals))
    assert torch.allclose(rollout.get(("next", "reward")), -torch.ones(3, 4, 1))
    assert env_rows(make_task_env(NAV, seed=0)) == 1
    with pytest.raises(ConfigurationError, match="num_envs=0 is not allowed"):
        make_task_env(NAV, num_envs=0)


def test_batched_env_state_round_trips_every_row():
    env = make_task_env(NAV, seed=0, rescale_actions=True, num_envs=2)
    env.rollout(3, policy(TowardGoal()))
    state = env_state(env)
    assert len(state["rows"]) == 2
    other = make_task_env(NAV, seed=5, rescale_actions=True, num_envs=2)
    assert load_env_state(other, state)
    assert env_state(other) == state
    with pytest.raises(ValueError, match="rows"):
        load_env_state(make_task_env(NAV, seed=0, num_envs=3), state)


def test_task_episodes_end_each_task_at_its_own_done_and_cut_the_budget_as_a_truncation():
    env = make_task_env(NAV, seed=0, rescale_actions=True, num_envs=3)
    near, far = {"goal": [0.25, 0.0]}, {"goal": [0.0, 1.0]}
    rounds = []
    out = task_episodes(env, policy(TowardGoal()), [near, far], 100, steps=130,
                        after_round=lambda k, eps: rounds.append((k, [None if e is None else e.numel() for e in eps])))
    # near: reaches its goal in 3 steps (terminated), episode after episode until 130 steps, the last one cut
    near_eps, far_eps = out
    assert [e.numel() for e in near_eps][:2] == [3, 3] and sum(e.numel() for e in near_eps) == 130
    assert all(bool(e.get(("next", "terminated"))[-1]) for e in near_eps[:-1])
    last = near_eps[-1]
    assert last.numel() == 1 and bool(last.get(("next", "truncated"))[-1]) and bool(last.get(("next", "done"))[-1])
    assert not bool(last.get(("next", "terminated"))[-1])
    # far: ten steps to the goal as well (full speed), so it ends early too; each episode starts at the origin
    assert all(torch.equal(e.get("observation")[0], torch.zeros(2)) for e in near_eps + far_eps)
    assert all(torch.allclose(e.get("context"), torch.tensor([0.25, 0.0])) for e in near_eps)
    # one round per episode of the longest-running task; a stopped task shows None
    assert len(rounds) == max(len(near_eps), len(far_eps))
    assert [k for k, _ in rounds] == list(range(len(rounds)))
    assert rounds[0][1] == [3, 10]


def test_task_episodes_by_count_and_whole_episodes_without_cut():
    env = make_task_env(NAV, seed=0, rescale_actions=True, num_envs=2)
    still = policy(StandStill())
    out = task_episodes(env, still, [{"goal": [1.0, 0.0]}], 100, episodes=2)
    assert [e.numel() for e in out[0]] == [100, 100]
    assert bool(out[0][0].get(("next", "truncated"))[-1])  # the time limit
    out = task_episodes(env, still, [{"goal": [1.0, 0.0]}, {"goal": [0.0, 1.0]}], 100, steps=150, cut=False)
    assert [[e.numel() for e in eps] for eps in out] == [[100, 100], [100, 100]]
    with pytest.raises(ValueError, match="do not fit"):
        task_episodes(env, still, [{"goal": [1.0, 0.0]}] * 3, 100, episodes=1)


def test_tasks_side_by_side_give_the_episodes_each_gets_alone():
    env = make_task_env(NAV, seed=0, rescale_actions=True, num_envs=3)
    single = make_task_env(NAV, seed=0, rescale_actions=True)
    tasks = [{"goal": [0.3, 0.4]}, {"goal": [-0.6, 0.8]}, {"goal": [0.05, 0.0]}]
    together = task_episodes(env, policy(TowardGoal()), tasks, 100, steps=120)
    for task, episodes in zip(tasks, together):
        alone = task_episodes(single, policy(TowardGoal()), [task], 100, steps=120)[0]
        assert len(alone) == len(episodes)
        for a, b in zip(alone, episodes):
            assert a.numel() == b.numel()
            for key in (("next", "observation"), ("next", "reward"), ("next", "done"), "action"):
                assert torch.allclose(a.get(key), b.get(key))


@pytest.mark.parametrize("tasks, size, runs", [
    ([3, 1, 3, 0, 2], 5, [[3, 1], [3, 0, 2]]),
    ([0, 1, 2, 3, 4], 2, [[0, 1], [2, 3], [4]]),
    ([2, 2, 2], 4, [[2], [2], [2]]),
    ([], 3, []),
])
def test_unique_runs_keep_order_size_and_distinct_tasks(tasks, size, runs):
    assert unique_runs(tasks, size) == runs
