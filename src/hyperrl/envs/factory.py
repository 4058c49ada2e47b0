"""Build TorchRL environments from gymnasium ids, with clear errors for ids that cannot work.

The transforms: ``DoubleToFloat`` (MuJoCo observations are float64) and ``RewardSum`` (writes the running
undiscounted return to ``("next", "episode_reward")``, read for ``train/episode_return``). Time limits come from
gymnasium's ``TimeLimit`` and arrive as ``("next", "truncated")``; only ``("next", "terminated")`` stops
bootstrapping.

Task families (meta-RL, :mod:`hyperrl.envs.tasks`) are built by :func:`make_task_env`: the task's oracle context
arrives as its own entry ``"context"`` / ``("next", "context")``, ``(context_dim,)`` float32, never concatenated to
the observation. :func:`check_env_id` (plain SAC/TD3) refuses them; :func:`check_task_env_id` requires them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
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


@dataclass(frozen=True)
class TaskEnvSpec(EnvSpec):
    """An :class:`EnvSpec` of a task family, plus the dimension of its oracle context."""

    context_dim: int


def _has_task_api(unwrapped) -> bool:
    return callable(getattr(unwrapped, "sample_tasks", None)) and callable(getattr(unwrapped, "set_task", None))


def _accepted_kwargs(env_id: str) -> set[str] | None:
    """The keyword arguments ``gymnasium.make(env_id, ...)`` passes on to the env's constructor: the named
    parameters of its ``__init__`` and of the base-class ``__init__`` its ``**kwargs`` go to, plus ``make``'s own.
    ``None`` when that cannot be told (a constructor that takes ``**kwargs`` and no base class to follow)."""
    import inspect

    from gymnasium.envs.registration import load_env_creator

    entry = gym.envs.registry[env_id].entry_point
    try:
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # noqa: BLE001 - missing dependencies are reported by gymnasium.make itself
        return None
    names = {"max_episode_steps", "disable_env_checker"}
    inits = [c.__dict__["__init__"] for c in creator.__mro__ if "__init__" in c.__dict__] if inspect.isclass(
        creator) else [creator]
    for init in inits:
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def check_env_kwargs(env_id: str, env_kwargs) -> dict:
    """``env_kwargs`` as a plain dict of ``gymnasium.make`` keyword arguments for ``env_id`` (``None``: ``{}``);
    ConfigurationError naming a key the env does not take."""
    if env_kwargs is None:
        return {}
    if not isinstance(env_kwargs, Mapping) or not all(isinstance(k, str) for k in env_kwargs):
        raise ConfigurationError(
            f"env_kwargs={env_kwargs!r} is not allowed: expected a mapping of gymnasium.make keyword arguments, "
            'e.g. {"ctrl_cost_weight": 0}'
        )
    accepted = _accepted_kwargs(env_id)
    unknown = [k for k in env_kwargs if accepted is not None and k not in accepted]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(accepted), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigurationError(
            f"env_kwargs key {unknown[0]!r} is not accepted by {env_id!r}{hint} (it takes: {', '.join(sorted(accepted))})"
        )
    return dict(env_kwargs)


def _inspect(env_id: str, allowed: str, env_kwargs=None) -> tuple[EnvSpec, int | None]:
    """Validate ``env_id`` as :func:`check_env_id` documents; also the context_dim of a task env (else None)."""
    if not isinstance(env_id, str) or env_id not in gym.envs.registry:
        close = difflib.get_close_matches(str(env_id), list(gym.envs.registry), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigurationError(
            f"unknown environment id {env_id!r}: it is not registered with gymnasium{hint} ({allowed})"
        )
    kwargs = check_env_kwargs(env_id, env_kwargs)
    try:
        env = gym.make(env_id, **kwargs)
    except Exception as exc:  # a registered id whose dependencies are missing, or a kwarg value it refuses
        with_kwargs = f" with env_kwargs {kwargs}" if kwargs else ""
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigurationError(f"environment {env_id!r} cannot be created{with_kwargs}: {first}") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
        unwrapped = env.unwrapped
        context_dim = int(unwrapped.context_dim) if _has_task_api(unwrapped) else None
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
    spec = EnvSpec(env_id, int(obs_space.shape[0]), int(act_space.shape[0]), tuple(low.tolist()), tuple(high.tolist()))
    return spec, context_dim


def _task_ids_text() -> str:
    from hyperrl.envs.tasks import TASK_ENV_IDS

    return ", ".join(repr(i) for i in TASK_ENV_IDS)


def check_env_id(env_id: str, env_kwargs: Mapping | None = None) -> EnvSpec:
    """Validate ``env_id`` (registered, flat continuous observations, bounded continuous actions, no task API) and
    describe it, as ``gymnasium.make(env_id, **env_kwargs)`` builds it (``env_kwargs``: keyword arguments of the
    env's constructor, e.g. ``{"ctrl_cost_weight": 0}`` for the authors' ``MyAnt-v0`` from ``Ant-v5``; a key the
    env does not take is refused). A meta-RL task family is refused: plain SAC/TD3 would silently ignore its task
    context."""
    spec, context_dim = _inspect(
        env_id, "continuous-control ids such as 'HalfCheetah-v5', 'InvertedPendulum-v5', 'Pendulum-v1' are allowed",
        env_kwargs,
    )
    if context_dim is not None:
        raise ConfigurationError(
            f"environment {env_id!r} is a meta-RL task family (context_dim={context_dim}): plain SAC/TD3 would ignore "
            "its task context; use a meta-RL algorithm (MetaSAC) with it, or a plain id such as 'HalfCheetah-v5'"
        )
    return spec


def check_task_env_id(env_id: str) -> TaskEnvSpec:
    """Validate ``env_id`` as a task family (:func:`check_env_id`'s checks plus the task API) and describe it."""
    spec, context_dim = _inspect(env_id, f"task families: {_task_ids_text()}")
    if context_dim is None:
        raise ConfigurationError(
            f"env {env_id!r} has no task API (sample_tasks/set_task): MetaSAC needs a task family such as "
            f"{_task_ids_text()}"
        )
    return TaskEnvSpec(**vars(spec), context_dim=context_dim)


def make_env(env_id: str, seed: int | None = None, device: str | torch.device = "cpu",
             env_kwargs: Mapping | None = None):
    """A seeded TorchRL ``TransformedEnv(GymEnv(env_id, **env_kwargs), DoubleToFloat + RewardSum)``;
    ``env_kwargs`` as :func:`check_env_id` takes them."""
    from torchrl.envs import Compose, DoubleToFloat, GymEnv, RewardSum, TransformedEnv

    check_env_id(env_id, env_kwargs)
    kwargs = dict(env_kwargs or {})
    env = TransformedEnv(GymEnv(env_id, device=device, **kwargs), Compose(DoubleToFloat(), RewardSum()))
    if seed is not None:
        env.set_seed(int(seed))
    return env


def make_task_env(
    env_id: str,
    seed: int | None = None,
    context_bounds=None,
    device: str | torch.device = "cpu",
    task: dict | None = None,
    rescale_actions: bool = False,
    num_envs: int | None = None,
    **env_kwargs,
):
    """A seeded TorchRL ``TransformedEnv(GymEnv(env_id), DoubleToFloat + RewardSum)`` of a task family, with the
    context read from ``info["context"]`` into the entry ``"context"`` (``(context_dim,)`` float32).

    ``num_envs``: a batched env instead, ``R = num_envs`` rows, one task env each (a gymnasium ``SyncVectorEnv``
    without auto-reset, stepped in-process, under one TorchRL ``GymWrapper`` of batch size ``[R]``): one TorchRL
    step serves every row, so stepping ``R`` tasks side by side costs little more than stepping one. Each row has its
    own task (:func:`task_envs` lists the rows' task envs); ``env.rollout(..., break_when_any_done=False)`` resets a
    row whose episode ended and goes on. Row ``r`` is seeded with ``seed + r``.

    ``context_bounds``: ``(low, high)`` in task units or a :class:`~hyperrl.envs.tasks.TaskPools` (its train-pool
    bounds); default: the family's nominal train range. ``task``: the initial task (default: the family's).
    ``env_kwargs`` go to ``gymnasium.make`` (e.g. ``sparse=True`` for navigation). ``rescale_actions``: the env takes
    actions in ``[-1, 1]`` and maps them linearly onto its own bounds (gymnasium's ``RescaleAction``). Change the task later with
    ``unwrap_task_env(env).set_task(task)`` and reset: the ``"context"`` entry of the reset follows the new task.
    """
    from torchrl.envs import GymEnv

    spec = check_task_env_id(env_id)
    env_kwargs = check_env_kwargs(env_id, env_kwargs)
    if num_envs is not None:
        return _make_batched_task_env(env_id, spec, num_envs, seed, context_bounds, device, task, rescale_actions,
                                      env_kwargs)
    if rescale_actions:
        # the networks act in [-1, 1] and the env sees its own bounds (rlkit's NormalizedBoxEnv, which PEARL wraps
        # every env in): a critic on navigation's ±0.1 actions would otherwise see a tenth of their range
        from torchrl.envs import GymWrapper

        base = GymWrapper(_rescaled(gym.make(env_id, **env_kwargs)), device=device)
    else:
        base = GymEnv(env_id, device=device, **env_kwargs)
    unwrapped = base._env.unwrapped
    if context_bounds is not None:
        unwrapped.set_context_bounds(*_context_bounds(context_bounds))
    if task is not None:
        unwrapped.set_task(task)
    return _finish_task_env(base, (spec.context_dim,), device, seed)


def _rescaled(made):
    """``made`` taking actions in ``[-1, 1]`` (float32 bounds: no precision warning)."""
    import numpy as np

    unit = np.ones(made.action_space.shape, dtype=made.action_space.dtype)
    return gym.wrappers.RescaleAction(made, -unit, unit)


def _finish_task_env(base, context_shape: tuple[int, ...], device, seed):
    """The context entry read from ``info``, the transforms and the seed, on a TorchRL gym env of a task family."""
    from torchrl.data import Unbounded
    from torchrl.envs import Compose, DoubleToFloat, RewardSum, TransformedEnv, default_info_dict_reader

    context_spec = Unbounded(shape=context_shape, dtype=torch.float32, device=device)
    base.set_info_dict_reader(default_info_dict_reader(["context"], spec=[context_spec]))
    env = TransformedEnv(base, Compose(DoubleToFloat(), RewardSum()))
    if seed is not None:
        env.set_seed(int(seed))
    return env


def _context_bounds(context_bounds):
    if hasattr(context_bounds, "context_bounds"):
        context_bounds = context_bounds.context_bounds
    try:
        low, high = context_bounds
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"context_bounds={context_bounds!r} is not allowed: expected (low, high) or TaskPools"
        ) from None
    return low, high


