"""Environment factories: gymnasium/MuJoCo tasks wrapped as TorchRL environments."""

from hyperrl.envs.factory import EnvSpec, check_env_id, make_env

__all__ = ["EnvSpec", "check_env_id", "make_env"]
