"""MuJoCo meta-RL task families on gymnasium's v5 HalfCheetah and Ant, with the authors' (MAML) observations and rewards.

Observations (as the authors' MAML envs, so the parameter counts of hyperrl-paper.md §5.1 hold):

* HalfCheetah tasks: ``qpos[1:]`` (8) + ``qvel`` (9) + torso centre (``data.body("torso").xpos``, 3) = 20 dims;
* Ant tasks: ``qpos[2:]`` (13) + ``qvel`` (14) = 27 dims (no contact forces), 8 actions.

Velocities are the simulator's own finite differences, as both the authors and gymnasium compute them:
HalfCheetah ``v_x = (qpos[0]' - qpos[0]) / dt``; Ant ``v_xy = (xy' - xy) / dt`` of the torso body position
(``data.body(1).xpos[:2]``, the authors' ``get_body_com("torso")``). ``dt = 0.05`` (frame skip 5).

Rewards, computed in float64 and returned as Python floats (``a`` the action as given; ``f`` = contact forces ``clip(data.cfrc_ext, -1, 1)``):

* HalfCheetahVel: ``-|v_x - v_goal| - 0.05 ||a||^2``; HalfCheetahDir: ``dir * v_x - 0.05 ||a||^2``; never terminate;
* AntVel: ``-|v_x - v_goal| + 1.0 + 0.05 - 0.005 ||a||^2 - 5e-4 ||f||^2``;
* AntDir: ``dir * v_x + 0.05 - costs`` (forward/backward), or with ``direction_as_angle=True`` the authors'
  ``v_xy . (cos dir, sin dir) + 0.05 - costs`` (``dir = +-1`` read as an angle in radians);
* AntGoal (MAML's AntPos): ``-||xy - goal||_1 + 4.0 + 0.05 - costs``.

The Ant constants are the MAML envs' (pytorch-maml-rl ``AntVelEnv``/``AntDirEnv``/``AntPosEnv``; the action scale
``(high - low) / 2`` is 1 for the v5 Ant); the survive bonus is paid on every step, as theirs. Ant episodes
terminate when the torso leaves ``z in [0.2, 1.0]`` or the state is not finite (MAML/PEARL and gymnasium alike).

PearlAntGoal (``hyperrl/PearlAntGoal-v0``) is PEARL's ``ant_goal.py`` as the authors ship it
(``PEARL/torch/envs/mojoco/ant_goal.py``), a family of its own: ``-||xy - goal||_1 + 0.05 - costs`` (no +4), never
terminates, goals uniform in the disc of radius 3, and the observation PEARL's: ``qpos`` (15, the x-y position
included) + ``qvel`` (14) + ``clip(cfrc_ext, -1, 1)`` of all 14 bodies (84) = 113 dims. The costs are the authors'
(``0.005 ||a||^2``, ``5e-4 ||f||^2``, survive 0.05); PEARL's original (oyster) charges ``0.1 ||a||^2`` and pays no
survive bonus, reachable with ``ctrl_cost_weight=0.1`` and ``survive_bonus=0.0``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.spaces import Box

from hyperrl.envs.tasks import ANT_GOAL, DIRECTION, PEARL_ANT_GOAL, VELOCITY, TaskEnvMixin


class HalfCheetahTaskEnv(TaskEnvMixin, HalfCheetahEnv):
    """HalfCheetah with a task reward ``task_reward(v_x) - ctrl_cost_weight ||a||^2`` and the 20-dim observation."""

    def __init__(self, task=None, ctrl_cost_weight: float = 0.05, **kwargs):
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        utils.EzPickle.__init__(self, task=task, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        n = self.data.qpos.size - 1 + self.data.qvel.size + 3
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(n,), dtype=np.float64)
        self.observation_structure = {"skipped_qpos": 1, "qpos": self.data.qpos.size - 1,
                                      "qvel": self.data.qvel.size, "torso_com": 3}
        self._init_task(task)

    def _get_obs(self):
        return np.concatenate((self.data.qpos[1:], self.data.qvel, self.get_body_com("torso"))).ravel()

    def _task_reward(self, x_velocity: float) -> float:
        raise NotImplementedError

    def step(self, action):
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)
        x_after = self.data.qpos[0]
        x_velocity = (x_after - x_before) / self.dt
        task_reward = self._task_reward(x_velocity)
        ctrl_cost = self.control_cost(np.asarray(action, dtype=np.float64))
        reward = float(task_reward - ctrl_cost)
        info = {"x_position": x_after, "x_velocity": x_velocity, "reward_task": task_reward,
                "reward_ctrl": -ctrl_cost, "context": self.context()}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, info

    def _get_reset_info(self):
        return {"x_position": self.data.qpos[0], "context": self.context()}


class HalfCheetahVelEnv(HalfCheetahTaskEnv):
    """``hyperrl/HalfCheetahVel-v0``: run at the goal velocity, task ``{"velocity": v}``."""

    task_family = VELOCITY

    def _task_reward(self, x_velocity):
        return -abs(x_velocity - self._task_value[0])


class HalfCheetahDirEnv(HalfCheetahTaskEnv):
    """``hyperrl/HalfCheetahDir-v0``: run forward (+1) or backward (-1), task ``{"direction": d}``."""

    task_family = DIRECTION

    def _task_reward(self, x_velocity):
        return self._task_value[0] * x_velocity


class AntTaskEnv(TaskEnvMixin, AntEnv):
    """Ant with ``task_reward + survive_bonus - 0.005 ||a||^2 - 5e-4 ||f||^2`` and the 27-dim observation."""

    survive_bonus: float = 0.05

    def __init__(self, task=None, ctrl_cost_weight: float = 0.005, contact_cost_weight: float = 5e-4,
                 terminate_when_unhealthy: bool = True, **kwargs):
        AntEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, contact_cost_weight=contact_cost_weight,
                        terminate_when_unhealthy=terminate_when_unhealthy, include_cfrc_ext_in_observation=False,
                        **kwargs)
        utils.EzPickle.__init__(self, task=task, ctrl_cost_weight=ctrl_cost_weight,
                                contact_cost_weight=contact_cost_weight,
                                terminate_when_unhealthy=terminate_when_unhealthy, **kwargs)
        self._init_task(task)

    def _task_reward(self, xy_position, xy_velocity) -> float:
        raise NotImplementedError

    def step(self, action):
        xy_before = self.data.body(self._main_body).xpos[:2].copy()
        self.do_simulation(action, self.frame_skip)
        xy_after = self.data.body(self._main_body).xpos[:2].copy()
        xy_velocity = (xy_after - xy_before) / self.dt
        task_reward = self._task_reward(xy_after, xy_velocity)
        ctrl_cost = self.control_cost(np.asarray(action, dtype=np.float64))
        contact_cost = self.contact_cost
        reward = float(task_reward + self.survive_bonus - ctrl_cost - contact_cost)
        terminated = bool((not self.is_healthy) and self._terminate_when_unhealthy)
        info = {"x_position": self.data.qpos[0], "y_position": self.data.qpos[1],
                "x_velocity": xy_velocity[0], "y_velocity": xy_velocity[1], "reward_task": task_reward,
                "reward_ctrl": -ctrl_cost, "reward_contact": -contact_cost, "reward_survive": self.survive_bonus,
                "context": self.context()}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, info

    def _get_reset_info(self):
        return {"x_position": self.data.qpos[0], "y_position": self.data.qpos[1], "context": self.context()}


class AntVelEnv(AntTaskEnv):
    """``hyperrl/AntVel-v0``: walk forward at the goal velocity; ``-|v_x - v_goal| + 1`` (+ the 0.05 bonus)."""

    task_family = VELOCITY
    survive_bonus = 1.0 + 0.05

    def _task_reward(self, xy_position, xy_velocity):
        return -abs(xy_velocity[0] - self._task_value[0])


class AntDirEnv(AntTaskEnv):
    """``hyperrl/AntDir-v0``: walk forward (+1) / backward (-1); ``hyperrl/AntDirAngle-v0`` (``direction_as_angle``):
    walk along the angle ``dir`` radians, the authors' variant."""

    task_family = DIRECTION

    def __init__(self, task=None, direction_as_angle: bool = False, **kwargs):
        self.direction_as_angle = bool(direction_as_angle)
        super().__init__(task=task, **kwargs)
        utils.EzPickle.__init__(self, task=task, direction_as_angle=direction_as_angle, **kwargs)

    def _task_reward(self, xy_position, xy_velocity):
        d = self._task_value[0]
        if self.direction_as_angle:
            return float(xy_velocity[0] * np.cos(d) + xy_velocity[1] * np.sin(d))
        return d * xy_velocity[0]