def _make_batched_task_env(env_id, spec, num_envs, seed, context_bounds, device, task, rescale_actions, env_kwargs):
    from torchrl.envs import GymWrapper

    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigurationError(f"num_envs={num_envs!r} is not allowed: a positive integer (the rows) is required")
    bounds = _context_bounds(context_bounds) if context_bounds is not None else None

    def make():
        made = gym.make(env_id, **env_kwargs)
        if bounds is not None:
            made.unwrapped.set_context_bounds(*bounds)
        if task is not None:
            made.unwrapped.set_task(task)
        return _rescaled(made) if rescale_actions else made

    vec = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    return _finish_task_env(GymWrapper(vec, device=device), (num_envs, spec.context_dim), device, seed)


def _sub_envs(env) -> list:
    """The gymnasium envs of a TorchRL task env: its rows for a batched one, else the one env."""
    gym_env = _gym_env(env) if not isinstance(env, gym.Env) else env
    return list(gym_env.envs) if isinstance(gym_env, gym.vector.VectorEnv) else [gym_env]


def task_envs(env) -> list:
    """The task envs (task API: ``set_task``, ...) of a TorchRL task env, one per row (one for an env built without
    ``num_envs``)."""
    envs = [getattr(sub, "unwrapped", None) for sub in _sub_envs(env)]
    if not all(_has_task_api(u) for u in envs):
        raise ConfigurationError(f"env {env!r} has no task API (sample_tasks/set_task)")
    return envs


