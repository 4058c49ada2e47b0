"""Evaluators of the context-conditioned SAC (:class:`~hyperrl.algos.meta_sac.ContextSAC`): how a policy is scored on
the evaluated pools of tasks.

Both step the evaluated tasks side by side, one row each of a batched task env, and return
``pool -> metric -> one value per task`` (logged as ``eval/{pool}_tasks_{metric}``):

* :class:`EpisodeEvaluator` (MetaSAC, the oracle context): the mean return of ``episodes`` deterministic episodes
  per task, acting with the task's own context;
* :class:`AdaptationEvaluator` (PEARL): per task, ``exploration_episodes`` episodes with ``z`` from the prior
  (resampled each episode), then episodes with ``z`` from the posterior of everything collected on the task so far
  (re-inferred after each episode), until ``steps`` steps have been taken (whole episodes, as rlkit's
  ``collect_paths``); actions deterministic (rlkit's ``eval_deterministic``), ``z`` sampled. With
  ``sample_exploration`` the exploration episodes sample their actions from the policy, as the training collection
  does whose contexts the encoder learns from; the episodes after adaptation stay deterministic (a deviation from
  rlkit, ``docs/deviations.md``). ``return`` is the return of the last episode (after adaptation),
  ``prior_return`` that of the first (prior ``z``), each averaged over ``runs`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import Tensor

from hyperrl.data.multitask import task_episodes
from hyperrl.data.pearl import context_features
from hyperrl.envs import env_rows

#: at most this many tasks are stepped side by side by :class:`EpisodeEvaluator` (its env's rows)
EVAL_ROWS = 32
#: at most this many evaluation runs are stepped side by side by :class:`AdaptationEvaluator`
EVAL_RUN_ROWS = 128

Pools = dict[str, list[dict]]
Results = dict[str, dict[str, list[float]]]


class EpisodeEvaluator:
    """``episodes`` deterministic episodes per task with the task's context; metric ``return`` (module docstring)."""

    def __init__(self, episodes: int) -> None:
        self.episodes = episodes

    def rows(self, pools: Pools) -> int:
        """The eval env's rows: every evaluated task of a pool side by side (at most ``EVAL_ROWS``)."""
        return min(EVAL_ROWS, max(len(tasks) for tasks in pools.values()))

    @torch.no_grad()
    def evaluate(self, env, policy: Callable, pools: Pools, horizon: int, seed: int, device: torch.device) -> Results:
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        rows = env_rows(env)
        results: Results = {}
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            for pool, tasks in pools.items():
                returns = []
                for start in range(0, len(tasks), rows):
                    per_task = task_episodes(env, policy, tasks[start : start + rows], horizon,
                                             episodes=self.episodes)
                    returns += [float(np.mean([e.get(("next", "reward")).sum().item() for e in episodes]))
                                for episodes in per_task]
                results[pool] = {"return": returns}
        return results


class AdaptationEvaluator:
    """PEARL's evaluation with ``encoder`` (a :class:`~hyperrl.algos.pearl_encoder.PEARLEncoder`): exploration with
    the prior, then adaptation with the posterior; metrics ``return`` and ``prior_return`` (module docstring)."""

    def __init__(self, encoder, exploration_episodes: int, steps: int, runs: int, sample_exploration: bool,
                 use_next_obs: bool) -> None:  # fmt: skip
        self.encoder = encoder
        self.exploration_episodes, self.steps, self.runs = exploration_episodes, steps, runs
        self.sample_exploration, self.use_next_obs = sample_exploration, use_next_obs

    def rows(self, pools: Pools) -> int:
        """Every run of every evaluated task side by side: ``runs`` × the tasks of all pools, in as few equal chunks
        of at most ``EVAL_RUN_ROWS`` rows as fit."""
        total = self.runs * sum(len(tasks) for tasks in pools.values())
        return math.ceil(total / math.ceil(total / EVAL_RUN_ROWS))

    @torch.no_grad()
    def adapt(self, env, policy: Callable, tasks: list[dict], horizon: int,
              generator: torch.Generator) -> list[list[float]]:  # fmt: skip
        """One evaluation run on each of ``tasks``, side by side in the rows of ``env``: per task, the returns of its
        episodes, in order. Actions as the current exploration type says, except that with ``sample_exploration``
        the first ``exploration_episodes`` episodes sample theirs."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        encoder = self.encoder
        encoder.clear_z(generator, rows=env_rows(env))
        seen: list[list[Tensor]] = [[] for _ in tasks]
        episode = [0]  # the round being collected

        def act(td: TensorDictBase) -> TensorDictBase:
            if self.sample_exploration and episode[0] < self.exploration_episodes:
                with set_exploration_type(ExplorationType.RANDOM):
                    return policy(td)
            return policy(td)

        def after_round(k: int, episodes: list) -> None:
            episode[0] = k + 1
            live = [i for i, episode in enumerate(episodes) if episode is not None]
            for i in live:
                seen[i].append(context_features(episodes[i], self.use_next_obs))
            if k + 1 >= self.exploration_episodes and live:
                encoder.infer_posterior([torch.cat(seen[i], 0) for i in live], generator, rows=live)
            else:
                encoder.sample_z(generator)

        per_task = task_episodes(env, act, tasks, horizon, steps=self.steps, cut=False, after_round=after_round)
        return [[e.get(("next", "reward")).sum().item() for e in episodes] for episodes in per_task]

    @torch.no_grad()
    def evaluate(self, env, policy: Callable, pools: Pools, horizon: int, seed: int, device: torch.device) -> Results:
        """The runs of all tasks and pools stepped side by side in the rows of ``env``, in chunks. ``z`` draws come
        from their own generator (``seed + 100``), and sampled actions from torch's generator reseeded
        (``seed + 200``) inside a fork of it, so evaluating changes neither the training's random stream nor its own
        results between identical states."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        rows = env_rows(env)
        generator = torch.Generator().manual_seed(seed + 100)
        runs = [(pool, i) for _ in range(self.runs) for pool, tasks in pools.items() for i in range(len(tasks))]
        episodes: dict[tuple[str, int], list[list[float]]] = {key: [] for key in runs}
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), set_exploration_type(ExplorationType.DETERMINISTIC):
            torch.random.default_generator.manual_seed(seed + 200)
            if cuda:
                torch.cuda.manual_seed(seed + 200)
            for start in range(0, len(runs), rows):
                chunk = runs[start : start + rows]
                returns = self.adapt(env, policy, [pools[pool][i] for pool, i in chunk], horizon, generator)
                for key, run in zip(chunk, returns, strict=True):
                    episodes[key].append(run)
        return {
            pool: {
                "return": [float(np.mean([run[-1] for run in episodes[pool, i]])) for i in range(len(tasks))],
                "prior_return": [float(np.mean([run[0] for run in episodes[pool, i]])) for i in range(len(tasks))],
            }
            for pool, tasks in pools.items()
        }
