"""One LightningModule per algorithm."""

from hyperrl.algos.base import Algorithm, OffPolicyAlgorithm
from hyperrl.algos.sac import SAC
from hyperrl.algos.td3 import TD3

__all__ = ["SAC", "TD3", "Algorithm", "OffPolicyAlgorithm"]
