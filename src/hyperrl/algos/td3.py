"""TD3 (Fujimoto et al. 2018) with a pluggable critic: the paper's TD3 (``hyperrl-paper.md`` §3.1).

One update on a batch ``(s, a, r, s', terminated)``, ``r_a`` the action radius (``max_action`` in the paper)::

    ε  = clip(N(0, (σ̃ r_a)²), ±c r_a)                                     σ̃ = 0.2, c = 0.5
    a' = clip(μ̄(s') + ε, low, high)
    y  = r + γ (1 − terminated) min_i Q̄_i(s', a')                                      (no gradient)
    L_Q = Σ_i mean (Q_i(s, a) − y)²
    every ``policy_delay``-th update:  L_μ = −mean Q_1(s, μ(s))  (critic frozen), then
        θ̄ ← (1 − τ) θ̄ + τ θ for the actor and both critics

The state-only part of ``Q_1`` runs once on ``s`` for both ``L_Q`` and ``L_μ``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from tensordict import TensorDictBase
from torch import Tensor

from hyperrl.algos.actor_critic import OffPolicyAlgorithm
from hyperrl.algos.base import detach_condition, frozen, polyak_update
from hyperrl.algos.arguments import check_arguments
from hyperrl.algos.settings import Replay
from hyperrl.errors import ConfigurationError
from hyperrl.nn import DeterministicPolicy, policy_module


#: the authors' TD3 replay: batches of 100, the first update after 1000 frames
TD3_REPLAY = Replay(batch_size=100, learning_starts=1000)


class TD3(OffPolicyAlgorithm):
    """TD3 with twin critics, target policy smoothing and delayed policy updates.

    Args (beyond those of :class:`~hyperrl.algos.actor_critic.OffPolicyAlgorithm`, forwarded as ``kwargs``; TD3's
    replay defaults differ in ``batch_size`` 100 and ``learning_starts`` 1000, as in the authors' TD3):
        policy_delay: actor and target updates happen every ``policy_delay`` critic updates.
        policy_noise, noise_clip: target smoothing noise std and clip, as fractions of the action radius.
        exploration_noise: std of the Gaussian exploration noise, as a fraction of the action radius.
    """

    def __init__(
        self,
        policy_delay: PositiveInt = 2,
        policy_noise: NonNegativeFloat = 0.2,
        noise_clip: NonNegativeFloat = 0.5,
        exploration_noise: NonNegativeFloat = 0.1,
        replay: Replay = TD3_REPLAY,
        **kwargs: Any,
    ) -> None:
        super().__init__(replay=Replay.of(replay, TD3_REPLAY), **kwargs)
        check_arguments(TD3.__init__, locals())
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)

    def on_fit_start(self) -> None:
        # the wrapped model exists only now; DDP's own flag says whether it tolerates parameters without a gradient
        from torch.nn.parallel import DistributedDataParallel

        model = self.trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ConfigurationError(
                "strategy 'ddp' is not allowed for TD3: its delayed actor updates leave the actor unused on every "
                "other step; use --trainer.strategy ddp_find_unused_parameters_true"
            )

    def build_actor(self, observation_dim, action_dim, low, high) -> DeterministicPolicy:
        return DeterministicPolicy(observation_dim, action_dim, low, high, hidden=self.hparams.actor_hidden)

    def acting_policy(self):
        return policy_module(self.actor, exploration_noise=self.hparams.exploration_noise)

    def updates_actor(self, update: int) -> bool:
        """The authors count iterations from 1 and update the actor when ``it % policy_delay == 0``."""
        return (update + 1) % self.hparams.policy_delay == 0

    def update_phase(self, update: int) -> int:
        """Two kinds of update: critic only (phase 0) and critic + actor + targets (phase ``policy_delay − 1``)."""
        return self.hparams.policy_delay - 1 if self.updates_actor(update) else 0

    # --------------------------------------------------------------------------------------- the math
    def critic_target(self, batch: TensorDictBase) -> Tensor:
        """``y = r + γ (1 − terminated) min_i Q̄_i(s', clip(μ̄(s') + ε))``, fp32, shape ``(B, 1)``."""
        hp = self.hparams
        radius = self.actor.action_radius
        action = batch.get("action")
        noise = (torch.randn_like(action) * (hp.policy_noise * radius)).clamp(
            -hp.noise_clip * radius, hp.noise_clip * radius
        )
        with torch.no_grad():
            next_obs = batch.get(("next", "observation"))
            next_action = torch.max(torch.min(self.target_actor(next_obs) + noise, self.actor.high), self.actor.low)
            next_q = self.target_critics(next_obs, next_action).float().amin(0)
            not_terminated = 1.0 - batch.get(("next", "terminated")).float()
            return batch.get(("next", "reward")).float() + self.optim.gamma * not_terminated * next_q

    def losses(self, batch: TensorDictBase, update: int) -> dict[str, Tensor]:
        obs = batch.get("observation")
        critic_loss, condition = self.twin_critic_loss(batch, self.critic_target(batch))
        losses = {"critic_loss": critic_loss, "loss": critic_loss}
        if self.updates_actor(update):
            with frozen(self.critics):
                # Q1 only, as in TD3; the ensemble evaluates both members in one batched pass and Q2 is dropped
                q1 = self.critics.evaluate(detach_condition(condition), self.actor(obs))[0].float()
            actor_loss = -q1.mean()
            losses["actor_loss"] = actor_loss
            losses["loss"] = critic_loss + actor_loss
        return losses

    def after_update(self, update: int) -> None:
        if self.updates_actor(update):
            polyak_update(self.target_critics, self.critics, self.optim.tau)
            polyak_update(self.target_actor, self.actor, self.optim.tau)
