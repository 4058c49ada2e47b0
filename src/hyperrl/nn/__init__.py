"""Networks of the paper as plain ``nn.Module``s (no Lightning, no environments), plus TensorDict wrappers."""

from hyperrl.nn.actors import DeterministicPolicy, TanhGaussianPolicy
from hyperrl.nn.critics import (
    CRITICS,
    ASHyperCritic,
    D2RLCritic,
    DeepResNetCritic,
    MLPCritic,
    QNetwork,
    RandomHyperCritic,
    ResNetFeaturesCritic,
    SAHyperCritic,
    critic_options,
    make_critic,
)
from hyperrl.nn.ensemble import CriticEnsemble, EnsembleLinear
from hyperrl.nn.hyper import HyperNetwork, PrimaryNetwork, ResidualBlock, WeightHeads, dynamic_forward
from hyperrl.nn.modules import ActingPolicy, critic_module, policy_module

__all__ = [
    "CRITICS",
    "ASHyperCritic",
    "ActingPolicy",
    "CriticEnsemble",
    "D2RLCritic",
    "DeepResNetCritic",
    "DeterministicPolicy",
    "EnsembleLinear",
    "HyperNetwork",
    "MLPCritic",
    "PrimaryNetwork",
    "QNetwork",
    "RandomHyperCritic",
    "ResNetFeaturesCritic",
    "ResidualBlock",
    "SAHyperCritic",
    "TanhGaussianPolicy",
    "WeightHeads",
    "critic_module",
    "critic_options",
    "dynamic_forward",
    "make_critic",
    "policy_module",
]
