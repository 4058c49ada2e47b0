"""Meta-RL task families (hyperrl.envs.tasks/locomotion/navigation): task API, rewards, pools, TorchRL wrapper, resume."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from hyperrl.envs import (
    TASK_ENV_IDS,
    TaskPools,
    check_context_dim,
    check_env_id,
    check_task_env_id,
    env_state,
    load_env_state,
    make_task_env,
    make_task_pools,
    unwrap_task_env,
)
from hyperrl.errors import ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore:.*A Box observation space (minimum|maximum) value is.*")

DIMS = {  # env id -> (observation, action, context, horizon)
    "hyperrl/HalfCheetahVel-v0": (20, 6, 1, 200),
    "hyperrl/HalfCheetahDir-v0": (20, 6, 1, 200),
    "hyperrl/AntVel-v0": (27, 8, 1, 200),
    "hyperrl/AntDir-v0": (27, 8, 1, 200),
    "hyperrl/AntDirAngle-v0": (27, 8, 1, 200),
    "hyperrl/AntGoal-v0": (27, 8, 2, 200),
    "hyperrl/PearlAntGoal-v0": (113, 8, 2, 200),
    "hyperrl/Navigation2D-v0": (2, 2, 2, 100),
    "hyperrl/SparseNavigation2D-v0": (2, 2, 2, 100),
}
OTHER_TASK = {"velocity": {"velocity": 0.3}, "direction": {"direction": -1.0}, "goal": {"goal": [-0.6, 0.8]}}


def _other_task(env):
    return OTHER_TASK[env.unwrapped.task_family.key]


def test_every_family_is_registered():
    assert set(TASK_ENV_IDS) == set(DIMS)


@pytest.mark.parametrize("env_id", list(DIMS))
def test_env_checker_dims_and_horizon(env_id):
    obs_dim, act_dim, ctx_dim, horizon = DIMS[env_id]
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
    assert env.spec.max_episode_steps == horizon
    assert env.unwrapped.context_dim == ctx_dim
    spec = check_task_env_id(env_id)
    assert (spec.observation_dim, spec.action_dim, spec.context_dim) == (obs_dim, act_dim, ctx_dim)


@pytest.mark.parametrize("env_id", list(DIMS))
def test_task_changes_reward_not_dynamics(env_id):
    a, b = gym.make(env_id), gym.make(env_id)
    b.unwrapped.set_task(_other_task(b))
    assert a.unwrapped.task != b.unwrapped.task
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, a.action_space.shape[0])).astype(np.float32)
    actions *= a.action_space.high
    ra, rb = [], []
    for act in actions:
        np.testing.assert_array_equal(oa, ob)
        oa, r1, _, _, i1 = a.step(act)
        ob, r2, _, _, i2 = b.step(act)
        # the sparse reward is 0 for both far from either goal: compare its dense counterpart there
        ra.append(i1.get("dense_reward", r1)), rb.append(i2.get("dense_reward", r2))
    np.testing.assert_array_equal(oa, ob)
    assert ra != rb


def test_halfcheetah_rewards_equal_their_formulas():
    for env_id, task in (("hyperrl/HalfCheetahVel-v0", {"velocity": 2.2}), ("hyperrl/HalfCheetahDir-v0", {"direction": -1.0})):
        env = gym.make(env_id)
        u = env.unwrapped
        u.set_task(task)
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        for _ in range(5):
            a = rng.uniform(-1, 1, 6).astype(np.float32)
            x0 = float(u.data.qpos[0])
            _, reward, terminated, _, info = env.step(a)
            a = a.astype(np.float64)
            v = (float(u.data.qpos[0]) - x0) / u.dt
            assert u.dt == pytest.approx(0.05)
            if "velocity" in task:
                expected = -abs(v - task["velocity"]) - 0.05 * np.sum(np.square(a))
            else:
                expected = task["direction"] * v - 0.05 * np.sum(np.square(a))
            assert reward == expected and not terminated
            assert info["x_velocity"] == v
        obs = env.step(np.zeros(6, np.float32))[0]
        np.testing.assert_array_equal(obs[:8], u.data.qpos[1:])
        np.testing.assert_array_equal(obs[8:17], u.data.qvel)
        np.testing.assert_array_equal(obs[17:], u.data.body("torso").xpos)


@pytest.mark.parametrize(
    "env_id,task",
    [
        ("hyperrl/AntVel-v0", {"velocity": 1.7}),
        ("hyperrl/AntDir-v0", {"direction": -1.0}),
        ("hyperrl/AntDirAngle-v0", {"direction": 1.0}),
        ("hyperrl/AntGoal-v0", {"goal": [-2.0, 1.0]}),
    ],
)
def test_ant_rewards_equal_their_formulas(env_id, task):
    env = gym.make(env_id)
    u = env.unwrapped
    u.set_task(task)
    env.reset(seed=2)
    rng = np.random.default_rng(2)
    contact = []
    for _ in range(20):
        a = rng.uniform(-1, 1, 8).astype(np.float32)
        xy0 = u.data.body("torso").xpos[:2].copy()
        obs, reward, terminated, _, info = env.step(a)
        a = a.astype(np.float64)
        xy1 = u.data.body("torso").xpos[:2].copy()
        vel = (xy1 - xy0) / u.dt
        costs = 0.005 * np.sum(np.square(a)), 5e-4 * np.sum(np.square(np.clip(u.data.cfrc_ext, -1.0, 1.0)))
        if env_id == "hyperrl/AntVel-v0":
            expected = -abs(vel[0] - task["velocity"]) + (1.0 + 0.05) - costs[0] - costs[1]
        elif env_id == "hyperrl/AntDir-v0":
            expected = task["direction"] * vel[0] + 0.05 - costs[0] - costs[1]
        elif env_id == "hyperrl/AntDirAngle-v0":
            d = task["direction"]
            expected = float(vel[0] * np.cos(d) + vel[1] * np.sin(d)) + 0.05 - costs[0] - costs[1]
        else:
            expected = -float(np.sum(np.abs(xy1 - np.array(task["goal"])))) + (4.0 + 0.05) - costs[0] - costs[1]
        assert reward == expected
        contact.append(costs[1])
        np.testing.assert_array_equal(obs, np.concatenate([u.data.qpos[2:], u.data.qvel]))
        z = u.data.qpos[2]
        assert terminated == (not (0.2 <= z <= 1.0))
        if terminated:
            break
    assert max(contact) > 0  # contact forces are computed once the legs touch the floor


def test_pearl_ant_goal_reward_observation_and_no_termination():
    """PEARL's ant-goal: ``-||xy - goal||_1 + 0.05 - costs`` (no +4); observation qpos + qvel + clipped contact
    forces of every body; never terminates, even with the torso outside the healthy range."""
    env = gym.make("hyperrl/PearlAntGoal-v0")
    u = env.unwrapped
    goal = [-2.0, 1.0]
    u.set_task({"goal": goal})
    env.reset(seed=2)
    rng = np.random.default_rng(2)
    contact = []
    for _ in range(20):
        a = rng.uniform(-1, 1, 8).astype(np.float32)
        obs, reward, terminated, _, _ = env.step(a)
        a = a.astype(np.float64)
        xy = u.data.body("torso").xpos[:2]
        forces = np.clip(u.data.cfrc_ext, -1.0, 1.0)
        ctrl, contact_cost = 0.005 * np.sum(np.square(a)), 5e-4 * np.sum(np.square(forces))
        assert reward == -float(np.sum(np.abs(xy - np.array(goal)))) + 0.05 - ctrl - contact_cost
        np.testing.assert_array_equal(obs, np.concatenate([u.data.qpos, u.data.qvel, forces.ravel()]))
        assert not terminated
        contact.append(np.abs(obs[29:]).max())
    assert max(contact) > 0  # the contact forces do reach the observation
    qpos = u.data.qpos.copy()
    qpos[2] = 1.5  # torso far above the healthy range: MAML's AntGoal would end the episode here
    u.set_state(qpos, u.data.qvel.copy())
    assert not u.is_healthy and env.step(np.zeros(8, np.float32))[2] is False
    # PEARL's original costs are one kwarg away
    orig = gym.make("hyperrl/PearlAntGoal-v0", ctrl_cost_weight=0.1, survive_bonus=0.0).unwrapped
    orig.reset(seed=0)
    info = orig.step(np.ones(8, np.float32))[4]
    assert info["reward_ctrl"] == pytest.approx(-0.8) and info["reward_survive"] == 0.0


def test_pearl_ant_goal_goals_uniform_in_the_disc_of_radius_3():
    from scipy import stats

    u = gym.make("hyperrl/PearlAntGoal-v0").unwrapped
    g = np.array([t["goal"] for t in u.sample_tasks(4000, 0)])
    r, angle = np.linalg.norm(g, axis=1), np.arctan2(g[:, 1], g[:, 0])
    assert r.max() <= 3.0 and (g < 0).any(axis=0).all()  # the whole disc, not the upper half
    # uniform in area: (r / 3)^2 ~ U[0, 1] and the angle ~ U[-pi, pi]
    assert stats.kstest((r / 3.0) ** 2, "uniform").pvalue > 1e-3
    assert stats.kstest((angle + np.pi) / (2 * np.pi), "uniform").pvalue > 1e-3
    assert stats.kstest(r / 3.0, "uniform").pvalue < 1e-6  # r = 3 U would crowd the centre
    # the pools: the authors' 150 train / 30 test, normalised by the train range
    p = make_task_pools("hyperrl/PearlAntGoal-v0", seed=0)
    assert (len(p.train), len(p.test), len(p.ood)) == (150, 30, 0)
    assert (np.abs(p.contexts("train")) <= 1).all()


def test_ant_terminates_when_unhealthy():
    env = gym.make("hyperrl/AntVel-v0")
    u = env.unwrapped
    env.reset(seed=0)
    qpos = u.data.qpos.copy()
    qpos[2] = 1.5  # torso far above the healthy range
    u.set_state(qpos, u.data.qvel.copy())
    assert env.step(np.zeros(8, np.float32))[2] is True


def test_context_in_info_at_reset_and_step():
    env = gym.make("hyperrl/HalfCheetahVel-v0")
    u = env.unwrapped
    u.set_context_bounds(0.5, 2.5)
    u.set_task({"velocity": 2.0})
    _, info = env.reset(seed=0)
    assert info["context"].dtype == np.float32 and info["context"].shape == (1,)
    np.testing.assert_allclose(info["context"], [(2.0 - 0.5) / 2.0], rtol=0, atol=1e-7)
    u.set_task({"velocity": 3.5})  # takes effect from the next step; OOD maps above 1
    info = env.step(np.zeros(6, np.float32))[4]
    np.testing.assert_allclose(info["context"], [1.5], rtol=0, atol=1e-7)
    assert u.context_bounds == ([0.5], [2.5])

    nav = gym.make("hyperrl/Navigation2D-v0")
    nu = nav.unwrapped
    nu.set_context_bounds(-0.5, 1.0)
    nu.set_task({"goal": [0.25, 1.0]})
    _, info = nav.reset(seed=0)
    np.testing.assert_allclose(info["context"], [2 * 0.75 / 1.5 - 1, 1.0], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(nav.step(np.zeros(2, np.float32))[4]["context"], info["context"])
    d = gym.make("hyperrl/AntDir-v0").unwrapped
    d.set_task({"direction": -1.0})
    np.testing.assert_array_equal(d.context(), [-1.0])


def test_sample_tasks_seeded_and_distributions():
    u = gym.make("hyperrl/HalfCheetahVel-v0").unwrapped
    t1 = u.sample_tasks(50, 7)
    assert t1 == u.sample_tasks(50, np.random.default_rng(7)) and t1 != u.sample_tasks(50, 8)
    assert all(isinstance(t["velocity"], float) and 0 <= t["velocity"] <= 3 for t in t1)
    assert all(2.5 <= t["velocity"] <= 3 for t in u.sample_tasks(50, 0, distribution="ood"))
    assert all(0 <= t["velocity"] <= 2.5 for t in u.sample_tasks(50, 0, distribution="medium"))
    goals = gym.make("hyperrl/Navigation2D-v0").unwrapped.sample_tasks(50, 0)
    g = np.array([t["goal"] for t in goals])
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-12)
    assert (g[:, 1] >= 0).all() and isinstance(goals[0]["goal"], list)
    ant = np.array([t["goal"] for t in gym.make("hyperrl/AntGoal-v0").unwrapped.sample_tasks(50, 0)])
    assert (np.abs(ant) <= 3).all() and ant.shape == (50, 2)
    dirs = {t["direction"] for t in gym.make("hyperrl/HalfCheetahDir-v0").unwrapped.sample_tasks(20, 0)}
    assert dirs == {-1.0, 1.0}


def test_pools_sizes_determinism_and_no_overlap():
    expected = {
        ("hyperrl/HalfCheetahVel-v0", "default"): (100, 30, 0),
        ("hyperrl/HalfCheetahVel-v0", "medium"): (100, 30, 30),
        ("hyperrl/AntVel-v0", "medium"): (100, 30, 30),
        ("hyperrl/AntGoal-v0", "default"): (100, 30, 0),
        ("hyperrl/Navigation2D-v0", "default"): (80, 20, 0),
        ("hyperrl/AntDir-v0", "default"): (2, 2, 0),
    }
    for (env_id, split), sizes in expected.items():
        p = make_task_pools(env_id, seed=0, split=split)
        assert (len(p.train), len(p.test), len(p.ood)) == sizes
        assert p.state_dict() == make_task_pools(env_id, seed=0, split=split).state_dict()
        if sizes[0] > 2:
            assert p.train != make_task_pools(env_id, seed=1, split=split).train
            keys = [tuple(np.atleast_1d(next(iter(t.values())))) for t in p.train + p.test + p.ood]
            assert len(set(keys)) == len(keys)
    d = make_task_pools("hyperrl/HalfCheetahDir-v0", seed=5)
    assert d.train == d.test == [{"direction": -1.0}, {"direction": 1.0}]
    # each pool has its own stream: another test size leaves the train pool as it was
    assert make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_test=5).train == make_task_pools(
        "hyperrl/HalfCheetahVel-v0", 0
    ).train
    small = make_task_pools("hyperrl/Navigation2D-v0", 0, n_train=7, n_test=3)
    assert (len(small.train), len(small.test)) == (7, 3)


def test_pool_normalisation_uses_the_train_range():
    p = make_task_pools("hyperrl/HalfCheetahVel-v0", seed=0, split="medium")
    v = np.array([t["velocity"] for t in p.train])
    assert p.context_bounds == ([v.min()], [v.max()])
    c = p.contexts("train")[:, 0]
    assert c.min() == 0.0 and c.max() == 1.0 and c.dtype == np.float32
    assert (p.contexts("ood") > 1).all()
    assert ((p.contexts("test") >= 0) & (p.contexts("test") <= 1)).all()
    np.testing.assert_allclose(p.contexts("ood")[:, 0], (np.array([t["velocity"] for t in p.ood]) - v.min()) / np.ptp(v),
                               rtol=1e-6)
    n = make_task_pools("hyperrl/Navigation2D-v0", seed=0)
    g = np.array([t["goal"] for t in n.train])
    assert n.context_low == [g.min()] * 2 and n.context_high == [g.max()] * 2  # scalar over both coordinates
    np.testing.assert_allclose(n.contexts("test"), 2 * (np.array([t["goal"] for t in n.test]) - g.min()) / np.ptp(g) - 1,
                               atol=1e-6)
    assert make_task_pools("hyperrl/AntDir-v0", 0).contexts("test").tolist() == [[-1.0], [1.0]]


def test_pools_state_dict_is_plain_data():
    p = make_task_pools("hyperrl/AntGoal-v0", seed=3, n_train=4, n_test=2)
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    q = TaskPools.from_state_dict(torch.load(buf, weights_only=True))
    assert q == p


def test_task_env_torchrl_context_entry_and_specs():
    from torchrl.envs.utils import check_env_specs

    pools = make_task_pools("hyperrl/HalfCheetahVel-v0", seed=0, split="medium", n_train=10, n_test=2, n_ood=2)
    env = make_task_env("hyperrl/HalfCheetahVel-v0", seed=0, context_bounds=pools, task=pools.ood[0])
    check_env_specs(env)
    td = env.rollout(5)
    assert td["observation"].shape == (5, 20) and td["context"].shape == (5, 1)
    expected = torch.from_numpy(pools.context(pools.ood[0]))
    assert (td["context"] == expected).all() and (td["next", "context"] == expected).all() and expected.item() > 1
    unwrap_task_env(env).set_task(pools.train[0])
    assert (env.reset()["context"] == torch.from_numpy(pools.context(pools.train[0]))).all()
    nav = make_task_env("hyperrl/Navigation2D-v0", seed=0, context_bounds=([-1, 0], [1, 1]), sparse=True)
    check_env_specs(nav)
    assert unwrap_task_env(nav).sparse and nav.rollout(3)["next", "context"].shape == (3, 2)
    assert unwrap_task_env(nav).context_bounds == ([-1.0, 0.0], [1.0, 1.0])


@pytest.mark.parametrize("env_id,horizon", [("hyperrl/HalfCheetahVel-v0", 200), ("hyperrl/Navigation2D-v0", 100)])
def test_time_limit_reaches_torchrl_as_truncation(env_id, horizon):
    env = make_task_env(env_id, seed=0)
    td = env.reset()
    for t in range(horizon):
        td["action"] = torch.zeros(env.action_spec.shape)
        td = env.step(td)
        assert bool(td["next", "truncated"]) == (t == horizon - 1)
        assert not bool(td["next", "terminated"])
        td = td["next"].exclude("reward", "done", "terminated", "truncated")


def test_navigation_terminates_near_the_goal_and_sparse_reward():
    env = gym.make("hyperrl/Navigation2D-v0")
    env.unwrapped.set_task({"goal": [0.0, 1.0]})
    env.reset(seed=0)
    for t in range(10):
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.5], np.float32))  # clipped to 0.1
        assert obs[1] == pytest.approx(0.1 * (t + 1))
        assert reward == -info["distance"] == pytest.approx(-abs(1.0 - 0.1 * (t + 1)))
        assert terminated == (t == 9)
        assert info["distance"] < 0.01 if t == 9 else info["distance"] > 0.09
    sparse = gym.make("hyperrl/SparseNavigation2D-v0")
    sparse.unwrapped.set_task({"goal": [0.0, 1.0]})
    sparse.reset(seed=0)
    rewards, distances = [], []
    for _ in range(9):
        _, r, _, _, info = sparse.step(np.array([0.0, 0.1], np.float32))
        rewards.append(r), distances.append(info["distance"])
        assert info["dense_reward"] == -info["distance"]
    for r, d in zip(rewards, distances):
        assert r == (1.0 - d if d <= 0.2 else 0.0)
    assert rewards[:7] == [0.0] * 7 and rewards[8] == pytest.approx(0.9)
    tenv = make_task_env("hyperrl/Navigation2D-v0", task={"goal": [1.0, 0.0]})
    td = tenv.reset()
    for _ in range(10):
        td["action"] = torch.tensor([0.1, 0.0])
        td = tenv.step(td)
        td = td["next"].exclude("reward", "done", "terminated", "truncated") if not td["next", "done"] else td
    assert bool(td["next", "terminated"]) and not bool(td["next", "truncated"])


@pytest.mark.parametrize("env_id", ["hyperrl/HalfCheetahVel-v0", "hyperrl/AntGoal-v0", "hyperrl/Navigation2D-v0"])
def test_env_state_round_trip_mid_episode(env_id):
    def steps(env, td, actions):
        out = []
        for a in actions:
            td["action"] = a
            td = env.step(td)
            out.append(td["next"].clone())
            td = td["next"].exclude("reward", "done", "terminated", "truncated")
        return out, td

    pools = make_task_pools(env_id, seed=0, n_train=5, n_test=2)
    a = make_task_env(env_id, seed=1, context_bounds=pools, task=pools.test[0])
    torch.manual_seed(0)
    actions = [a.action_spec.rand() for _ in range(12)]
    _, td = steps(a, a.reset(), actions[:6])
    state = env_state(a)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    b = make_task_env(env_id, seed=99)  # other seed, nominal bounds, default task
    b.reset()
    assert load_env_state(b, state)
    assert unwrap_task_env(b).task == pools.test[0]
    assert unwrap_task_env(b).context_bounds == pools.context_bounds
    ra, _ = steps(a, td.clone(), actions[6:])
    rb, _ = steps(b, td.clone(), actions[6:])
    for x, y in zip(ra, rb):
        for key in ("observation", "reward", "context", "terminated", "truncated"):
            assert torch.equal(x[key], y[key]), key
    # the time-limit counter travelled too
    assert state["elapsed_steps"] == 6


def test_plain_env_state_unchanged():
    from hyperrl.envs import make_env

    env = make_env("HalfCheetah-v5", seed=0)
    env.reset()
    assert set(env_state(env)) == {"physics", "elapsed_steps", "np_random"}
    assert env_state(make_env("Pendulum-v1", seed=0)) is None


def test_bad_inputs_raise_configuration_errors():
    cases = [
        (lambda: make_task_pools("hyperrl/HalfCheetahVell-v0", 0), "did you mean 'hyperrl/HalfCheetahVel-v0'"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, split="hard"), "split='hard'"),
        (lambda: make_task_pools("hyperrl/Navigation2D-v0", 0, split="medium"), "split='medium'"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_train=0), "n_train_tasks=0"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_test=-3), "n_test_tasks=-3"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, split="medium", n_ood=0), "n_ood_tasks=0"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_train=2.5), "n_train_tasks=2.5"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_ood=5), "no OOD tasks"),
        (lambda: make_task_pools("hyperrl/HalfCheetahVel-v0", 0, n_train=1), "degenerate context range"),
        (lambda: make_task_pools("hyperrl/AntDir-v0", 0, n_train=3), "fixed pool"),
        (lambda: make_task_pools("hyperrl/AntDir-v0", -1), "seed=-1"),
        (lambda: TaskPools("hyperrl/AntVel-v0", "default", 0, [{"velocity": 1.0}], [], [], [0.0], [3.0]),
         "test pool"),
        (lambda: TaskPools("hyperrl/AntVel-v0", "default", 0, [{"velocity": 1.0}, {"velocity": 2.0}],
                           [{"velocity": 2.0}], [], [0.0], [3.0]), "overlaps the train pool"),
        (lambda: TaskPools("hyperrl/AntVel-v0", "default", 0, [{"velocity": 1.0}], [{"velocity": 2.0}], [],
                           [1.0], [1.0]), "high > low"),
        (lambda: TaskPools.from_state_dict({"train": []}), "expected the keys"),
        (lambda: check_context_dim("hyperrl/Navigation2D-v0", 1), "context_dim=1"),
        (lambda: check_context_dim("Pendulum-v1", 1), "unknown task family 'Pendulum-v1'"),
        (lambda: check_env_id("hyperrl/AntVel-v0"), "meta-RL task family"),
        (lambda: check_task_env_id("Pendulum-v1"), "has no task API (sample_tasks/set_task): MetaSAC needs"),
        (lambda: check_task_env_id("hyperrl/AntGol-v0"), "did you mean 'hyperrl/AntGoal-v0'"),
        (lambda: make_task_env("Pendulum-v1"), "no task API"),
        (lambda: make_task_env("hyperrl/AntVel-v0", context_bounds=3.0), "context_bounds=3.0"),
        (lambda: gym.make("hyperrl/AntDir-v0").unwrapped.set_task({"direction": 0.5}), "direction in [-1.0, 1.0]"),
        (lambda: gym.make("hyperrl/AntVel-v0").unwrapped.set_task({"goal": 0.5}), "{'velocity': a finite float}"),
        (lambda: gym.make("hyperrl/AntVel-v0").unwrapped.set_task({"velocity": float("nan")}), "finite"),
        (lambda: gym.make("hyperrl/AntGoal-v0").unwrapped.set_task({"goal": [1.0]}), "a list of 2 finite floats"),
        (lambda: gym.make("hyperrl/AntGoal-v0").unwrapped.set_context_bounds(1.0, -1.0), "high > low"),
        (lambda: gym.make("hyperrl/AntGoal-v0").unwrapped.set_context_bounds([0, 0, 0], 1.0), "expected a float or 2"),
        (lambda: gym.make("hyperrl/AntVel-v0").unwrapped.sample_tasks(0, 0), "n=0"),
        (lambda: gym.make("hyperrl/AntVel-v0").unwrapped.sample_tasks(3, "seed"), "rng='seed'"),
        (lambda: gym.make("hyperrl/AntVel-v0").unwrapped.sample_tasks(3, 0, distribution="hard"), "distribution='hard'"),
    ]
    for fn, match in cases:
        with pytest.raises(ConfigurationError) as info:
            fn()
        msg = str(info.value)
        assert match in msg and "\n" not in msg, (match, msg)
    # direction families allow train = test; a context_dim that matches passes
    TaskPools("hyperrl/AntDir-v0", "default", None, [{"direction": 1.0}], [{"direction": 1.0}], [], [-1.0], [1.0])
    assert check_context_dim("hyperrl/AntGoal-v0", 2) == 2


def test_rescaled_task_env_maps_unit_actions_onto_the_env_bounds():
    """``rescale_actions=True``: the agent acts in [-1, 1] (rlkit's NormalizedBoxEnv); navigation's step is ±0.1."""
    import torch
    from torchrl.envs.utils import check_env_specs

    from hyperrl.envs import env_state, load_env_state, make_task_env

    env = make_task_env("hyperrl/Navigation2D-v0", seed=0, rescale_actions=True)
    check_env_specs(env)
    assert env.action_spec.space.low.tolist() == [-1.0, -1.0] and env.action_spec.space.high.tolist() == [1.0, 1.0]
    td = env.reset()
    td["action"] = torch.tensor([1.0, -0.5])
    out = env.step(td)
    assert torch.allclose(out["next", "observation"], torch.tensor([0.1, -0.05]))
    state = env_state(env)  # the wrappers above the time limit do not hide the episode state
    assert state["elapsed_steps"] == 1
    assert load_env_state(env, state)
