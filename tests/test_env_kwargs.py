"""``env_kwargs``: gymnasium.make keyword arguments through check_env_id / make_env (the authors' MyAnt-v0 is
``Ant-v5`` with ``{"ctrl_cost_weight": 0}``), validated before any env is built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperrl.envs import check_env_id, check_env_kwargs, make_env, make_task_env
from hyperrl.errors import ConfigurationError


def test_make_env_passes_env_kwargs_to_gymnasium():
    env = make_env("Ant-v5", seed=0, env_kwargs={"ctrl_cost_weight": 0})
    td = env.reset()
    td["action"] = torch.ones(8)
    info_free = env.base_env._env.unwrapped
    assert info_free._ctrl_cost_weight == 0
    charged = make_env("Ant-v5", seed=0)
    assert charged.base_env._env.unwrapped._ctrl_cost_weight == 0.5
    # same state, same action: the reward differs by exactly the control cost 0.5 * ||1||^2 = 4
    r_free = env.step(td)["next", "reward"].item()
    td2 = charged.reset()
    td2["action"] = torch.ones(8)
    r_charged = charged.step(td2)["next", "reward"].item()
    assert r_free - r_charged == pytest.approx(4.0, abs=1e-4)


def test_env_kwargs_change_the_described_spec():
    assert check_env_id("Ant-v5").observation_dim == 105
    assert check_env_id("Ant-v5", {"include_cfrc_ext_in_observation": False}).observation_dim == 27
    assert check_env_id("Ant-v5", None) == check_env_id("Ant-v5", {})


@pytest.mark.parametrize(
    "env_id,kwargs,match",
    [
        ("Ant-v5", {"ctrl_cost": 0}, "env_kwargs key 'ctrl_cost' is not accepted by 'Ant-v5'; did you mean 'ctrl_cost_weight'"),
        ("Pendulum-v1", {"gravity": 9.8}, "env_kwargs key 'gravity' is not accepted by 'Pendulum-v1'"),
        ("Ant-v5", [("ctrl_cost_weight", 0)], "env_kwargs=[('ctrl_cost_weight', 0)] is not allowed: expected a mapping"),
        ("Ant-v5", "ctrl_cost_weight=0", "expected a mapping"),
        ("Ant-v5", {"xml_file": "/no/such/ant.xml"}, "cannot be created with env_kwargs"),
    ],
)
def test_bad_env_kwargs_are_one_line_configuration_errors(env_id, kwargs, match):
    with pytest.raises(ConfigurationError) as info:
        check_env_id(env_id, kwargs)
    assert match in str(info.value) and "\n" not in str(info.value)


def test_task_envs_validate_their_kwargs_too():
    with pytest.raises(ConfigurationError, match="'sparce' is not accepted by 'hyperrl/Navigation2D-v0'; did you mean 'sparse'"):
        make_task_env("hyperrl/Navigation2D-v0", sparce=True)
    assert check_env_kwargs("hyperrl/PearlAntGoal-v0", {"survive_bonus": 0.0}) == {"survive_bonus": 0.0}
    env = make_task_env("hyperrl/Navigation2D-v0", seed=0, sparse=True)
    assert np.isfinite(env.rollout(2)["next", "reward"].numpy()).all()