def env_rows(env) -> int:
    """The rows of a batched TorchRL env (:func:`make_task_env` ``num_envs``); 1 for an unbatched one."""
    return int(env.batch_size[0]) if len(env.batch_size) else 1


def episode_horizon(env, default: int = 1000) -> int:
    """The time limit of a TorchRL-wrapped gymnasium env (of its first row when batched), else ``default``."""
    limit = _time_limit(_sub_envs(env)[0])
    return int(limit._max_episode_steps) if limit is not None else default


def unwrap_task_env(env):
    """The gymnasium env with the task API inside a TorchRL task env (or a gymnasium one)."""
    gym_env = _gym_env(env) if not isinstance(env, gym.Env) else env
    unwrapped = getattr(gym_env, "unwrapped", None)
    if not _has_task_api(unwrapped):
        raise ConfigurationError(f"env {env!r} has no task API (sample_tasks/set_task)")
    return unwrapped


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
    """The simulator state of a TorchRL-wrapped gymnasium env mid-episode, as plain tensors/ints/lists: the full
    MuJoCo physics state (``"physics"``), or a non-MuJoCo task env's own state (``"sim"``, e.g. the navigation
    point), the time-limit counter and the env's RNG; for a task env also ``"task_state"`` (task and context
    bounds). ``None`` for other simulators (their episode then restarts on resume). A batched env
    (:func:`make_task_env` ``num_envs``) gives ``{"rows": [the state of each row]}``."""
    gym_env = _gym_env(env)
    if isinstance(gym_env, gym.vector.VectorEnv):
        rows = [_gym_state(sub) for sub in gym_env.envs]
        return None if any(r is None for r in rows) else {"rows": rows}
    return _gym_state(gym_env)


