"""Soft Actor-Critic (Haarnoja et al. 2018) with a pluggable critic: the paper's SAC (``hyperrl-paper.md`` §3.2).

One update on a batch ``(s, a, r, s', terminated)``::

    a', log π(a'|s') ~ π(·|s')
    y      = r + γ (1 − terminated) (min_i Q̄_i(s', a') − α log π(a'|s'))              (no gradient)
    L_Q    = Σ_i mean (Q_i(s, a) − y)²
    ã, log π(ã|s) ~ π(·|s)
    L_π    = mean (α log π(ã|s) − min_i Q_i(s, ã))                  (critic frozen, α detached)
    L_α    = −mean (log α · (log π(ã|s) + H̄))                       (H̄ = −|A| by default)
    θ̄_i ← (1 − τ) θ̄_i + τ θ_i

The state-only part of each critic (for SA-Hyper: the primary network and the weight heads) runs once on ``s``
and serves both ``L_Q`` and ``L_π``; ``L_π`` sees it detached. All three terms come from the same parameters and
are minimised by one Adam step (param groups with their own learning rates), as TorchRL's SAC does.
"""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat
from tensordict import TensorDictBase
from torch import Tensor, nn

from hyperrl.algos.actor_critic import OffPolicyAlgorithm
from hyperrl.algos.arguments import check_arguments
from hyperrl.algos.base import detach_condition, frozen, polyak_update
from hyperrl.nn import TanhGaussianPolicy, policy_module


class SAC(OffPolicyAlgorithm):
    """SAC with twin critics, Polyak targets and automatic entropy tuning (or a fixed ``alpha``).

    Args (beyond those of :class:`~hyperrl.algos.actor_critic.OffPolicyAlgorithm`, forwarded as ``kwargs``):
        alpha: fixed temperature; ``None`` (default) tunes it automatically, starting at ``initial_alpha``.
        initial_alpha: starting temperature when tuning (``log α = 0`` in the authors' code).
        alpha_lr: Adam learning rate of ``log α``.
        target_entropy: ``None`` means ``−|A|``.
    """

    def __init__(
        self,
        alpha: NonNegativeFloat | None = None,
        initial_alpha: PositiveFloat = 1.0,
        alpha_lr: PositiveFloat = 3e-4,
        target_entropy: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_arguments(SAC.__init__, locals())
        self.autotune = alpha is None
        start = initial_alpha if self.autotune else max(float(alpha), 1e-30)
        log_alpha = torch.tensor(float(start)).log()
        if self.autotune:
            self.log_alpha = nn.Parameter(log_alpha)
        else:
            self.register_buffer("log_alpha", log_alpha)
        self.target_entropy = float(-self.env_spec.action_dim if target_entropy is None else target_entropy)
        # a fixed α as a device tensor (not rebuilt from a Python float in every update: a CUDA graph cannot)
        self.register_buffer("fixed_alpha", None if self.autotune else torch.tensor(float(alpha)), persistent=False)

    def build_actor(self, observation_dim, action_dim, low, high) -> TanhGaussianPolicy:
        return TanhGaussianPolicy(observation_dim, action_dim, low, high, hidden=self.hparams.actor_hidden)

    def acting_policy(self):
        return policy_module(self.actor)

    def param_groups(self) -> list[dict]:
        groups = super().param_groups()
        if self.autotune:
            groups.append({"params": [self.log_alpha], "lr": self.hparams.alpha_lr, "name": "alpha"})
        return groups

    @property
    def alpha(self) -> Tensor:
        if self.fixed_alpha is not None:
            return self.fixed_alpha
        return self.log_alpha.detach().float().exp()

    # --------------------------------------------------------------------------------------- the math
    def critic_target(self, batch: TensorDictBase) -> Tensor:
        """``y = r + γ (1 − terminated)(min_i Q̄_i(s', a') − α log π(a'|s'))``, fp32, shape ``(B, 1)``."""
        with torch.no_grad():
            next_obs = batch.get(("next", "observation"))
            next_action, next_log_prob = self.actor.sample(next_obs)
            next_q = self.target_critics(next_obs, next_action).float().amin(0)
            not_terminated = 1.0 - batch.get(("next", "terminated")).float()
            reward = batch.get(("next", "reward")).float()
            return reward + self.optim.gamma * not_terminated * (next_q - self.alpha * next_log_prob)

    def losses(self, batch: TensorDictBase, update: int) -> dict[str, Tensor]:
        obs = batch.get("observation")
        critic_loss, condition = self.twin_critic_loss(batch, self.critic_target(batch))
        new_action, log_prob = self.actor.sample(obs)
        with frozen(self.critics):
            q_new = self.critics.evaluate(detach_condition(condition), new_action).float().amin(0)
        actor_loss = (self.alpha * log_prob - q_new).mean()
        losses = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha": self.alpha}
        loss = critic_loss + actor_loss
        if self.autotune:
            alpha_loss = -(self.log_alpha.float() * (log_prob.detach() + self.target_entropy)).mean()
            losses["alpha_loss"] = alpha_loss
            loss = loss + alpha_loss
        losses["loss"] = loss
        return losses

    def after_update(self, update: int) -> None:
        polyak_update(self.target_critics, self.critics, self.optim.tau)
