"""Thin TensorDictModule wrappers, so critics and policies plug into TorchRL (collectors, loss modules)."""

from __future__ import annotations

import torch
from tensordict.nn import InteractionType, TensorDictModule
from tensordict.nn.probabilistic import interaction_type
from torch import Tensor, nn

from hyperrl.nn.actors import DeterministicPolicy, TanhGaussianPolicy
from hyperrl.nn.critics import QNetwork

_DETERMINISTIC = (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN, InteractionType.MEDIAN)


class ActingPolicy(nn.Module):
    """``observation -> action`` for acting in an environment.

    Under a deterministic interaction type (``set_interaction_type`` / TorchRL's ``set_exploration_type``) it returns
    the policy's mode (evaluation); otherwise it explores: a tanh-Gaussian policy samples, a deterministic policy
    adds Gaussian noise of ``exploration_noise · r`` (``r`` the action radius) and clips to the bounds.
    """

    def __init__(self, policy: TanhGaussianPolicy | DeterministicPolicy, exploration_noise: float = 0.1) -> None:
        super().__init__()
        self.policy = policy
        self.exploration_noise = exploration_noise

    def forward(self, observation: Tensor) -> Tensor:
        # environments live on the CPU while the policy may sit on a GPU: act where the policy is, answer where
        # the observation came from (a no-op when both are on the same device)
        device = self.policy.action_centre.device
        return self._act(observation.to(device)).to(observation.device)

    def _act(self, observation: Tensor) -> Tensor:
        if interaction_type() in _DETERMINISTIC:
            return self.policy.mode(observation)
        if isinstance(self.policy, TanhGaussianPolicy):
            return self.policy.sample(observation)[0]
        action = self.policy(observation)
        noise = torch.randn_like(action) * (self.exploration_noise * self.policy.action_radius)
        return torch.max(torch.min(action + noise, self.policy.high), self.policy.low)


def critic_module(critic: QNetwork) -> TensorDictModule:
    """Wrap a critic as ``TensorDictModule(in_keys=["observation", "action"], out_keys=["state_action_value"])``."""
    return TensorDictModule(critic, in_keys=["observation", "action"], out_keys=["state_action_value"])


def policy_module(policy: TanhGaussianPolicy | DeterministicPolicy, exploration_noise: float = 0.1) -> TensorDictModule:
    """Wrap a policy as ``TensorDictModule(in_keys=["observation"], out_keys=["action"])`` for collectors."""
    return TensorDictModule(ActingPolicy(policy, exploration_noise), in_keys=["observation"], out_keys=["action"])
