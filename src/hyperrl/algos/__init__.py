"""One LightningModule per algorithm."""

from hyperrl.algos.actor_critic import OffPolicyAlgorithm
from hyperrl.algos.base import Algorithm
from hyperrl.algos.maml import MAML, ContextMAML
from hyperrl.algos.meta_sac import ContextSAC, MetaSAC
from hyperrl.algos.pearl import PEARL
from hyperrl.algos.sac import SAC
from hyperrl.algos.settings import (
    Adaptation,
    ContextEvaluation,
    ContextSACOptim,
    Evaluation,
    MAMLEvaluation,
    MAMLOptim,
    MetaSACEvaluation,
    MetaSACReplay,
    MultiTaskReplay,
    OffPolicyOptim,
    PEARLEvaluation,
    PEARLReplay,
    Replay,
    Sampling,
    Settings,
    Tasks,
)
from hyperrl.algos.td3 import TD3

__all__ = [
    "MAML", "PEARL", "SAC", "TD3", "Algorithm", "ContextMAML", "ContextSAC", "MetaSAC", "OffPolicyAlgorithm",
    # settings groups
    "Adaptation", "ContextEvaluation", "ContextSACOptim", "Evaluation", "MAMLEvaluation", "MAMLOptim",
    "MetaSACEvaluation", "MetaSACReplay", "MultiTaskReplay", "OffPolicyOptim", "PEARLEvaluation", "PEARLReplay",
    "Replay", "Sampling", "Settings", "Tasks",
]
