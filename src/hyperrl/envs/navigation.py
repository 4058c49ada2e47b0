"""2-D point-mass navigation (the authors' ``2DNavigation`` / PEARL's point robot), a task family over goals.

State ``p`` (2,), starting at the origin; action ``a`` clipped to ``[-0.1, 0.1]^2``; ``p' = p + clip(a)``;
observation ``p'`` (float32). With ``d = ||p' - goal||_2``:

* dense reward ``-d``;
* ``sparse=True`` (PEARL's sparse point robot, hyperrl-paper.md §5.3): ``1 - d`` inside ``d <= goal_radius`` (0.2),
  0 outside;
* terminated when ``d < 0.01`` (the authors test ``|dx| < 0.01 and |dy| < 0.01``, a square; we use the disc that
  "within 0.01 of the goal" says). Horizon 100 steps (``TimeLimit``, registered).

Goals: the upper half of the unit circle, angle ``U[0, pi]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

from hyperrl.envs.tasks import NAVIGATION_GOAL, TaskEnvMixin


class Navigation2DEnv(TaskEnvMixin, gym.Env):
    """``hyperrl/Navigation2D-v0`` (``sparse=False``) and ``hyperrl/SparseNavigation2D-v0`` (``sparse=True``)."""

    metadata = {"render_modes": []}
    task_family = NAVIGATION_GOAL
    max_action = 0.1
    success_radius = 0.01

    def __init__(self, task=None, sparse: bool = False, goal_radius: float = 0.2, render_mode=None):
        self.sparse = bool(sparse)
        self.goal_radius = float(goal_radius)
        self.render_mode = render_mode
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32)
        self.action_space = Box(low=-self.max_action, high=self.max_action, shape=(2,), dtype=np.float32)
        self._position = np.zeros(2, dtype=np.float64)
        self._init_task(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._position = np.zeros(2, dtype=np.float64)
        return self._position.astype(np.float32), {"context": self.context()}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -self.max_action, self.max_action)
        self._position = self._position + action
        distance = float(np.linalg.norm(self._position - self._task_value))
        dense = -distance
        if self.sparse:
            reward = 1.0 - distance if distance <= self.goal_radius else 0.0
        else:
            reward = dense
        terminated = distance < self.success_radius
        info = {"distance": distance, "dense_reward": dense, "context": self.context()}
        return self._position.astype(np.float32), reward, terminated, False, info

    def get_sim_state(self) -> dict:
        """The point's position as plain floats (the rest of an episode's state: TimeLimit counter, RNG)."""
        return {"position": [float(v) for v in self._position]}

    def set_sim_state(self, state) -> None:
        self._position = np.asarray(state["position"], dtype=np.float64).reshape(2).copy()
