"""Data sources that feed the LightningModules: collectors, replay buffers, episodic samplers.

Every source follows :class:`DataSource`, so :class:`~hyperrl.algos.Algorithm` can checkpoint and restore it
without knowing what it holds.
"""

from hyperrl.data.offpolicy import (
    TRANSITION_KEYS,
    OffPolicyData,
    TrainingSteps,
    buffer_state,
    episode_state,
    load_buffer_state,
    load_episode_state,
    training_steps_loader,
)
from hyperrl.data.multitask import MultiTaskData
from hyperrl.data.onpolicy import OnPolicyData
from hyperrl.data.pearl import PEARLData
from hyperrl.data.source import DataSource

__all__ = [
    "TRANSITION_KEYS",
    "DataSource",
    "MultiTaskData",
    "OffPolicyData",
    "OnPolicyData",
    "PEARLData",
    "TrainingSteps",
    "buffer_state",
    "episode_state",
    "load_buffer_state",
    "load_episode_state",
    "training_steps_loader",
]
