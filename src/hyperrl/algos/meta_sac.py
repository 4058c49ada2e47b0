"""PEARL's SAC over a family of tasks, with a pluggable context (``hyperrl-paper.md`` §6.3).

One update on a meta-batch of ``T`` tasks × ``B`` transitions ``(s, a, r, s', terminated)``, with ``z`` the context
of each task from the context provider (the true context for the oracle, PEARL's ``q(z|c)``) and ``z̄`` it
detached::

    y_Q   = ρ r + γ (1 − terminated) V̄(s', z̄)                                 ρ: reward_scale   (no gradient)
    L_Q   = Σ_i mean (Q_i(s, a, z) − y_Q)²
    ã, log π(ã|s,z̄) ~ π(·|s, z̄)
    y_V   = min_i Q_i(s, ã, z̄) − log π(ã|s,z̄)                                                  (no gradient)
    L_V   = mean (V(s, z̄) − y_V)²
    L_π   = mean (log π(ã|s,z̄) − min_i Q_i(s, ã, z̄)) + λ_μ mean μ² + λ_σ mean (log σ)²        (critic frozen)
    V̄ ← (1 − τ) V̄ + τ V

The temperature is fixed at 1 (the reward scale acts as its inverse, as in PEARL); only V has a target network.
All terms (and the provider's, e.g. PEARL's KL term) are minimised by ONE Adam step over param groups (Q, V, policy,
and the provider's, each with its own learning rate). This differs from PEARL's code in one way: PEARL steps Q
first and evaluates ``min Q(s, ã)`` for ``y_V`` and ``L_π`` with the updated critics; here every term sees the
parameters from before the step, the simultaneous update of SAC implementations such as TorchRL's
(``docs/deviations.md``).

The primary network of the hypernetwork policy runs once per task (``z`` is ``(T, 1, ·)``); the state-only part
of the critics (for the ``hyper`` meta-Q: the primary network on ``s``) runs once and serves ``L_Q`` and ``L_π``.

Composition, as PEARL's original splits agent and algorithm: :class:`ContextSAC` is the algorithm (the update above,
its optimizer, the training loop, logging the evaluation), built from three parts that a subclass supplies: a context
provider (:mod:`hyperrl.algos.context`), a data source (:mod:`hyperrl.data.multitask`) and an evaluator
(:mod:`hyperrl.algos.meta_eval`). :class:`MetaSAC` takes the oracle context, the plain multi-task data and
deterministic episodes; :class:`~hyperrl.algos.pearl.PEARL` the learned encoder, PEARL's data and adaptation.

Steps: ONE Lightning training step = one gradient update. Every ``updates_per_iteration`` updates a training step
starts with one collection iteration: all train tasks at the first, then ``tasks_per_iteration`` random ones. So
``--trainer.max_steps`` = iterations × ``updates_per_iteration`` (the authors' 400 iterations of 2000 updates:
800,000), and ``--trainer.val_check_interval`` counts updates.

Speed settings (for GPUs): ``compile`` runs the whole update (:meth:`ContextSAC.update`: losses, the provider's
terms, backward, Adam step, target update) through ``torch.compile``; ``cudagraphs`` captures it in a CUDA graph and
replays it. In both, the learning rates are device tensors updated in place, so the cosine decay reaches a captured
graph and a compiled update does not recompile when a rate changes.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Literal

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from hyperrl.algos.arguments import Seed, check_arguments
from hyperrl.algos.base import (
    Algorithm,
    cosine_decay,
    detach_condition,
    detached,
    frozen,
    polyak_update,
)
from hyperrl.algos.context import CONTEXT_ALGORITHMS, CONTEXT_PROVIDERS, ContextProvider
from hyperrl.algos.meta_eval import EpisodeEvaluator
from hyperrl.algos.settings import (
    ContextEvaluation,
    ContextSACOptim,
    MetaSACEvaluation,
    MetaSACReplay,
    MultiTaskReplay,
    Tasks,
)
from hyperrl.data.multitask import MultiTaskData
from hyperrl.envs import check_context_dim, check_task_env_id, episode_horizon, make_task_env, make_task_pools
from hyperrl.errors import ConfigurationError
from hyperrl.nn import CriticEnsemble, make_meta_critic, make_meta_value, make_policy
from hyperrl.nn.meta_critics import META_CRITIC, META_VALUE, MetaCriticChoice, MetaValueChoice
from hyperrl.nn.policies import POLICY, PolicyChoice

#: learning rates of the authors' PEARL code: hypernetwork Q and V 5e-5, hypernetwork policy 1e-4, else 3e-4
HYPER_CRITIC_LR = 5e-5
HYPER_POLICY_LR = 1e-4
DEFAULT_LR = 3e-4


class MetaActingPolicy(nn.Module):
    """``(observation, context) -> action`` for acting: the provider turns the env's context into ``z``; the policy
    samples (collection) or takes its mode (under a deterministic interaction type: evaluation)."""

    def __init__(self, policy: nn.Module, provider: nn.Module) -> None:
        super().__init__()
        self.policy, self.provider = policy, provider

    def forward(self, observation: Tensor, context: Tensor) -> Tensor:
        from tensordict.nn.probabilistic import interaction_type

        from hyperrl.nn.modules import _DETERMINISTIC

        device = next(self.policy.parameters()).device
        obs, z = observation.to(device), self.provider.acting(context.to(device))
        if interaction_type() in _DETERMINISTIC:
            action = self.policy.mode(obs, z)
        else:
            action = self.policy.sample(obs, z)[0]
        return action.to(observation.device)


class ContextSAC(Algorithm):
    """PEARL's SAC on a task family, conditioned on ``z`` from a context provider (module docstring); the provider,
    the data source and the evaluator come from a subclass (:meth:`make_context_provider`, :meth:`make_data`,
    :meth:`make_evaluator`). The settings below are shared by :class:`MetaSAC` and :class:`~hyperrl.algos.pearl.PEARL`,
    which forward them with ``**kwargs`` (the CLI follows them, ``--print_config`` lists them all).

    Args:
        env: a task family, e.g. ``hyperrl/HalfCheetahVel-v0``; ``env_kwargs`` go to ``gymnasium.make``.
        policy, critic, value: the networks, each a preset name or ``class_path``/``init_args``
            (:mod:`hyperrl.nn.registry`; ``make_policy`` with ``distribution="tanh_normal"``, ``make_meta_critic``,
            ``make_meta_value``). The policy's action bounds and ``tanh_log_prob`` are this algorithm's: a policy's
            own must be left null or agree.
        tanh_log_prob: the tanh term of the policy's log-density: ``exact`` (the stable closed form of
            ``log(1 − tanh²u)``) or ``pearl`` (PEARL's and the authors' ``log(1 − tanh²u + 1e-6)``, which the paper
            PEARL configs use; the two differ by tens of nats where the policy saturates, ``docs/deviations.md``).
        tasks: the task pools (:class:`~hyperrl.algos.settings.Tasks`; ``make_task_pools``, sizes ``None`` take the
            split's defaults, e.g. 100/30, and ``split: medium`` adds the OOD pool).
        replay: the per-task buffers and the collection schedule (:class:`~hyperrl.algos.settings.MultiTaskReplay`;
            an update sees ``meta_batch_size`` tasks × ``batch_size`` transitions).
        optim: the SAC objective and the optimiser (:class:`~hyperrl.algos.settings.ContextSACOptim`; learning rates
            ``None`` = the authors' rule, module constants; the cosine decay of every rate is a function of the
            update count, so a resumed run continues it exactly).
        evaluation: :class:`~hyperrl.algos.settings.ContextEvaluation`.
        seed: network initialisation, collection and sampling.
        compile, cudagraphs: the speed settings (module docstring); ``cudagraphs`` needs a CUDA device.
    """

    #: settings older checkpoints carry under another name (old -> new); the CLI renames them when it rebuilds a
    #: model from such a checkpoint (``hyperrl.runs.hyperparameters``)
    RENAMED_HPARAMS = {"meta_batch": "meta_batch_size"}
    NETWORKS = {"policy": POLICY, "critic": META_CRITIC, "value": META_VALUE}

    @classmethod
    def network_settings_of_old(cls, name, settings, hparams):
        if name == "policy" and "tanh_log_prob" in settings:  # it overrode this algorithm's own setting
            hparams["tanh_log_prob"] = settings.pop("tanh_log_prob")
        return settings

    GROUPS = {"tasks": Tasks, "replay": MultiTaskReplay, "optim": ContextSACOptim, "evaluation": ContextEvaluation}

    def __init__(
        self,
        env: str = "hyperrl/HalfCheetahVel-v0",
        env_kwargs: dict[str, Any] | None = None,
        policy: PolicyChoice = "hyper",
        tanh_log_prob: Literal["exact", "pearl"] = "exact",
        critic: MetaCriticChoice = "hyper",
        value: MetaValueChoice = "hyper",
        tasks: Tasks = Tasks(),
        replay: MultiTaskReplay = MultiTaskReplay(),
        optim: ContextSACOptim = ContextSACOptim(),
        evaluation: ContextEvaluation = ContextEvaluation(),
        seed: Seed = 0,
        compile: bool = False,
        cudagraphs: bool = False,
    ) -> None:
        super().__init__()
        check_arguments(ContextSAC.__init__, locals())
        self.set_groups(tasks=tasks, replay=replay, optim=optim, evaluation=evaluation)
        self.save_hyperparameters()
        self.hparams_as_data()
        hp = self.hparams
        self._lr_decay = self.optim.lr_decay
        self.env_spec = check_task_env_id(env)
        t = self.tasks
        self.pools = make_task_pools(env, t.task_seed, t.split, t.n_train_tasks, t.n_test_tasks, t.n_ood_tasks)
        torch.manual_seed(seed)
        obs_dim, act_dim = self.env_spec.observation_dim, self.env_spec.action_dim
        self.context_provider = self.make_context_provider()
        z_dim = self.context_provider.output_dim
        # the env rescales [-1, 1] to its bounds (_task_env); the tanh term is this algorithm's setting
        owned = {"low": -1.0, "high": 1.0, "tanh_log_prob": tanh_log_prob}
        self.policy = make_policy(hp.policy, obs_dim, act_dim, z_dim, distribution="tanh_normal", owned=owned)
        self.critics = CriticEnsemble([make_meta_critic(hp.critic, obs_dim, act_dim, z_dim) for _ in range(2)])
        self.value = make_meta_value(hp.value, obs_dim, z_dim)
        self.target_value = copy.deepcopy(self.value).requires_grad_(False)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))
        self.evaluator = self.make_evaluator()
        self._updates_done = 0
        self._last_eval: dict | None = None

    # ------------------------------------------------------------------ the parts a subclass supplies
    def make_context_provider(self) -> ContextProvider:
        """The context provider (built in ``__init__``, after the hyperparameters and ``self.env_spec``)."""
        raise NotImplementedError

    def make_evaluator(self):
        """The evaluator (:mod:`hyperrl.algos.meta_eval`), built at the end of ``__init__``."""
        raise NotImplementedError

    def make_data(self) -> MultiTaskData:
        raise NotImplementedError

    # ------------------------------------------------------------------ optimizer
    def learning_rates(self) -> dict[str, float]:
        hp = self.optim
        hyper_q = self.critics.is_hypernetwork or getattr(self.value, "is_hypernetwork", False)
        critic_lr = hp.critic_lr if hp.critic_lr is not None else (HYPER_CRITIC_LR if hyper_q else DEFAULT_LR)
        policy_lr = hp.policy_lr if hp.policy_lr is not None else (
            HYPER_POLICY_LR if getattr(self.policy, "is_hypernetwork", False) else DEFAULT_LR
        )
        return {"critic": critic_lr, "policy": policy_lr, "context": DEFAULT_LR}

    def param_groups(self) -> list[dict]:
        """One group per network with its rate and, as ``base_lr``, the rate the decay scales. A fast update gets
        each rate as a device tensor, changed in place (:meth:`scale_learning_rates`): a CUDA graph reads the tensor
        at every replay, where a Python number would stay what it was at capture."""
        lr = self.learning_rates()
        groups = [
            {"params": list(self.critics.parameters()), "lr": lr["critic"], "name": "critic"},
            {"params": list(self.value.parameters()), "lr": lr["critic"], "name": "value"},
            {"params": list(self.policy.parameters()), "lr": lr["policy"], "name": "policy"},
            *self.context_provider.param_groups(lr["context"]),
        ]
        for group in groups:
            group["base_lr"] = float(group["lr"])
            if self.is_fast:
                group["lr"] = torch.tensor(group["base_lr"], device=self.device)
        return groups

    def scale_learning_rates(self, factor: float) -> None:
        """Every group's rate := ``factor`` × its ``base_lr``; a tensor rate (fast updates) is written in place."""
        for group in self.optimizer.param_groups:
            rate = group.setdefault("base_lr", float(group["lr"])) * factor
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate

    # ------------------------------------------------------------------ data
    def acting_policy(self):
        from tensordict.nn import TensorDictModule

        return TensorDictModule(
            MetaActingPolicy(self.policy, self.context_provider), in_keys=["observation", "context"], out_keys=["action"]
        )

    def _task_env(self, seed: int | None, rows: int):
        """A task env of ``rows`` rows (tasks side by side, :func:`~hyperrl.envs.make_task_env` ``num_envs``)."""
        # the networks act in [-1, 1], the env maps that onto its bounds: as rlkit's NormalizedBoxEnv under PEARL
        return make_task_env(self.hparams.env, seed=seed, context_bounds=self.pools, rescale_actions=True,
                             num_envs=rows, **(self.hparams.env_kwargs or {}))

    def _collection_rows(self) -> int:
        """Rows of the collection env: an iteration's tasks side by side."""
        return max(1, int(self.replay.tasks_per_iteration))

    @staticmethod
    def _horizon(env) -> int:
        return episode_horizon(env)

    # ------------------------------------------------------------------ the math
    def losses(self, batch: TensorDictBase) -> dict[str, Tensor]:
        hp = self.optim
        obs, action = batch.get("observation"), batch.get("action")
        z, provider_losses = self.context_provider.infer(batch)  # (T, 1, z)
        z_fixed = z.detach()
        z_q, z_v = z.expand(*obs.shape[:-1], -1), z_fixed.expand(*obs.shape[:-1], -1)
        with torch.no_grad():
            next_v = self.target_value(batch.get(("next", "observation")), z_v).float()
            not_terminated = 1.0 - batch.get(("next", "terminated")).float()
            q_target = hp.reward_scale * batch.get(("next", "reward")).float() + hp.gamma * not_terminated * next_v
        condition = self.critics.condition(obs, z_q)
        q = self.critics.evaluate(condition, action, z_q).float()  # (2, T, B, 1)
        critic_loss = (q - q_target).square().flatten(1).mean(1).sum()

        policy_condition = self.policy.condition(z_fixed)  # the primary network once per task
        new_action, log_prob, loc, log_std = self.policy.sample_with_params(obs, policy_condition)
        # the min-Q term reuses the critics' action-independent part, detached: its values are those of
        # condition(obs, z̄) (a ``combine`` or MLP meta-Q reads z there), and no gradient reaches z or the critics
        with frozen(self.critics):
            q_new = self.critics.evaluate(detach_condition(condition), new_action, z_v).float().amin(0)
        v = self.value(obs, z_v).float()
        v_target = (q_new - log_prob).detach()
        value_loss = (v - v_target).square().mean()
        policy_loss = (log_prob - q_new).mean()
        regulariser = hp.policy_mean_reg * loc.square().mean() + hp.policy_std_reg * log_std.square().mean()
        losses = {
            "critic_loss": critic_loss,
            "value_loss": value_loss,
            "policy_loss": policy_loss,
            "policy_reg": regulariser,
            **provider_losses,
        }
        losses["loss"] = sum(losses.values())
        return losses

    def after_update(self) -> None:
        polyak_update(self.target_value, self.value, self.optim.tau)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One whole gradient update on ``batch``: the loss terms (the provider's included: PEARL's encoder forward,
        its reparameterised ``z`` and KL term), one backward pass, one Adam step over every group (the encoder's
        too), the target-V update. Returns the detached loss terms. Eagerly, a non-finite loss stops the run before
        the backward pass. The collection state of a provider (PEARL's per-row ``q`` and ``z``) is not touched."""
        losses = self.losses(batch)
        self.backward_and_step(losses)
        self.after_update()
        return detached(losses)

    def run_update(self, batch: TensorDictBase) -> TensorDictBase:
        """:meth:`update`, compiled and/or CUDA-graphed when asked (one control flow: one key)."""
        if not self.is_fast:
            return self.update(batch)
        return self.run_fast_update("update", self.update, batch)

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, Tensor]:
        if self._updates_done % self.replay.updates_per_iteration == 0:
            collected = self.data.collect()
            self.count_frames(collected.numel())
            if collected.numel():
                self.record_episodes(collected)
        batch = self.data.sample()
        if self._lr_decay is not None:
            self.scale_learning_rates(cosine_decay(self._updates_done, *self._lr_decay, self.optim.lr_decay_final))
        losses = self.run_update(batch)
        self._updates_done += 1
        self.update_count.fill_(self._updates_done)
        return losses

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "update_count" in checkpoint.get("state_dict", {}):
            self._updates_done = int(checkpoint["state_dict"]["update_count"])
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------------ evaluation
    def evaluation_pools(self) -> dict[str, list[dict]]:
        """The tasks evaluated: a fixed subset of the train tasks (drawn from ``task_seed``), the test tasks and, where
        the split has them, the OOD tasks."""
        n = self.evaluation.eval_train_tasks or len(self.pools.test)
        n = min(n, len(self.pools.train))
        picks = np.random.default_rng(self.tasks.task_seed + 7).choice(len(self.pools.train), n, replace=False)
        pools = {"train": [self.pools.train[i] for i in sorted(picks.tolist())], "test": self.pools.test}
        if self.pools.ood:
            pools["ood"] = self.pools.ood
        return pools

    def _eval_env(self):
        """The evaluation env (built once, with the evaluator's rows), reseeded so every evaluation sees the same
        episodes' randomness."""
        if "eval" not in self._envs:
            self._envs["eval"] = self._task_env(None, self.evaluator.rows(self.evaluation_pools()))
        env = self._envs["eval"]
        env.set_seed(self.hparams.seed + 100 + self.global_rank)
        return env

    @torch.no_grad()
    def evaluate_pools(self) -> dict[str, dict[str, list[float]]]:
        """``pool -> metric -> one value per task`` from the evaluator; logged as ``eval/{pool}_tasks_{metric}``."""
        env = self._eval_env()
        return self.evaluator.evaluate(env, self.acting_policy(), self.evaluation_pools(), self._horizon(env),
                                       seed=self.hparams.seed + self.global_rank, device=self.device)

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        """The return per task, for every evaluated pool (``evaluate_pools``' ``"return"``)."""
        return {pool: metrics["return"] for pool, metrics in self.evaluate_pools().items()}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        results = self.evaluate_pools()
        for pool, metrics in results.items():
            for metric, values in metrics.items():
                self.log(f"eval/{pool}_tasks_{metric}", float(np.mean(values)),
                         prog_bar=pool == "test" and metric == "return", sync_dist=True, batch_size=1)
        tasks = self.evaluation_pools()
        self._last_eval = {"step": int(self.global_step), "frames": self.frames, "returns": {
            pool: [{"task": task, **{metric: values[i] for metric, values in metrics.items()}}
                   for i, task in enumerate(tasks[pool])]
            for pool, metrics in results.items()
        }}
        self._write_eval_tasks()

    def _write_eval_tasks(self) -> None:
        """The per-task returns of the last evaluation, beside metrics.csv (``eval_tasks.json``)."""
        if self._trainer is None or not self.trainer.is_global_zero or self._last_eval is None:
            return
        log_dir = self.trainer.log_dir
        if not log_dir:
            return
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, "eval_tasks.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._last_eval, f, indent=1)
        os.replace(tmp, path)


class MetaSAC(ContextSAC):
    """PEARL's SAC on a task family with the oracle context (the true task context): :class:`ContextSAC` with
    :class:`~hyperrl.algos.context.OracleContext`, :class:`~hyperrl.data.multitask.MultiTaskData` and
    :class:`~hyperrl.algos.meta_eval.EpisodeEvaluator`.

    Args (besides :class:`ContextSAC`'s, forwarded through ``**kwargs``):
        context: the context provider (``oracle``; PEARL's learned encoder is :class:`~hyperrl.algos.pearl.PEARL`);
            ``context_dim`` optionally asserts the env's context size; ``context_kwargs`` go to the provider.
        replay: :class:`~hyperrl.algos.settings.MetaSACReplay` (ContextSAC's, and ``steps_per_task``).
        evaluation: :class:`~hyperrl.algos.settings.MetaSACEvaluation` (ContextSAC's, and ``eval_episodes``).
    """

    GROUPS = {**ContextSAC.GROUPS, "replay": MetaSACReplay, "evaluation": MetaSACEvaluation}

    def __init__(
        self,
        context: str = "oracle",
        context_dim: int | None = None,
        context_kwargs: dict[str, Any] | None = None,
        replay: MetaSACReplay = MetaSACReplay(),
        evaluation: MetaSACEvaluation = MetaSACEvaluation(),
        **kwargs: Any,
    ) -> None:
        check_arguments(MetaSAC.__init__, locals())
        if context in CONTEXT_ALGORITHMS:
            raise ConfigurationError(
                f"context={context!r} is not allowed with MetaSAC: it needs its own data and evaluation, use "
                f"class_path {CONTEXT_ALGORITHMS[context]}"
            )
        if context not in CONTEXT_PROVIDERS:
            raise ConfigurationError(f"unknown context provider {context!r}; allowed: {', '.join(CONTEXT_PROVIDERS)}")
        super().__init__(replay=replay, evaluation=evaluation, **kwargs)

    def make_context_provider(self) -> ContextProvider:
        hp = self.hparams
        if hp.context_dim is not None:
            check_context_dim(hp.env, hp.context_dim)
        return CONTEXT_PROVIDERS[hp.context].from_spec(self.env_spec, **(hp.context_kwargs or {}))

    def make_evaluator(self) -> EpisodeEvaluator:
        return EpisodeEvaluator(self.evaluation.eval_episodes)

    def make_data(self) -> MultiTaskData:
        hp, replay = self.hparams, self.replay
        rank = self.global_rank
        env = self._task_env(hp.seed + rank, self._collection_rows())
        data = MultiTaskData(
            env, self.acting_policy(), self.pools, buffer_size=replay.buffer_size, batch_size=replay.batch_size,
            meta_batch_size=replay.meta_batch_size, initial_steps=replay.initial_steps,
            tasks_per_iteration=replay.tasks_per_iteration,
            steps_per_task=replay.steps_per_task, seed=hp.seed + 1000 * rank, horizon=self._horizon(env),
            device=self.device,
        )  # fmt: skip
        torch.manual_seed(hp.seed + 10_000 * rank + 1)  # each rank explores and samples with its own stream
        return data
