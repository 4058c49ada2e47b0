"""Per-task replay buffers and the collection schedule of PEARL's SAC (``hyperrl-paper.md`` §6.3).

One TorchRL task env is switched between the train tasks (``set_task``: same dynamics, another reward); whole
episodes come from ``env.rollout`` with the current (exploring) policy, and go into the replay buffer of their
task: one uniform ``TensorDictReplayBuffer`` per train task, as PEARL keeps them (measured against one buffer
indexed by task in ``benchmarks/meta_update_speed.py``: sampling 16 × 256 takes a few milliseconds either way,
against hundreds of milliseconds for the update itself, and per-task buffers need no bookkeeping).

The schedule, one *iteration* at a time (:meth:`MultiTaskData.collect`):

* iteration 0: ``initial_steps`` transitions for every train task;
* then: ``steps_per_task`` transitions for each of ``tasks_per_iteration`` train tasks drawn at random.

A collection of ``n`` steps runs whole episodes, the last one cut at the budget (as the authors' sampler does);
that cut is stored as a truncation, so it is bootstrapped like a time limit. Training batches
(:meth:`MultiTaskData.sample`) are meta-batches: ``meta_batch`` train tasks (with replacement) × ``batch_size``
transitions, a TensorDict of batch shape ``(meta_batch, batch_size)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from hyperrl.data.offpolicy import TRANSITION_KEYS, buffer_state, load_buffer_state
from hyperrl.envs import TaskPools, env_state, load_env_state, unwrap_task_env

#: what a meta-RL transition keeps: the off-policy keys plus the oracle context of its task
TASK_TRANSITION_KEYS = (*TRANSITION_KEYS, "context", ("next", "context"))


def _generator_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def sample_buffers(buffers, tasks: list[int], n: int, keys) -> TensorDict:
    """``n`` transitions of each task in ``tasks`` (repeats allowed), drawn uniformly with replacement from its
    ``buffers[task]``: a TensorDict ``(len(tasks), n)`` holding ``keys``.

    The same draws and values as ``torch.stack([buffers[t].sample() for t in tasks])`` with TorchRL's default
    ``RandomSampler`` (one ``torch.randint(len(buffer), (n,))`` per task from torch's global generator, in order),
    less the buffer's ``"index"`` entry. It gathers key by key from the storages' tensors and skips the TensorDict
    built per sample and per task: a meta-batch of 16 × 128, drawn every update, comes about 3× faster
    (``benchmarks/meta_batch_sampling.py``). It reads ``LazyTensorStorage._storage``, the storage's TensorDict:
    torchrl 0.14 has no public accessor that does not first build a view of the filled part.
    """
    empty = sorted({t for t in tasks if len(buffers[t]) == 0})
    if empty:
        raise RuntimeError(f"cannot sample from the empty replay buffers of tasks {empty}")
    index = [torch.randint(0, len(buffers[t]), (n,)) for t in tasks]
    storages = [buffers[t].storage._storage for t in tasks]
    return TensorDict(
        {key: torch.stack([s.get(key)[i] for s, i in zip(storages, index, strict=True)]) for key in keys},
        batch_size=[len(tasks), n],
    )


class MultiTaskData:
    """Collection over the train tasks of ``pools`` and meta-batches from their replay buffers.

    Args:
        env: a TorchRL task env (:func:`hyperrl.envs.make_task_env`, context bounds from ``pools``).
        policy: TensorDictModule ``(observation, context) -> action`` (explores under the default exploration type).
        pools: the task pools; only ``pools.train`` is collected from.
        buffer_size: replay capacity per task.
        batch_size, meta_batch: a training batch is ``meta_batch`` tasks × ``batch_size`` transitions.
        initial_steps, tasks_per_iteration, steps_per_task: the collection schedule (module docstring).
        seed: seeds the draws of tasks (collection and meta-batches).
        device: where sampled batches are moved.
        horizon: the env's episode length (its time limit).
    """

    def __init__(
        self,
        env,
        policy: Callable,
        pools: TaskPools,
        buffer_size: int,
        batch_size: int,
        meta_batch: int,
        initial_steps: int,
        tasks_per_iteration: int,
        steps_per_task: int,
        seed: int,
        horizon: int,
        device: torch.device | str = "cpu",
    ) -> None:
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        self.env, self.policy, self.pools = env, policy, pools
        self.batch_size, self.meta_batch = batch_size, meta_batch
        self.initial_steps, self.tasks_per_iteration, self.steps_per_task = initial_steps, tasks_per_iteration, steps_per_task
        self.horizon = horizon
        self.device = torch.device(device)
        self.buffers = [
            TensorDictReplayBuffer(storage=LazyTensorStorage(buffer_size), batch_size=batch_size)
            for _ in pools.train
        ]
        self.rng = np.random.default_rng(seed)
        self.iterations = 0  # collection iterations done

    # ------------------------------------------------------------------------------------------ collection
    @torch.no_grad()
    def rollout_task(
        self, index: int, steps: int, after_episode: Callable[[TensorDictBase], None] | None = None
    ) -> TensorDictBase:
        """``steps`` transitions on train task ``index`` (whole episodes, the last one cut at the budget), stored
        nowhere; ``after_episode(episode)`` runs after each episode, before the next starts (PEARL stores it and
        updates its posterior there)."""
        unwrap_task_env(self.env).set_task(self.pools.train[index])
        pieces = []
        remaining = steps
        while remaining > 0:
            rollout = self.env.rollout(min(self.horizon, remaining), self.policy, break_when_any_done=True)
            pieces.append(rollout)
            remaining -= rollout.numel()
            if after_episode is not None:
                after_episode(rollout)
        return torch.cat(pieces, 0)

    def collect_task(self, index: int, steps: int) -> TensorDictBase:
        """``steps`` transitions on train task ``index`` (:meth:`rollout_task`), into that task's replay buffer."""
        batch = self.rollout_task(index, steps)
        self.buffers[index].extend(batch.select(*TASK_TRANSITION_KEYS))
        return batch

    def collect(self) -> TensorDictBase:
        """One iteration of the schedule; returns everything collected (for episode statistics)."""
        if self.iterations == 0:
            tasks, steps = list(range(len(self.buffers))), self.initial_steps
        else:
            tasks = self.rng.integers(len(self.buffers), size=self.tasks_per_iteration).tolist()
            steps = self.steps_per_task
        batch = torch.cat([self.collect_task(i, steps) for i in tasks], 0) if steps > 0 else TensorDict({}, [0])
        self.iterations += 1
        return batch

    # ------------------------------------------------------------------------------------------ training batches
    def sample(self) -> TensorDictBase:
        """A meta-batch ``(meta_batch, batch_size)`` from ``meta_batch`` train tasks drawn with replacement."""
        tasks = self.rng.integers(len(self.buffers), size=self.meta_batch).tolist()
        batch = sample_buffers(self.buffers, tasks, self.batch_size, TASK_TRANSITION_KEYS)
        return batch.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        """Transitions stored over all tasks."""
        return sum(len(b) for b in self.buffers)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "buffers": [buffer_state(b) for b in self.buffers],
            "rng": _generator_state(self.rng),
            "iterations": self.iterations,
            "pools": self.pools.state_dict(),
            "env": env_state(self.env),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["pools"] != self.pools.state_dict():
            raise ValueError("the checkpoint's task pools differ from this run's (another task seed or split?)")
        for buffer, saved in zip(self.buffers, state["buffers"], strict=True):
            load_buffer_state(buffer, saved)
        self.rng.bit_generator.state = state["rng"]
        self.iterations = int(state["iterations"])
        load_env_state(self.env, state.get("env"))

    def shutdown(self) -> None:
        self.env.close()
