"""PEARL (Rakelly et al. 2019): MetaSAC with a learned probabilistic context, ``z ~ q(z | c)`` (``hyperrl-paper.md`` §6).

The encoder (:class:`PEARLEncoder`, the ``pearl`` context provider) maps each context transition ``c_n = (s, a, r)``
(``(s, a, r, s')`` with ``use_next_obs_in_context``) of a task to a Gaussian factor, an MLP (3×200, rlkit's init)
with output ``(μ_n, σ̃_n)``, ``σ_n² = max(softplus(σ̃_n), 1e-7)``; the posterior is their product::

    q(z | c_1..N) ∝ Π_n N(z; μ_n, σ_n²)   =>   σ² = 1 / Σ_n σ_n^-2,   μ = σ² Σ_n μ_n / σ_n²     (per latent dim)

``z = μ + σ ε`` (reparameterised, one per task), and the loss gains ``kl_lambda · Σ_tasks Σ_dims KL(q ‖ N(0, I))``
with ``KL = ½ (σ² + μ² − 1 − log σ²)``. With the information bottleneck off the encoder outputs ``z_n`` only and
``z = mean_n z_n`` (deterministic, no KL term).

Gradients (:meth:`~hyperrl.algos.meta_sac.MetaSAC.losses`, whose SAC terms are unchanged): ``z`` reaches the encoder
through ``L_Q`` only, plus the KL term; the policy, ``V`` and the min-Q term see ``z̄ = z.detach()``.

:class:`PEARL` is MetaSAC with this provider, PEARL's data (:class:`~hyperrl.data.pearl.PEARLData`: per-task RL
and encoder buffers, collection with ``z`` from the prior or the posterior) and PEARL's evaluation: on each task
(every run of every evaluated task side by side, one row each of the evaluation env, one ``q`` and ``z`` per row),
``num_exp_traj_eval`` exploration episodes with ``z`` from the prior (resampled each episode), then episodes
with ``z`` from the posterior of everything collected on the task so far (re-inferred after each episode), until
``num_steps_per_eval`` steps have been taken (whole episodes, as rlkit's ``collect_paths``); actions
deterministic (rlkit's ``eval_deterministic``), ``z`` sampled. With ``eval_sample_exploration`` the exploration
episodes sample their actions from the policy, as the training collection does whose contexts the encoder learns
from; the episodes after adaptation stay deterministic (a deviation from rlkit, ``docs/deviations.md``). ``eval/{pool}_tasks_return`` is the return of the last episode (after adaptation),
``eval/{pool}_tasks_prior_return`` that of the first (prior ``z``), each averaged over ``num_evals`` runs and the
tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from torch import Tensor, nn

from hyperrl.algos.context import CONTEXT_PROVIDERS, ContextProvider
from hyperrl.algos.meta_sac import DEFAULT_LR, MetaSAC
from hyperrl.errors import ConfigurationError, require_non_negative_int, require_positive
from hyperrl.nn.meta_critics import pearl_last_layer, pearl_trunk

#: the lower clamp of each factor's variance (rlkit's ``product_of_gaussians``)
MIN_VARIANCE = 1e-7
#: at most this many evaluation runs are stepped side by side (the eval env's rows, :meth:`PEARL._eval_rows`)
EVAL_RUN_ROWS = 128


def product_of_gaussians(mu: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., N, L)`` factors -> ``(..., L)`` mean and variance of their normalised product (module docstring)."""
    var = var.clamp(min=MIN_VARIANCE)
    precision = var.reciprocal().sum(-2)
    posterior_var = precision.reciprocal()
    return posterior_var * (mu / var).sum(-2), posterior_var


