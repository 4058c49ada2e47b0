"""What SAC and TD3 share: twin critics with Polyak targets, the collector/buffer, evaluation.

One Lightning training step = one collector batch (``frames_per_batch`` frames) and ``updates_per_batch`` gradient
updates, each one step of ONE Adam optimizer (param groups for critic, actor and temperature, each with its own
learning rate). :class:`~hyperrl.algos.base.Algorithm` counts the training steps: ``--trainer.max_steps N`` means N
collector batches (N environment frames in the paper's setting).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from hyperrl.algos.arguments import Seed, check_arguments
from hyperrl.algos.base import Algorithm, detached
from hyperrl.algos.settings import Evaluation, OffPolicyOptim, Replay
from hyperrl.data import OffPolicyData
from hyperrl.envs import check_env_id, make_env
from hyperrl.nn import CriticEnsemble, make_critic
from hyperrl.nn.critics import CRITIC, CriticChoice

#: Critic learning rates of the paper: 5e-5 for hypernetwork critics, 3e-4 for every other critic.
HYPER_CRITIC_LR = 5e-5
DEFAULT_CRITIC_LR = 3e-4


class OffPolicyAlgorithm(Algorithm):
    """Base LightningModule of the off-policy actor-critic algorithms (SAC, TD3).

    Subclasses build ``self.actor`` in :meth:`build_actor` and implement :meth:`losses`, returning a dict of
    named loss terms whose ``"loss"`` entry is backpropagated once per update. Their ``__init__`` forwards the
    shared settings below with ``**kwargs`` (the CLI follows them, ``--print_config`` lists them all).

    Speed settings (for GPUs): ``compile`` runs each whole update (:meth:`update`: losses, backward, Adam step,
    target update) through ``torch.compile``; ``cudagraphs`` captures it in a CUDA graph (tensordict's
    ``CudaGraphModule``) and replays it, so no Python runs between its kernels; ``compile`` also compiles the
    collector's acting policy. The replay buffer always lives on the training device. ``env_kwargs`` go to
    ``gymnasium.make`` (e.g. ``{"ctrl_cost_weight": 0}``: the authors' Ant without control cost).
    """

    NETWORKS = {"critic": CRITIC}
    GROUPS = {"replay": Replay, "optim": OffPolicyOptim, "evaluation": Evaluation}

    def __init__(
        self,
        env: str = "HalfCheetah-v5",
        critic: CriticChoice = "sa_hyper",
        actor_hidden: list[int] | tuple[int, ...] = (256, 256),
        replay: Replay = Replay(),
        optim: OffPolicyOptim = OffPolicyOptim(),
        evaluation: Evaluation = Evaluation(),
        seed: Seed = 0,
        env_kwargs: dict[str, Any] | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
    ) -> None:
        super().__init__()
        self.set_groups(replay=replay, optim=optim, evaluation=evaluation)
        self.save_hyperparameters()
        self.hparams_as_data()
        check_arguments(OffPolicyAlgorithm.__init__, locals())  # the annotations' rules, for Python callers too

        self.env_spec = check_env_id(env, env_kwargs=env_kwargs)
        torch.manual_seed(seed)
        obs_dim, act_dim = self.env_spec.observation_dim, self.env_spec.action_dim
        # the twin critics as one ensemble (one batched matmul per layer for both; see hyperrl.nn.ensemble)
        self.critics = CriticEnsemble([make_critic(self.hparams.critic, obs_dim, act_dim) for _ in range(2)])
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.critic_lr = self.optim.critic_lr if self.optim.critic_lr is not None else (
            HYPER_CRITIC_LR if self.critics.is_hypernetwork else DEFAULT_CRITIC_LR
        )
        self.actor = self.build_actor(obs_dim, act_dim, self.env_spec.action_low, self.env_spec.action_high)
        # gradient updates done so far (drives TD3's policy delay); a buffer so that checkpoints carry it
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))
        self._updates_done = 0

    # ------------------------------------------------------------------ subclass interface
    def build_actor(self, observation_dim: int, action_dim: int, low, high) -> nn.Module:
        raise NotImplementedError

    def acting_policy(self):
        """TensorDictModule ``observation -> action`` used by the collector and for evaluation."""
        raise NotImplementedError

    def losses(self, batch: TensorDictBase, update: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_update(self, update: int) -> None:
        """Target-network updates after the optimizer step of update number ``update`` (0-based, global)."""

    def update_phase(self, update: int) -> int:
        """The smallest update index whose update does the same work as update ``update`` (the compiled or
        CUDA-graphed update is built once per phase). Every update is alike unless a subclass says otherwise."""
        return 0

    def twin_critic_loss(self, batch: TensorDictBase, target: Tensor) -> tuple[Tensor, Any]:
        """``Σ_i mean (Q_i(s, a) − y)²`` and the critics' state condition (leading dim: the critic), for the actor
        loss to reuse."""
        obs, action = batch.get("observation"), batch.get("action")
        condition = self.critics.condition(obs)
        q = self.critics.evaluate(condition, action).float()  # (2, B, 1)
        loss = (q - target).square().flatten(1).mean(1).sum()
        return loss, condition

    def param_groups(self) -> list[dict]:
        return [
            {"params": list(self.critics.parameters()), "lr": self.critic_lr, "name": "critic"},
            {"params": list(self.actor.parameters()), "lr": self.optim.actor_lr, "name": "actor"},
        ]

    # ------------------------------------------------------------------ data
    def make_data(self) -> OffPolicyData:
        hp, replay = self.hparams, self.replay
        rank = self.global_rank
        env_seed = hp.seed + rank
        env_kwargs = hp.get("env_kwargs")
        data = OffPolicyData(
            lambda: make_env(hp.env, seed=env_seed, env_kwargs=env_kwargs),
            self.acting_policy(),
            buffer_size=replay.buffer_size,
            batch_size=replay.batch_size,
            frames_per_batch=replay.frames_per_batch,
            warmup_frames=replay.warmup_frames,
            device=self.device,
            compile_policy=bool(hp.get("compile")),
        )
        # each rank samples its own minibatches
        torch.manual_seed(hp.seed + 10_000 * rank + 1)
        return data

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, Tensor]:
        batch = self.data.collect()
        self.count_frames(batch.numel())
        self.record_episodes(batch)
        losses: dict[str, Tensor] = {}
        if len(self.data) >= max(self.replay.learning_starts, 1):
            for _ in range(self.replay.updates_per_batch):
                losses = self.run_update(self.data.sample(), self._updates_done)
                self._updates_done += 1
            self.update_count.fill_(self._updates_done)
        return losses

    def update(self, batch: TensorDictBase, update: int) -> TensorDictBase:
        """One whole gradient update on ``batch``: the loss terms, one backward pass, one Adam step, the target
        update. Returns the detached loss terms. Eagerly, a non-finite loss stops the run before the backward pass
        (:meth:`~hyperrl.algos.base.Algorithm.stop_if_not_finite`)."""
        losses = self.losses(batch, update)
        self.backward_and_step(losses)
        self.after_update(update)
        return detached(losses)

    def run_update(self, batch: TensorDictBase, update: int) -> TensorDictBase:
        """:meth:`update`, compiled and/or CUDA-graphed once per :meth:`update_phase` when asked
        (:meth:`~hyperrl.algos.base.Algorithm.run_fast_update`)."""
        if not self.is_fast:
            return self.update(batch, update)
        phase = self.update_phase(update)
        return self.run_fast_update(phase, lambda b: self.update(b, phase), batch)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "update_count" in checkpoint.get("state_dict", {}):
            self._updates_done = int(checkpoint["state_dict"]["update_count"])
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, episodes: int | None = None) -> list[float]:
        """Returns of ``episodes`` deterministic episodes on the evaluation env (reseeded: same start states
        at every evaluation, ``seed + 100`` as in the authors' code)."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        episodes = episodes or self.evaluation.eval_episodes
        if "eval" not in self._envs:
            self._envs["eval"] = make_env(self.hparams.env, env_kwargs=self.hparams.get("env_kwargs"))
        env = self._envs["eval"]
        env.set_seed(self.hparams.seed + 100 + self.global_rank)
        policy = self.acting_policy()
        returns = []
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            for _ in range(episodes):
                rollout = env.rollout(10**7, policy, break_when_any_done=True)
                returns.append(rollout.get(("next", "reward")).sum().item())
        return returns

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        returns = self.evaluate()
        self.log("eval/return", float(np.mean(returns)), prog_bar=True, sync_dist=True, batch_size=1)
        self.log("eval/return_std", float(np.std(returns)), sync_dist=True, batch_size=1)
