"""Environment factories: gymnasium/MuJoCo tasks wrapped as TorchRL environments."""

from hyperrl.envs.factory import EnvSpec, check_env_id, env_state, load_env_state, make_env

__all__ = ["EnvSpec", "check_env_id", "env_state", "load_env_state", "make_env"]