def _gym_state(gym_env) -> dict | None:
    unwrapped = getattr(gym_env, "unwrapped", None)
    if unwrapped is None:
        return None
    limit = _time_limit(gym_env)
    if hasattr(unwrapped, "model") and hasattr(unwrapped, "data"):
        import mujoco
        import numpy as np

        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        physics = np.empty(mujoco.mj_stateSize(unwrapped.model, spec), dtype=np.float64)
        mujoco.mj_getState(unwrapped.model, unwrapped.data, physics, spec)
        state = {"physics": torch.from_numpy(physics)}
    elif callable(getattr(unwrapped, "get_sim_state", None)):
        state = {"sim": unwrapped.get_sim_state()}
    else:
        return None
    state["elapsed_steps"] = None if limit is None else limit._elapsed_steps
    state["np_random"] = unwrapped.np_random.bit_generator.state
    if _has_task_api(unwrapped):
        state["task_state"] = unwrapped.get_task_state()
    return state


def load_env_state(env, state: dict | None) -> bool:
    """Restore what :func:`env_state` captured; returns False when there is nothing to restore."""
    if state is None:
        return False
    gym_env = _gym_env(env)
    if isinstance(gym_env, gym.vector.VectorEnv):
        if "rows" not in state or len(state["rows"]) != len(gym_env.envs):
            raise ValueError("the saved env state does not match this env's rows")
        for sub, saved in zip(gym_env.envs, state["rows"], strict=True):
            _load_gym_state(sub, saved)
        return True
    if "rows" in state:
        raise ValueError("the saved env state is a batched env's; this env is not batched")
    _load_gym_state(gym_env, state)
    return True


def _load_gym_state(gym_env, state: dict) -> None:
    unwrapped = gym_env.unwrapped
    if "physics" in state:
        import mujoco

        mujoco.mj_setState(
            unwrapped.model, unwrapped.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_FULLPHYSICS
        )
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
    else:
        unwrapped.set_sim_state(state["sim"])
    limit = _time_limit(gym_env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    unwrapped.np_random.bit_generator.state = state["np_random"]
    if "task_state" in state:
        unwrapped.set_task_state(state["task_state"])
