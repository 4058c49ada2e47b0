"""Build TorchRL environments from gymnasium ids, with clear errors for ids that cannot work.

The transforms: ``DoubleToFloat`` (MuJoCo observations are float64) and ``RewardSum`` (writes the running
undiscounted return to ``("next", "episode_reward")``, read for ``train/episode_return``). Time limits come from
gymnasium's ``TimeLimit`` and arrive as ``("next", "truncated")``; only ``("next", "terminated")`` stops
bootstrapping.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import gymnasium as gym
import torch

from hyperrl.errors import ConfigurationError


@dataclass(frozen=True)
class EnvSpec:
    """What the networks need to know about an environment."""

    env_id: str
    observation_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]


def check_env_id(env_id: str) -> EnvSpec:
    """Validate ``env_id`` (registered, flat continuous observations, bounded continuous actions) and describe it."""
    if not isinstance(env_id, str) or env_id not in gym.envs.registry:
        close = difflib.get_close_matches(str(env_id), list(gym.envs.registry), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigurationError(
            f"unknown environment id {env_id!r}: it is not registered with gymnasium{hint} "
            "(continuous-control ids such as 'HalfCheetah-v5', 'InvertedPendulum-v5', 'Pendulum-v1' are allowed)"
        )
    try:
        env = gym.make(env_id)
    except Exception as exc:  # a registered id whose dependencies are missing
        raise ConfigurationError(f"environment {env_id!r} cannot be created: {exc}") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ConfigurationError(
            f"environment {env_id!r} has action space {act_space}: only continuous (Box, 1-D) action spaces are allowed"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigurationError(
            f"environment {env_id!r} has observation space {obs_space}: only flat Box observations are allowed"
        )
    low, high = act_space.low.astype(float), act_space.high.astype(float)
    if not (abs(low) < float("inf")).all() or not (abs(high) < float("inf")).all():
        raise ConfigurationError(f"environment {env_id!r} has unbounded actions: bounded actions are required")
    return EnvSpec(env_id, int(obs_space.shape[0]), int(act_space.shape[0]), tuple(low.tolist()), tuple(high.tolist()))


def make_env(env_id: str, seed: int | None = None, device: str | torch.device = "cpu"):
    """A seeded TorchRL ``TransformedEnv(GymEnv(env_id), DoubleToFloat + RewardSum)``."""
    from torchrl.envs import Compose, DoubleToFloat, GymEnv, RewardSum, TransformedEnv

    check_env_id(env_id)
    env = TransformedEnv(GymEnv(env_id, device=device), Compose(DoubleToFloat(), RewardSum()))
    if seed is not None:
        env.set_seed(int(seed))
    return env


def _gym_env(env):
    """The gymnasium env inside a TorchRL (Transformed)GymEnv."""
    base = getattr(env, "base_env", env)
    return getattr(base, "_env", None)


def _time_limit(gym_env):
    wrapper = gym_env
    while wrapper is not None:
        if hasattr(wrapper, "_elapsed_steps") and hasattr(wrapper, "_max_episode_steps"):
            return wrapper
        wrapper = getattr(wrapper, "env", None)
    return None


def env_state(env) -> dict | None:
    """The simulator state of a TorchRL-wrapped gymnasium MuJoCo env mid-episode: full MuJoCo physics state, the
    time-limit counter and the env's RNG, as plain tensors/ints. ``None`` for other simulators (their episode then
    restarts on resume)."""
    gym_env = _gym_env(env)
    unwrapped = getattr(gym_env, "unwrapped", None)
    if unwrapped is None or not hasattr(unwrapped, "model") or not hasattr(unwrapped, "data"):
        return None
    import mujoco
    import numpy as np

    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    physics = np.empty(mujoco.mj_stateSize(unwrapped.model, spec), dtype=np.float64)
    mujoco.mj_getState(unwrapped.model, unwrapped.data, physics, spec)
    limit = _time_limit(gym_env)
    return {
        "physics": torch.from_numpy(physics),
        "elapsed_steps": None if limit is None else limit._elapsed_steps,
        "np_random": unwrapped.np_random.bit_generator.state,
    }


def load_env_state(env, state: dict | None) -> bool:
    """Restore what :func:`env_state` captured; returns False when there is nothing to restore."""
    if state is None:
        return False
    import mujoco

    gym_env = _gym_env(env)
    unwrapped = gym_env.unwrapped
    mujoco.mj_setState(
        unwrapped.model, unwrapped.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_FULLPHYSICS
    )
    mujoco.mj_forward(unwrapped.model, unwrapped.data)
    limit = _time_limit(gym_env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    unwrapped.np_random.bit_generator.state = state["np_random"]
    return True
