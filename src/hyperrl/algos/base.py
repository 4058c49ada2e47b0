"""What SAC and TD3 share: twin critics with Polyak targets, the collector/buffer, evaluation, checkpoint state.

One Lightning training step = one collector batch (``frames_per_batch`` frames) and ``updates_per_batch`` gradient
updates. Lightning counts ``optimizer.step()`` calls as ``global_step`` under manual optimization, so every module
here holds ONE optimizer (param groups for critic, actor and temperature, each with its own learning rate) and
steps it through Lightning exactly once per training step: ``trainer.global_step`` counts training steps, and
``--trainer.max_steps N`` means N collector batches (N environment frames in the paper's setting).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from tensordict import TensorDictBase
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hyperrl.data import OffPolicyData, training_steps_loader
from hyperrl.envs import check_env_id, make_env
from hyperrl.errors import ConfigurationError, NonFiniteLossError, require_positive
from hyperrl.nn import CriticEnsemble, make_critic

#: Critic learning rates of the paper: 5e-5 for hypernetwork critics, 3e-4 for every other critic.
HYPER_CRITIC_LR = 5e-5
DEFAULT_CRITIC_LR = 3e-4

#: fp32, or bf16 autocast with fp32 weights, targets, log-probabilities and α. Not "*-true" casts of the whole module
#: (replay batches stay fp32, and bf16 weights would break the fp32 targets), not fp16 (needs loss scaling).
SUPPORTED_PRECISIONS = ("32-true", "32", "bf16-mixed")


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Build the enclosed graph without ``module``'s parameters as leaves, so its loss terms give them no gradient
    (the actor loss must move the actor only). Restores the previous ``requires_grad`` flags."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def detach_condition(condition: Any) -> Any:
    """Detach a critic's state-only ``condition`` (a tensor or a list of per-layer tensor tuples)."""
    if isinstance(condition, Tensor):
        return condition.detach()
    return [tuple(t.detach() for t in layer) for layer in condition]


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``θ_target ← (1 − τ) θ_target + τ θ``, in place, for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def rng_state() -> dict:
    """Every RNG a run draws from, as plain tensors/ints (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


class Algorithm(L.LightningModule):
    """Data-agnostic base of every hyperrl LightningModule (the CLI accepts any subclass)."""


class OffPolicyAlgorithm(Algorithm):
    """Base LightningModule of the off-policy actor-critic algorithms (manual optimization).

    Subclasses build ``self.actor`` in :meth:`build_actor` and implement :meth:`losses`, returning a dict of
    named loss terms whose ``"loss"`` entry is backpropagated once per update.
    """

    def __init__(
        self,
        env: str = "HalfCheetah-v5",
        critic: str = "sa_hyper",
        critic_kwargs: dict[str, Any] | None = None,
        actor_hidden: list[int] | tuple[int, ...] = (256, 256),
        critic_lr: float | None = None,
        actor_lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        batch_size: int = 256,
        buffer_size: int = 1_000_000,
        warmup_frames: int = 1000,
        learning_starts: int = 256,
        frames_per_batch: int = 1,
        updates_per_batch: int = 1,
        eval_episodes: int = 10,
        seed: int = 0,
        fused_adam: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        for name in ("batch_size", "buffer_size", "frames_per_batch", "updates_per_batch", "eval_episodes"):
            require_positive(name, getattr(self.hparams, name), integer=True)
        for name in ("actor_lr", "tau"):
            require_positive(name, getattr(self.hparams, name))
        if critic_lr is not None:
            require_positive("critic_lr", critic_lr)
        if not 0.0 < tau <= 1.0:
            raise ConfigurationError(f"tau={tau!r} is not allowed: expected 0 < tau <= 1")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigurationError(f"gamma={gamma!r} is not allowed: expected 0 <= gamma <= 1")
        for name in ("warmup_frames", "learning_starts"):
            value = getattr(self.hparams, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"{name}={value!r} is not allowed: expected an integer >= 0")
        if learning_starts > buffer_size:
            raise ConfigurationError(
                f"learning_starts={learning_starts} is not allowed: it must not exceed buffer_size={buffer_size}"
            )

        self.env_spec = check_env_id(env)
        torch.manual_seed(seed)
        obs_dim, act_dim = self.env_spec.observation_dim, self.env_spec.action_dim
        kwargs = dict(critic_kwargs or {})  # make_critic rejects an unknown name or option in one line
        # the twin critics as one ensemble (one batched matmul per layer for both; see hyperrl.nn.ensemble)
        self.critics = CriticEnsemble([make_critic(critic, obs_dim, act_dim, **kwargs) for _ in range(2)])
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.critic_lr = critic_lr if critic_lr is not None else (
            HYPER_CRITIC_LR if self.critics.is_hypernetwork else DEFAULT_CRITIC_LR
        )
        self.actor = self.build_actor(obs_dim, act_dim, self.env_spec.action_low, self.env_spec.action_high)
        self.data: OffPolicyData | None = None
        self._envs: dict = {}  # a plain dict: environments are not submodules (no state_dict, no summary row)
        self._episode_returns: list[float] = []  # the last 100 finished training episodes
        self._new_returns: list[float] = []  # finished since the last log line
        self._clock: tuple[float, int] | None = None
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
            {"params": list(self.actor.parameters()), "lr": self.hparams.actor_lr, "name": "actor"},
        ]

    # ------------------------------------------------------------------ Lightning plumbing
    def configure_optimizers(self):
        fused = self.hparams.fused_adam
        if fused is None:
            fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.parameters())
        return torch.optim.Adam(self.param_groups(), fused=fused)

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        if precision not in SUPPORTED_PRECISIONS:
            raise ConfigurationError(
                f"precision {precision!r} is not supported: allowed {', '.join(SUPPORTED_PRECISIONS)} "
                "(fp16 needs loss scaling, which off-policy RL updates do not use; '-true' precisions would cast "
                "the fp32 targets and replay data)"
            )
        rank = self.global_rank
        if stage == "fit" and self.data is None:
            hp = self.hparams
            env_seed = hp.seed + rank
            self.data = OffPolicyData(
                lambda: make_env(hp.env, seed=env_seed),
                self.acting_policy(),
                buffer_size=hp.buffer_size,
                batch_size=hp.batch_size,
                frames_per_batch=hp.frames_per_batch,
                warmup_frames=hp.warmup_frames,
                device=self.device,
            )
            # each rank samples its own minibatches
            torch.manual_seed(hp.seed + 10_000 * rank + 1)

    def teardown(self, stage: str) -> None:
        if self.data is not None and stage == "fit":
            self.data.shutdown()
            self.data = None

    def train_dataloader(self) -> DataLoader:
        return training_steps_loader()

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None, generator=torch.Generator())

    @property
    def frames(self) -> int:
        """Environment frames collected so far, over all ranks."""
        return self.global_step * self.hparams.frames_per_batch * self.trainer.world_size

    # ------------------------------------------------------------------ training
    def training_step(self, step: int, batch_idx: int) -> None:
        hp = self.hparams
        frames_after = self.frames + hp.frames_per_batch * self.trainer.world_size  # before Lightning counts this step
        batch = self.data.collect()
        self._record_episodes(batch)
        optimizer = self.optimizers()
        updated, losses = False, {}
        if len(self.data) >= max(hp.learning_starts, 1):
            updates_done = self._updates_done
            for k in range(hp.updates_per_batch):
                losses = self.losses(self.data.sample(), updates_done + k)
                loss = losses["loss"]
                self._stop_if_not_finite(losses)
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if k == hp.updates_per_batch - 1:
                    optimizer.step()  # the one step Lightning counts for this training step
                else:
                    optimizer.optimizer.step()
                self.after_update(updates_done + k)
            self._updates_done = updates_done + hp.updates_per_batch
            self.update_count.fill_(self._updates_done)
            updated = True
        if not updated:
            optimizer.step()  # no gradients: Adam skips every parameter; Lightning still counts the step
        if self._should_log():
            self._log_step(frames_after, losses)

    def _stop_if_not_finite(self, losses: dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` before the backward pass if the loss is NaN/inf on this rank or, under
        data parallelism, on any rank: every rank stops at the same update (a rank stopping alone would leave the
        others waiting in the gradient all-reduce)."""
        bad_here = not bool(torch.isfinite(losses["loss"]))
        bad = bad_here
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad_here, all=False)
        if not bad:
            return
        where = ", ".join(f"{n}={v.item():.4g}" for n, v in losses.items()) if bad_here else "on another rank"
        raise NonFiniteLossError(
            f"non-finite loss at training step {self.global_step} ({where}); stopping before anything is "
            "checkpointed: the last checkpoint is the last good state"
        )

    def _should_log(self) -> bool:
        """Lightning writes step metrics every ``log_every_n_steps``; calling ``self.log`` on the other steps costs
        milliseconds per step for nothing (``benchmarks/overhead.py``), so metrics are only built when written.
        Lightning's own rule decides (there is no public accessor for it)."""
        return self.trainer._logger_connector.should_update_logs

    def _log_step(self, frames: int, losses: dict[str, Tensor]) -> None:
        metrics = {f"train/{n}": v.detach() for n, v in losses.items() if n != "loss"}
        metrics["train/frames"] = float(frames)
        self.log_dict(metrics, batch_size=1)
        bar = {}
        if self._new_returns:
            # mean return of the episodes that finished since the previous log line
            bar["train/episode_return"] = float(np.mean(self._new_returns))
            self._new_returns = []
        now = time.perf_counter()
        if self._clock is not None and frames > self._clock[1]:
            bar["train/fps"] = (frames - self._clock[1]) / (now - self._clock[0])
        self._clock = (now, frames)
        if bar:
            self.log_dict(bar, prog_bar=True, batch_size=1)

    def _record_episodes(self, batch: TensorDictBase) -> None:
        done = batch.get(("next", "done")).reshape(-1)
        if done.any():
            returns = batch.get(("next", "episode_reward")).reshape(-1)[done].tolist()
            self._episode_returns = (self._episode_returns + returns)[-100:]
            self._new_returns.extend(returns)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, episodes: int | None = None) -> list[float]:
        """Returns of ``episodes`` deterministic episodes on the evaluation env (reseeded: same start states
        at every evaluation, ``seed + 100`` as in the authors' code)."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        episodes = episodes or self.hparams.eval_episodes
        if "eval" not in self._envs:
            self._envs["eval"] = make_env(self.hparams.env)
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

    # ------------------------------------------------------------------ checkpoint state beyond parameters
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hyperrl"] = {
            "data": self.data.state_dict() if self.data is not None else None,
            "rng": rng_state(),
            "episode_returns": list(self._episode_returns[-100:]),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "update_count" in checkpoint.get("state_dict", {}):
            self._updates_done = int(checkpoint["state_dict"]["update_count"])
        state = checkpoint.get("hyperrl")
        if state is None:
            return
        self._pending_restore = state

    def on_train_start(self) -> None:
        # restored as late as possible, after Lightning has set everything up, so nothing draws in between
        state = getattr(self, "_pending_restore", None)
        if state is None:
            return
        if state["data"] is not None and self.data is not None:
            self.data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self._episode_returns = list(state["episode_returns"])
        self._pending_restore = None