def gaussian_kl_to_standard(mu: Tensor, var: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` per dimension: ``½ (σ² + μ² − 1 − log σ²)``, the shape of ``mu``."""
    return 0.5 * (var + mu.square() - 1.0 - var.log())


class PEARLEncoder(ContextProvider):
    """PEARL's context encoder ``q(z | c)`` (module docstring) and the ``z`` it acts with.

    Args:
        observation_dim, action_dim: the env's sizes (the context transition has ``|s| + |a| + 1 (+ |s|)`` entries).
        latent_dim: the size of ``z`` (PEARL: 5).
        hidden: the MLP's hidden widths (PEARL: 3×200).
        use_information_bottleneck: Gaussian factors and their product (``True``), or a deterministic mean.
        use_next_obs_in_context: include ``s'`` in the context transition.
        kl_lambda: the weight of the KL term.

    Acting, one ``q`` and one ``z`` per row of the env acted in (rows side by side, one task each):
    :meth:`clear_z` (``q`` := the prior ``N(0, I)`` on ``rows`` rows, draw ``z``), :meth:`infer_posterior` (``q``
    of some rows := the posterior of their contexts, draw ``z`` on every row), :meth:`sample_z` (draw ``z`` from the
    current ``q``); :meth:`acting` returns the rows' ``z`` whatever the env's context. Not part of the
    ``state_dict``: every collection and evaluation starts with :meth:`clear_z`.
    """

    algorithm = "PEARL"

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        latent_dim: int = 5,
        hidden: Sequence[int] = (200, 200, 200),
        use_information_bottleneck: bool = True,
        use_next_obs_in_context: bool = False,
        kl_lambda: float = 0.1,
    ) -> None:
        super().__init__()
        require_positive("latent_dim", latent_dim, integer=True)
        if isinstance(kl_lambda, bool) or not isinstance(kl_lambda, (int, float)) or not kl_lambda >= 0:
            raise ConfigurationError(f"kl_lambda={kl_lambda!r} is not allowed: expected a number >= 0")
        for name, flag in (("use_information_bottleneck", use_information_bottleneck),
                           ("use_next_obs_in_context", use_next_obs_in_context)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name}={flag!r} is not allowed: expected true or false")
        hidden = [int(h) for h in hidden]
        for h in hidden:
            require_positive("hidden width", h, integer=True)
        self.output_dim = int(latent_dim)
        self.use_information_bottleneck = use_information_bottleneck
        self.use_next_obs_in_context = use_next_obs_in_context
        self.kl_lambda = float(kl_lambda)
        self.input_dim = observation_dim + action_dim + 1 + (observation_dim if use_next_obs_in_context else 0)
        outputs = 2 * latent_dim if use_information_bottleneck else latent_dim
        self.net = nn.Sequential(*pearl_trunk(self.input_dim, hidden),
                                 pearl_last_layer(hidden[-1] if hidden else self.input_dim, outputs, 3e-3))
        self._z: Tensor | None = None
        self._mu: Tensor | None = None
        self._var: Tensor | None = None

    @classmethod
    def from_spec(cls, env_spec, **kwargs) -> PEARLEncoder:
        return cls(env_spec.observation_dim, env_spec.action_dim, **kwargs)

    # ------------------------------------------------------------------------------------------ q(z | c)
    def factors(self, context: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(T, N, F) ->`` the per-transition ``(μ_n, σ_n²)`` ``(T, N, L)`` each (``σ_n²`` is ``None`` without the
        bottleneck, ``μ_n`` then being the deterministic ``z_n``)."""
        if context.shape[-1] != self.input_dim:
            raise ValueError(f"context transitions have {context.shape[-1]} features, the encoder expects "
                             f"{self.input_dim}")
        out = self.net(context)
        # the factors and their product in fp32 at least: under bf16 autocast the linears run in bf16, and a product
        # over many transitions (a sum of precisions) needs fp32's mantissa; ``q`` is kept in fp32 between calls
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        if not self.use_information_bottleneck:
            return out, None
        mu, raw = out.split(self.output_dim, dim=-1)
        return mu, F.softplus(raw)

    def posterior(self, context: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(T, N, F) ->`` ``q(z | c)``'s mean and variance ``(T, L)`` (variance ``None`` without the bottleneck)."""
        mu, var = self.factors(context)
        if var is None:
            return mu.mean(-2), None
        return product_of_gaussians(mu, var)

    def infer(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        mu, var = self.posterior(batch.get("encoder_context"))
        if var is None:
            return mu.unsqueeze(-2), {}
        z = mu + var.sqrt() * torch.randn_like(mu)
        kl = gaussian_kl_to_standard(mu, var).sum()
        return z.unsqueeze(-2), {"kl_loss": self.kl_lambda * kl}

    # ------------------------------------------------------------------------------------------ acting
    def _device(self) -> torch.device:
        return self.net[0].weight.device

    def clear_z(self, generator: torch.Generator | None = None, rows: int = 1) -> None:
        """Reset ``q`` to the prior ``N(0, I)`` (deterministic variant: ``z = 0``) on ``rows`` rows and draw ``z``."""
        device = self._device()
        self._mu = torch.zeros(rows, self.output_dim, device=device)
        self._var = torch.ones(rows, self.output_dim, device=device) if self.use_information_bottleneck else None
        self.sample_z(generator)

    @torch.no_grad()
    def infer_posterior(self, context, generator: torch.Generator | None = None, rows: Sequence[int] | None = None):
        """``q`` of ``rows`` (default: every row, in order) := the posterior of their contexts, then draw ``z`` on
        every row (the other rows from their current ``q``). ``context``: ``(len(rows), N, F)``, or one ``(N_r, F)``
        per row when their lengths differ."""
        if self._mu is None:
            self.clear_z(rows=len(context) if rows is None else max(rows) + 1)
        rows = list(range(self._mu.shape[0])) if rows is None else list(rows)
        if len(context) != len(rows):
            raise ValueError(f"{len(context)} contexts for {len(rows)} rows")
        if torch.is_tensor(context):
            mu, var = self.posterior(context.to(self._device()))
        else:
            parts = [self.posterior(c.to(self._device()).unsqueeze(0)) for c in context]
            mu = torch.cat([p[0] for p in parts], 0)
            var = None if parts[0][1] is None else torch.cat([p[1] for p in parts], 0)
        self._mu = self._mu.clone()
        self._mu[rows] = mu
        if var is not None:
            self._var = self._var.clone()
            self._var[rows] = var
        self.sample_z(generator)

    def sample_z(self, generator: torch.Generator | None = None) -> None:
        """Draw ``z`` from the current ``q`` of every row (its mean without the bottleneck)."""
        if self._mu is None:
            self.clear_z(generator)
            return
        if self._var is None:
            self._z = self._mu
        else:
            noise = torch.randn(self._mu.shape, generator=generator, device="cpu").to(self._mu.device)
            self._z = self._mu + self._var.sqrt() * noise

    def acting(self, context: Tensor) -> Tensor:
        """The rows' ``z``: ``(R, L)`` for a batched env's context ``(R, c)``, ``(L,)`` for one row's ``(c,)``."""
        if self._z is None:
            self.clear_z(rows=context.shape[0] if context.dim() > 1 else 1)
        z = self._z.to(context.device)
        if context.dim() == 1:
            if z.shape[0] != 1:
                raise ValueError(f"one context for {z.shape[0]} rows of z")
            return z[0]
        if context.shape[:-1] != z.shape[:1]:
            if z.shape[0] == 1:
                return z[0].expand(*context.shape[:-1], self.output_dim)
            raise ValueError(f"contexts of batch {tuple(context.shape[:-1])} for {z.shape[0]} rows of z")
        return z


CONTEXT_PROVIDERS["pearl"] = PEARLEncoder


def warn_if_no_posterior_data(hp, horizon: int) -> None:
    """Warn when a posterior phase is too short to act with the posterior at all.

    Every collection starts from the prior and re-infers ``z`` only after ``update_post_train`` episodes (rlkit's
    ``collect_data``), so a phase of at most ``update_post_train`` full episodes acts with prior draws throughout.
    That is rlkit's behaviour and kept, but with long episodes it silently turns "posterior" data into more prior
    data (it did so in this library's own PEARL demo, 100 extra steps of 100-step episodes).
    """
    import warnings

    enough = hp.update_post_train * horizon
    for name in ("num_steps_posterior", "num_extra_rl_steps_posterior"):
        steps = hp[name]
        if 0 < steps <= enough:
            warnings.warn(
                f"{name}={steps} with update_post_train={hp.update_post_train} and {horizon}-step episodes: "
                f"PEARL infers the posterior only after {hp.update_post_train} episode(s), so unless episodes end "
                f"early this phase acts with z from the prior throughout; more than {enough} steps collect "
                "posterior data",
                UserWarning,
                stacklevel=2,
            )


class PEARL(MetaSAC):
    """PEARL: MetaSAC with the learned context encoder, PEARL's data and PEARL's evaluation (module docstring).

    Args (besides :class:`~hyperrl.algos.meta_sac.MetaSAC`'s, forwarded through ``**kwargs``; ``context``,
    ``context_kwargs``, ``context_dim`` and ``steps_per_task`` are set here):
        latent_dim, encoder_hidden, use_information_bottleneck, use_next_obs_in_context, kl_lambda: the encoder
            (:class:`PEARLEncoder`).
        context_lr: the encoder's learning rate (PEARL: 3e-4).
        embedding_batch_size, embedding_mini_batch_size: context transitions per task sampled, and per update used.
        num_steps_prior, num_steps_posterior, num_extra_rl_steps_posterior, update_post_train: the per-task
            collection (:mod:`hyperrl.data.pearl`); ``initial_steps``, ``tasks_per_iteration`` and
            ``updates_per_iteration`` are MetaSAC's (rlkit's ``num_initial_steps``, ``num_tasks_sample``,
            ``num_train_steps_per_itr``).
        num_exp_traj_eval, num_steps_per_eval, num_evals: the evaluation (module docstring).
        eval_sample_exploration: sample the exploration episodes' actions in evaluation (default: deterministic,
            rlkit's); the episodes after adaptation are deterministic either way.

    The networks and learning rates are MetaSAC's (``policy``/``critic``/``value``: ``hyper`` or PEARL's 3×300
    MLPs, §6.2), with ``z`` of size ``latent_dim``.
    """

    def __init__(
        self,
        latent_dim: int = 5,
        encoder_hidden: Sequence[int] = (200, 200, 200),
        use_information_bottleneck: bool = True,
        use_next_obs_in_context: bool = False,
        kl_lambda: float = 0.1,
        context_lr: float = DEFAULT_LR,
        embedding_batch_size: int = 100,
        embedding_mini_batch_size: int = 100,
        num_steps_prior: int = 400,
        num_steps_posterior: int = 0,
        num_extra_rl_steps_posterior: int = 600,
        update_post_train: int = 1,
        num_exp_traj_eval: int = 2,
        num_steps_per_eval: int = 600,
        num_evals: int = 1,
        eval_sample_exploration: bool = False,
        **kwargs: Any,
    ) -> None:
        fixed = {
            "context": "pearl",
            "context_kwargs": {"latent_dim": latent_dim, "hidden": list(encoder_hidden),
                               "use_information_bottleneck": use_information_bottleneck,
                               "use_next_obs_in_context": use_next_obs_in_context, "kl_lambda": kl_lambda},
            "steps_per_task": num_steps_prior + num_steps_posterior + num_extra_rl_steps_posterior,
        }  # fmt: skip
        # set here; a checkpoint's hyperparameters hold the same values, a CLI may pass context_dim=None
        for name, allowed in (*fixed.items(), ("context_dim", None)):
            if name in kwargs and kwargs.pop(name) != allowed:
                raise ConfigurationError(f"{name} is not allowed with PEARL: it is set from the PEARL arguments")
        for name, value in (("embedding_batch_size", embedding_batch_size),
                            ("embedding_mini_batch_size", embedding_mini_batch_size),
                            ("update_post_train", update_post_train), ("num_steps_per_eval", num_steps_per_eval),
                            ("num_evals", num_evals)):
            require_positive(name, value, integer=True)
        for name, value in (("num_steps_prior", num_steps_prior), ("num_steps_posterior", num_steps_posterior),
                            ("num_extra_rl_steps_posterior", num_extra_rl_steps_posterior),
                            ("num_exp_traj_eval", num_exp_traj_eval)):
            require_non_negative_int(name, value)
        require_positive("context_lr", context_lr)
        if not isinstance(eval_sample_exploration, bool):
            raise ConfigurationError(f"eval_sample_exploration={eval_sample_exploration!r} is not allowed: expected "
                                     "true or false")
        if embedding_batch_size % embedding_mini_batch_size:
            raise ConfigurationError(
                f"embedding_mini_batch_size={embedding_mini_batch_size} is not allowed: it must divide "
                f"embedding_batch_size={embedding_batch_size}"
            )
        super().__init__(  # explicit keywords: a CLI then leaves these out of PEARL's options
            context=fixed["context"], context_kwargs=fixed["context_kwargs"], steps_per_task=fixed["steps_per_task"],
            **kwargs,
        )  # fmt: skip

    def learning_rates(self) -> dict[str, float]:
        return {**super().learning_rates(), "context": self.hparams.context_lr}

    def make_data(self):
        from hyperrl.data.pearl import PEARLData

        hp = self.hparams
        rank = self.global_rank
        env = self._task_env(hp.seed + rank, self._collection_rows())
        warn_if_no_posterior_data(hp, self._horizon(env))
        data = PEARLData(
            env, self.acting_policy(), self.pools, self.context_provider, buffer_size=hp.buffer_size,
            batch_size=hp.batch_size, meta_batch=hp.meta_batch, initial_steps=hp.initial_steps,
            tasks_per_iteration=hp.tasks_per_iteration, steps_prior=hp.num_steps_prior,
            steps_posterior=hp.num_steps_posterior, extra_rl_steps_posterior=hp.num_extra_rl_steps_posterior,
            update_post_train=hp.update_post_train, embedding_batch_size=hp.embedding_batch_size,
            embedding_mini_batch_size=hp.embedding_mini_batch_size,
            use_next_obs_in_context=hp.use_next_obs_in_context, seed=hp.seed + 1000 * rank,
            horizon=self._horizon(env), device=self.device,
        )  # fmt: skip
        torch.manual_seed(hp.seed + 10_000 * rank + 1)
        return data

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def adapt_on_tasks(self, env, policy, tasks: list[dict], generator: torch.Generator) -> list[list[float]]:
        """One evaluation run on each of ``tasks``, side by side in the rows of ``env``: per task, the returns of its
        episodes, in order (module docstring). Actions as the current exploration type says, except that with
        ``eval_sample_exploration`` the first ``num_exp_traj_eval`` episodes sample theirs."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        from hyperrl.data.multitask import task_episodes
        from hyperrl.data.pearl import context_features
        from hyperrl.envs import env_rows

        hp = self.hparams
        encoder: PEARLEncoder = self.context_provider
        encoder.clear_z(generator, rows=env_rows(env))
        seen: list[list[Tensor]] = [[] for _ in tasks]
        episode = [0]  # the round being collected

        def act(td: TensorDictBase) -> TensorDictBase:
            if hp.eval_sample_exploration and episode[0] < hp.num_exp_traj_eval:
                with set_exploration_type(ExplorationType.RANDOM):
                    return policy(td)
            return policy(td)

        def after_round(k: int, episodes: list) -> None:
            episode[0] = k + 1
            live = [i for i, episode in enumerate(episodes) if episode is not None]
            for i in live:
                seen[i].append(context_features(episodes[i], hp.use_next_obs_in_context))
            if k + 1 >= hp.num_exp_traj_eval and live:
                encoder.infer_posterior([torch.cat(seen[i], 0) for i in live], generator, rows=live)
            else:
                encoder.sample_z(generator)

        per_task = task_episodes(env, act, tasks, self._horizon(env), steps=hp.num_steps_per_eval, cut=False,
                                 after_round=after_round)
        return [[e.get(("next", "reward")).sum().item() for e in episodes] for episodes in per_task]

    def _eval_rows(self) -> int:
        """Every evaluation run of every evaluated task side by side: ``num_evals`` × the tasks of all pools, in as
        few equal chunks of at most ``EVAL_RUN_ROWS`` rows as fit."""
        total = self.hparams.num_evals * sum(len(tasks) for tasks in self.eval_tasks().values())
        return math.ceil(total / math.ceil(total / EVAL_RUN_ROWS))

    @torch.no_grad()
    def evaluate_pools(self) -> dict[str, dict[str, list[float]]]:
        """Per pool and task: ``return`` (the last episode's, after adaptation) and ``prior_return`` (the first's),
        each the mean over ``num_evals`` runs. The runs of all tasks and pools are stepped side by side, in the rows
        of one env (:meth:`_eval_rows`). ``z`` draws come from their own seeded generator, and sampled actions
        (``eval_sample_exploration``) from torch's generator reseeded inside a fork of it, so evaluating changes
        neither the training's random stream nor its own results between identical states."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        from hyperrl.envs import env_rows

        env = self._eval_env()
        policy = self.acting_policy()
        rows = env_rows(env)
        generator = torch.Generator().manual_seed(self.hparams.seed + 100 + self.global_rank)
        pools = self.eval_tasks()
        runs = [(pool, i) for _ in range(self.hparams.num_evals) for pool, tasks in pools.items()
                for i in range(len(tasks))]
        episodes: dict[tuple[str, int], list[list[float]]] = {key: [] for key in runs}
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), set_exploration_type(ExplorationType.DETERMINISTIC):
            seed = self.hparams.seed + 200 + self.global_rank
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
            for start in range(0, len(runs), rows):
                chunk = runs[start : start + rows]
                returns = self.adapt_on_tasks(env, policy, [pools[pool][i] for pool, i in chunk], generator)
                for key, run in zip(chunk, returns, strict=True):
                    episodes[key].append(run)
        return {
            pool: {
                "return": [float(np.mean([run[-1] for run in episodes[pool, i]])) for i in range(len(tasks))],
                "prior_return": [float(np.mean([run[0] for run in episodes[pool, i]])) for i in range(len(tasks))],
            }
            for pool, tasks in pools.items()
        }
