"""Environment factories: gymnasium/MuJoCo tasks wrapped as TorchRL environments, and meta-RL task families.

Importing this package registers the task families with gymnasium (``hyperrl/HalfCheetahVel-v0``, ...; see
:mod:`hyperrl.envs.tasks`).
"""

from hyperrl.envs.tasks import (
    TASK_ENV_IDS,
    TaskEnvMixin,
    TaskFamily,
    TaskPools,
    check_context_dim,
    make_task_pools,
    register_task_envs,
    task_family,
)

register_task_envs()

from hyperrl.envs.factory import (  # noqa: E402
    EnvSpec,
    TaskEnvSpec,
    check_env_id,
    check_env_kwargs,
    check_task_env_id,
    env_rows,
    env_state,
    episode_horizon,
    load_env_state,
    make_env,
    make_task_env,
    task_envs,
    unwrap_task_env,
)

__all__ = [
    "TASK_ENV_IDS",
    "EnvSpec",
    "TaskEnvMixin",
    "TaskEnvSpec",
    "TaskFamily",
    "TaskPools",
    "check_context_dim",
    "check_env_id",
    "check_env_kwargs",
    "check_task_env_id",
    "env_rows",
    "env_state",
    "episode_horizon",
    "load_env_state",
    "make_env",
    "make_task_env",
    "make_task_pools",
    "register_task_envs",
    "task_envs",
    "task_family",
    "unwrap_task_env",
]
