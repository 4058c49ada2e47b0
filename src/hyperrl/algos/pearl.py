"""PEARL (Rakelly et al. 2019): PEARL's SAC with a learned probabilistic context, ``z ~ q(z | c)`` (``hyperrl-paper.md``
§6).

:class:`PEARL` composes, as PEARL's original splits agent and algorithm:

* the algorithm: :class:`~hyperrl.algos.meta_sac.ContextSAC`, MetaSAC's update (its SAC terms unchanged, plus the
  encoder's KL term) and training loop;
* the context provider: :class:`~hyperrl.algos.pearl_encoder.PEARLEncoder`, the encoder ``q(z | c)``, whose ``z``
  the policy and critics condition on;
* the data: :class:`~hyperrl.data.pearl.PEARLData`, per-task RL and encoder buffers, collection with ``z`` from the
  prior or the posterior, meta-batches with their context batches;
* the evaluator: :class:`~hyperrl.algos.meta_eval.AdaptationEvaluator`, exploration episodes with the prior, then
  episodes with the posterior of what the task showed (``eval/{pool}_tasks_return`` after adaptation,
  ``eval/{pool}_tasks_prior_return`` before).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from hyperrl.algos.arguments import check_arguments
from hyperrl.algos.meta_eval import AdaptationEvaluator
from hyperrl.algos.meta_sac import DEFAULT_LR, ContextSAC
from hyperrl.algos.settings import PEARLEvaluation, PEARLReplay
from hyperrl.algos.pearl_encoder import PEARLEncoder, gaussian_kl_to_standard, product_of_gaussians
from hyperrl.data.pearl import PEARLData

__all__ = ["PEARL", "PEARLEncoder", "gaussian_kl_to_standard", "product_of_gaussians", "warn_if_no_posterior_data"]


def warn_if_no_posterior_data(replay: PEARLReplay, horizon: int) -> None:
    """Warn when a posterior phase is too short to act with the posterior at all.

    Every collection starts from the prior and re-infers ``z`` only after ``update_post_train`` episodes (rlkit's
    ``collect_data``), so a phase of at most ``update_post_train`` full episodes acts with prior draws throughout.
    That is rlkit's behaviour and kept, but with long episodes it silently turns "posterior" data into more prior
    data.
    """
    enough = replay.update_post_train * horizon
    for name in ("num_steps_posterior", "num_extra_rl_steps_posterior"):
        steps = getattr(replay, name)
        if 0 < steps <= enough:
            warnings.warn(
                f"replay.{name}={steps} with update_post_train={replay.update_post_train} and {horizon}-step "
                f"episodes: PEARL infers the posterior only after {replay.update_post_train} episode(s), so unless episodes end "
                f"early this phase acts with z from the prior throughout; more than {enough} steps collect "
                "posterior data",
                UserWarning,
                stacklevel=2,
            )


class PEARL(ContextSAC):
    """PEARL: MetaSAC's update with the learned context encoder, PEARL's data and PEARL's evaluation (module docstring).

    Args (besides :class:`~hyperrl.algos.meta_sac.ContextSAC`'s, forwarded through ``**kwargs``):
        latent_dim, encoder_hidden, use_information_bottleneck, use_next_obs_in_context, kl_lambda: the encoder
            (:class:`~hyperrl.algos.pearl_encoder.PEARLEncoder`).
        context_lr: the encoder's learning rate (PEARL: 3e-4).
        replay: :class:`~hyperrl.algos.settings.PEARLReplay`: ContextSAC's, the context sampling
            (``embedding_batch_size``, ``embedding_mini_batch_size``) and the per-task collection
            (``num_steps_prior``, ``num_steps_posterior``, ``num_extra_rl_steps_posterior``, ``update_post_train``,
            :mod:`hyperrl.data.pearl`).
        evaluation: :class:`~hyperrl.algos.settings.PEARLEvaluation`
            (:class:`~hyperrl.algos.meta_eval.AdaptationEvaluator`: exploration episodes, steps per run, runs, and
            whether the exploration episodes sample; the episodes after adaptation are deterministic either way).

    The networks and learning rates are MetaSAC's (``policy``/``critic``/``value``: ``hyper`` or PEARL's 3×300
    MLPs, §6.2), with ``z`` of size ``latent_dim``.
    """

    #: settings that checkpoints written before PEARL was composed of parts carry and PEARL now derives itself; the
    #: CLI drops them when it rebuilds a model from such a checkpoint (``hyperrl.runs.hyperparameters``)
    RETIRED_HPARAMS = frozenset({"context", "context_kwargs", "context_dim", "steps_per_task", "eval_episodes"})
    GROUPS = {**ContextSAC.GROUPS, "replay": PEARLReplay, "evaluation": PEARLEvaluation}

    def __init__(
        self,
        latent_dim: PositiveInt = 5,
        encoder_hidden: Sequence[int] = (200, 200, 200),
        use_information_bottleneck: bool = True,
        use_next_obs_in_context: bool = False,
        kl_lambda: NonNegativeFloat = 0.1,
        context_lr: PositiveFloat = DEFAULT_LR,
        replay: PEARLReplay = PEARLReplay(),
        evaluation: PEARLEvaluation = PEARLEvaluation(),
        **kwargs: Any,
    ) -> None:
        check_arguments(PEARL.__init__, locals())
        super().__init__(replay=replay, evaluation=evaluation, **kwargs)

    def make_context_provider(self) -> PEARLEncoder:
        hp = self.hparams
        return PEARLEncoder(
            self.env_spec.observation_dim, self.env_spec.action_dim, latent_dim=hp.latent_dim,
            hidden=hp.encoder_hidden, use_information_bottleneck=hp.use_information_bottleneck,
            use_next_obs_in_context=hp.use_next_obs_in_context, kl_lambda=hp.kl_lambda,
        )  # fmt: skip

    def make_evaluator(self) -> AdaptationEvaluator:
        ev = self.evaluation
        return AdaptationEvaluator(
            self.context_provider, exploration_episodes=ev.num_exp_traj_eval, steps=ev.num_steps_per_eval,
            runs=ev.num_evals, sample_exploration=ev.eval_sample_exploration,
            use_next_obs=self.hparams.use_next_obs_in_context,
        )  # fmt: skip

    def learning_rates(self) -> dict[str, float]:
        return {**super().learning_rates(), "context": self.hparams.context_lr}

    def make_data(self) -> PEARLData:
        hp, replay = self.hparams, self.replay
        rank = self.global_rank
        env = self._task_env(hp.seed + rank, self._collection_rows())
        warn_if_no_posterior_data(replay, self._horizon(env))
        data = PEARLData(
            env, self.acting_policy(), self.pools, self.context_provider, buffer_size=replay.buffer_size,
            batch_size=replay.batch_size, meta_batch_size=replay.meta_batch_size, initial_steps=replay.initial_steps,
            tasks_per_iteration=replay.tasks_per_iteration, steps_prior=replay.num_steps_prior,
            steps_posterior=replay.num_steps_posterior, extra_rl_steps_posterior=replay.num_extra_rl_steps_posterior,
            update_post_train=replay.update_post_train, embedding_batch_size=replay.embedding_batch_size,
            embedding_mini_batch_size=replay.embedding_mini_batch_size,
            use_next_obs_in_context=hp.use_next_obs_in_context, seed=hp.seed + 1000 * rank,
            horizon=self._horizon(env), device=self.device,
        )  # fmt: skip
        torch.manual_seed(hp.seed + 10_000 * rank + 1)
        return data

    def adapt_on_tasks(self, env, policy, tasks: list[dict], generator: torch.Generator) -> list[list[float]]:
        """One evaluation run on each of ``tasks`` side by side in ``env`` (:meth:`AdaptationEvaluator.adapt`)."""
        return self.evaluator.adapt(env, policy, tasks, self._horizon(env), generator)
