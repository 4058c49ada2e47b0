"""PEARL's data: per-task RL replay buffers, a separate encoder buffer per task, collection with ``z`` from the prior
or the posterior, and meta-batches with their context batches (Rakelly et al. 2019; ``hyperrl-paper.md`` §6.3).

Every train task ``i`` has two TorchRL buffers: the RL buffer (every transition collected on ``i``, for the SAC
losses) and the encoder buffer (the transitions the context ``c`` is sampled from). The encoder buffer of a task is
emptied each time the task is drawn for collection, so it holds only the most recent prior/posterior collection.

One iteration (:meth:`PEARLData.collect`), as rlkit's ``MetaRLAlgorithm.train``:

* iteration 0 only: ``initial_steps`` transitions on every train task with ``z`` from the prior, into both buffers;
* every iteration (the first included): for each of ``tasks_per_iteration`` train tasks drawn at random, empty its
  encoder buffer, then
    - ``steps_prior`` transitions with ``z ~ N(0, I)`` (resampled every episode), into both buffers;
    - ``steps_posterior`` transitions, the posterior ``q(z | c)`` re-inferred every ``update_post_train`` episodes
      from ``embedding_batch_size`` transitions of the encoder buffer (a prior ``z`` until then), into both;
    - ``extra_rl_steps_posterior`` transitions likewise, into the RL buffer only.

Each collection starts from the prior (rlkit's ``clear_z``) and runs whole episodes, the last one cut at the budget
(:meth:`~hyperrl.data.multitask.MultiTaskData.rollout_tasks`). The tasks drawn in an iteration are collected side by
side, one row of the batched env each, with one ``z`` per row; a task drawn twice is collected twice, one run after
the other (:func:`~hyperrl.data.multitask.unique_runs`), so each run sees only its own encoder data, as rlkit's
one-task-at-a-time loop does.

A training batch (:meth:`PEARLData.sample`) is a TensorDict of batch size ``(T,)`` holding the RL transitions
``(T, batch_size, ·)`` of ``T = meta_batch_size`` train tasks (drawn with replacement) and ``"encoder_context"``
``(T, embedding_mini_batch_size, F)``: the context features of the same tasks, ``F = |s| + |a| + 1 (+ |s'|)``.
A context batch of ``embedding_batch_size`` transitions per task serves ``embedding_batch_size //
embedding_mini_batch_size`` consecutive updates, one slice each (rlkit's ``_do_training``), each update with the
same tasks and a fresh RL batch; the authors' configs use one slice (mini = full).

The encoder is duck-typed (``clear_z(rows=R)``, ``sample_z()``, ``infer_posterior(context (R', N, F), rows=...)``;
its current ``z``, one per row, is what ``policy`` acts with), so this module needs no import from
:mod:`hyperrl.algos`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase

from hyperrl.data.multitask import TASK_TRANSITION_KEYS, MultiTaskData, sample_buffers, unique_runs
from hyperrl.data.offpolicy import buffer_state, load_buffer_state
from hyperrl.envs import TaskPools

#: what an encoder buffer keeps: the keys of a context transition
ENCODER_KEYS = ("observation", "action", ("next", "reward"), ("next", "observation"))


def context_features(transitions: TensorDictBase, use_next_obs: bool) -> torch.Tensor:
    """PEARL's context transition ``[s, a, r]`` (``[s, a, r, s']`` with ``use_next_obs``): ``(..., F)``, float32."""
    parts = [transitions.get("observation"), transitions.get("action"), transitions.get(("next", "reward"))]
    if use_next_obs:
        parts.append(transitions.get(("next", "observation")))
    return torch.cat([p.float() for p in parts], dim=-1)


class PEARLData(MultiTaskData):
    """PEARL's buffers and schedule (module docstring) on the train tasks of ``pools``.

    Args:
        env, policy, pools, buffer_size, batch_size, meta_batch_size, initial_steps, tasks_per_iteration, seed, horizon,
            device: as :class:`~hyperrl.data.multitask.MultiTaskData` (``buffer_size`` also bounds each encoder
            buffer).
        encoder: the context encoder whose ``z`` the policy acts with (module docstring).
        steps_prior, steps_posterior, extra_rl_steps_posterior, update_post_train: rlkit's ``num_steps_prior``,
            ``num_steps_posterior``, ``num_extra_rl_steps_posterior``, ``update_post_train``.
        embedding_batch_size, embedding_mini_batch_size: the context batch per task and the slice of it one
            update sees.
        use_next_obs_in_context: whether context features include ``s'``.
    """

    def __init__(
        self,
        env,
        policy: Callable,
        pools: TaskPools,
        encoder,
        buffer_size: int,
        batch_size: int,
        meta_batch_size: int,
        initial_steps: int,
        tasks_per_iteration: int,
        steps_prior: int,
        steps_posterior: int,
        extra_rl_steps_posterior: int,
        update_post_train: int,
        embedding_batch_size: int,
        embedding_mini_batch_size: int,
        use_next_obs_in_context: bool,
        seed: int,
        horizon: int,
        device: torch.device | str = "cpu",
    ) -> None:
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        super().__init__(
            env, policy, pools, buffer_size=buffer_size, batch_size=batch_size, meta_batch_size=meta_batch_size,
            initial_steps=initial_steps, tasks_per_iteration=tasks_per_iteration,
            steps_per_task=steps_prior + steps_posterior + extra_rl_steps_posterior, seed=seed, horizon=horizon,
            device=device,
        )  # fmt: skip
        self.encoder = encoder
        self.steps_prior, self.steps_posterior = steps_prior, steps_posterior
        self.extra_rl_steps_posterior, self.update_post_train = extra_rl_steps_posterior, update_post_train
        self.embedding_batch_size, self.embedding_mini_batch_size = embedding_batch_size, embedding_mini_batch_size
        self.use_next_obs_in_context = use_next_obs_in_context
        self.encoder_buffers = [
            TensorDictReplayBuffer(storage=LazyTensorStorage(buffer_size), batch_size=embedding_batch_size)
            for _ in pools.train
        ]
        # the context batch in use: its tasks, its features (T, embedding_batch_size, F) and the next slice
        self._context: dict | None = None

    # ------------------------------------------------------------------------------------------ collection
    def sample_context(self, index: int) -> torch.Tensor:
        """``embedding_batch_size`` context transitions of task ``index`` from its encoder buffer: ``(N, F)``."""
        return self.sample_contexts([index])[0]

    def sample_contexts(self, tasks: list[int]) -> torch.Tensor:
        """``embedding_batch_size`` context transitions of each task in ``tasks``: ``(len(tasks), N, F)``."""
        transitions = sample_buffers(self.encoder_buffers, tasks, self.embedding_batch_size, ENCODER_KEYS)
        return context_features(transitions, self.use_next_obs_in_context)

    @torch.no_grad()
    def collect_data(self, indices: list[int], steps: int, update_every: int | None, to_encoder: bool) -> list:
        """rlkit's ``collect_data`` on each task of ``indices`` (distinct, side by side in the env's rows):
        ``steps`` transitions starting from the prior; ``z`` resampled after every episode, the posterior
        re-inferred every ``update_every`` episodes (``None``: never) from a context batch of the task's encoder
        buffer; each episode goes into the task's RL buffer and, with ``to_encoder``, its encoder buffer."""
        self.encoder.clear_z(rows=self.rows)

        def after_round(k: int, episodes: list) -> None:
            for index, episode in zip(indices, episodes, strict=True):
                if episode is None:
                    continue
                self.buffers[index].extend(episode.select(*TASK_TRANSITION_KEYS))
                if to_encoder:
                    self.encoder_buffers[index].extend(episode.select(*ENCODER_KEYS))
            if update_every is not None and (k + 1) % update_every == 0:
                rows = [r for r, i in enumerate(indices) if len(self.encoder_buffers[i])]
                if rows:  # the others draw again from the prior
                    context = self.sample_contexts([indices[r] for r in rows]).to(self._encoder_device())
                    self.encoder.infer_posterior(context, rows=rows)
                    return
            self.encoder.sample_z()

        return self.rollout_tasks(indices, steps, after_round)

    def _encoder_device(self) -> torch.device:
        parameter = next(iter(self.encoder.parameters()), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def collect(self) -> TensorDictBase:
        """One iteration of PEARL's schedule (module docstring); returns everything collected."""
        pieces = []
        if self.iterations == 0:
            for run in unique_runs(list(range(len(self.buffers))), self.rows):
                pieces.extend(self.collect_data(run, self.initial_steps, None, True))
        drawn = self.rng.integers(len(self.buffers), size=self.tasks_per_iteration).tolist()
        for run in unique_runs(drawn, self.rows):
            for index in run:
                self.encoder_buffers[index].empty()
            if self.steps_prior > 0:
                pieces.extend(self.collect_data(run, self.steps_prior, None, True))
            if self.steps_posterior > 0:
                pieces.extend(self.collect_data(run, self.steps_posterior, self.update_post_train, True))
            if self.extra_rl_steps_posterior > 0:
                pieces.extend(self.collect_data(run, self.extra_rl_steps_posterior, self.update_post_train, False))
        self.iterations += 1
        return torch.cat(pieces, 0) if pieces else TensorDict({}, [0])

    # ------------------------------------------------------------------------------------------ training batches
    def sample(self) -> TensorDictBase:
        """RL transitions ``(T, batch_size)`` and the next context slice ``"encoder_context"`` of the same tasks."""
        slices = self.embedding_batch_size // self.embedding_mini_batch_size
        if self._context is None or self._context["next"] >= slices:
            tasks = self.rng.integers(len(self.buffers), size=self.meta_batch_size).tolist()
            features = self.sample_contexts(tasks)
            self._context = {"tasks": tasks, "features": features, "next": 0}
        tasks, k, m = self._context["tasks"], self._context["next"], self.embedding_mini_batch_size
        self._context["next"] = k + 1
        batch = sample_buffers(self.buffers, tasks, self.batch_size, TASK_TRANSITION_KEYS)
        batch.batch_size = torch.Size([len(tasks)])
        batch.set("encoder_context", self._context["features"][:, k * m : (k + 1) * m])
        return batch.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["encoder_buffers"] = [buffer_state(b) for b in self.encoder_buffers]
        state["context"] = None if self._context is None else {
            "tasks": list(self._context["tasks"]), "features": self._context["features"].clone(),
            "next": int(self._context["next"]),
        }  # fmt: skip
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for buffer, saved in zip(self.encoder_buffers, state["encoder_buffers"], strict=True):
            load_buffer_state(buffer, saved)
        context = state.get("context")
        self._context = None if context is None else {
            "tasks": list(context["tasks"]), "features": context["features"].clone(), "next": int(context["next"]),
        }  # fmt: skip