class AntGoalEnv(AntTaskEnv):
    """``hyperrl/AntGoal-v0``: reach the goal position; ``-||xy - goal||_1 + 4`` (+ the 0.05 bonus)."""

    task_family = ANT_GOAL
    survive_bonus = 4.0 + 0.05

    def _task_reward(self, xy_position, xy_velocity):
        return -float(np.sum(np.abs(xy_position - self._task_value)))


class PearlAntGoalEnv(AntTaskEnv):
    """``hyperrl/PearlAntGoal-v0``: PEARL's ant-goal; ``-||xy - goal||_1 + 0.05 - costs``, never terminates,
    goals uniform in the disc of radius 3, contact forces in the 113-dim observation (module docstring)."""

    task_family = PEARL_ANT_GOAL

    def __init__(self, task=None, survive_bonus: float = 0.05, terminate_when_unhealthy: bool = False, **kwargs):
        self.survive_bonus = float(survive_bonus)
        super().__init__(task=task, terminate_when_unhealthy=terminate_when_unhealthy, **kwargs)
        utils.EzPickle.__init__(self, task=task, survive_bonus=survive_bonus,
                                terminate_when_unhealthy=terminate_when_unhealthy, **kwargs)
        n = self.data.qpos.size + self.data.qvel.size + self.data.cfrc_ext.size
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(n,), dtype=np.float64)
        self.observation_structure = {"qpos": self.data.qpos.size, "qvel": self.data.qvel.size,
                                      "cfrc_ext": self.data.cfrc_ext.size}

    def _get_obs(self):
        return np.concatenate((self.data.qpos, self.data.qvel, self.contact_forces.ravel())).ravel()

    def _task_reward(self, xy_position, xy_velocity):
        return -float(np.sum(np.abs(xy_position - self._task_value)))
