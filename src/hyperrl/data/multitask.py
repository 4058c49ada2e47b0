"""Per-task replay buffers and the collection schedule of PEARL's SAC (``hyperrl-paper.md`` §6.3).

The tasks of a collection run side by side: a batched TorchRL task env (:func:`hyperrl.envs.make_task_env`
``num_envs``, one row per task, ``set_task`` on each row: same dynamics, another reward) is stepped by one
``env.rollout`` for all rows with the current (exploring) policy (:func:`task_episodes`), so one TorchRL step and
one policy call serve every task. Whole episodes go into the replay buffer of their task: one uniform
``TensorDictReplayBuffer`` per train task, as PEARL keeps them (per-task buffers need no bookkeeping; their speed
against one buffer indexed by task is in ``docs/benchmarks.md``).

The schedule, one *iteration* at a time (:meth:`MultiTaskData.collect`):

* iteration 0: ``initial_steps`` transitions for every train task;
* then: ``steps_per_task`` transitions for each of ``tasks_per_iteration`` train tasks drawn at random.

A collection of ``n`` steps runs whole episodes, the last one cut at the budget (as the authors' sampler does);
that cut is stored as a truncation, so it is bootstrapped like a time limit. Training batches
(:meth:`MultiTaskData.sample`) are meta-batches: ``meta_batch_size`` train tasks (with replacement) × ``batch_size``
transitions, a TensorDict of batch shape ``(meta_batch_size, batch_size)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from hyperrl.data.offpolicy import TRANSITION_KEYS, buffer_state, load_buffer_state
from hyperrl.envs import TaskPools, env_rows, env_state, load_env_state, task_envs

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
    built per sample and per task (``benchmarks/meta_batch_sampling.py`` times both). It reads ``LazyTensorStorage._storage``, the storage's TensorDict:
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


def unique_runs(tasks: list[int], size: int) -> list[list[int]]:
    """``tasks`` cut, in order, into consecutive runs of at most ``size`` tasks with no task twice in a run (a task
    drawn twice in an iteration is collected twice, one after the other, as when collected one at a time)."""
    runs: list[list[int]] = []
    for task in tasks:
        if not runs or len(runs[-1]) >= size or task in runs[-1]:
            runs.append([])
        runs[-1].append(task)
    return runs


def task_episodes(
    env,
    policy: Callable,
    tasks: list,
    horizon: int,
    steps: int | None = None,
    episodes: int | None = None,
    cut: bool = True,
    after_round: Callable[[int, list[TensorDictBase | None]], None] | None = None,
) -> list[list[TensorDictBase]]:
    """Whole episodes of each of ``tasks`` (task dicts), side by side in the rows of a batched task env (``env``:
    :func:`hyperrl.envs.make_task_env` with ``num_envs >= len(tasks)``; rows beyond the tasks repeat the first task
    and their steps are dropped). Returns, per task, its episodes in order (TensorDicts of batch ``(t,)``).

    Every *round* is one ``env.rollout(horizon)`` from a reset: one episode per task still running, ended at its
    first done (the rest of its row is dropped). A task stops after ``episodes`` episodes, or once ``steps``
    transitions are in: with ``cut`` the last episode is cut at the budget and its last step stored as a truncation
    (``("next", "truncated")`` and ``("next", "done")`` set, so it is bootstrapped like a time limit); without, it
    runs whole (PEARL's evaluation). ``after_round(k, per_task)`` runs after round ``k``, with this round's episode
    of each task (``None`` for tasks already stopped), before the next round starts: a policy that acts with a
    per-task state (PEARL's ``z``) updates it there. Same data as collecting the tasks one at a time, except for the
    order of the policy's random draws.
    """
    if steps is None and episodes is None:
        raise ValueError("task_episodes needs steps or episodes")
    rows = task_envs(env)
    if len(tasks) > len(rows):
        raise ValueError(f"{len(tasks)} tasks do not fit the {env_rows(env)} rows of the env")
    for r, task_env in enumerate(rows):
        task_env.set_task(tasks[r] if r < len(tasks) else tasks[0])
    out: list[list[TensorDictBase]] = [[] for _ in tasks]
    remaining: list[int | None] = [steps] * len(tasks)

    def running(i: int) -> bool:
        return (episodes is None or len(out[i]) < episodes) and (remaining[i] is None or remaining[i] > 0)

    k = 0
    while any(running(i) for i in range(len(tasks))):
        live = [i for i in range(len(tasks)) if running(i)]
        length = horizon
        if cut and steps is not None:
            length = min(horizon, max(remaining[i] for i in live))
        rollout = env.rollout(length, policy, break_when_any_done=False)
        if rollout.batch_dims == 1:  # an unbatched env: one row
            rollout = rollout.unsqueeze(0)
        done = rollout.get(("next", "done")).reshape(rollout.shape)
        this_round: list[TensorDictBase | None] = [None] * len(tasks)
        for i in live:
            ends = done[i].nonzero()
            end = int(ends[0]) + 1 if len(ends) else length
            keep = min(end, remaining[i]) if (cut and remaining[i] is not None) else end
            episode = rollout[i, :keep].clone()
            if keep < end or (keep == length and not bool(done[i, keep - 1])):
                for key in (("next", "truncated"), ("next", "done")):
                    episode.get(key)[keep - 1] = True
            out[i].append(episode)
            this_round[i] = episode
            if remaining[i] is not None:
                remaining[i] -= keep
        if after_round is not None:
            after_round(k, this_round)
        k += 1
    return out


class MultiTaskData:
    """Collection over the train tasks of ``pools`` and meta-batches from their replay buffers.

    Args:
        env: a TorchRL task env (:func:`hyperrl.envs.make_task_env`, context bounds from ``pools``), batched
            (``num_envs``) to collect that many tasks side by side.
        policy: TensorDictModule ``(observation, context) -> action`` (explores under the default exploration type).
        pools: the task pools; only ``pools.train`` is collected from.
        buffer_size: replay capacity per task.
        batch_size, meta_batch_size: a training batch is ``meta_batch_size`` tasks × ``batch_size`` transitions.
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
        meta_batch_size: int,
        initial_steps: int,
        tasks_per_iteration: int,
        steps_per_task: int,
        seed: int,
        horizon: int,
        device: torch.device | str = "cpu",
    ) -> None:
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        self.env, self.policy, self.pools = env, policy, pools
        self.batch_size, self.meta_batch_size = batch_size, meta_batch_size
        self.initial_steps, self.tasks_per_iteration, self.steps_per_task = initial_steps, tasks_per_iteration, steps_per_task
        self.horizon = horizon
        self.rows = env_rows(env)
        self.device = torch.device(device)
        self.buffers = [
            TensorDictReplayBuffer(storage=LazyTensorStorage(buffer_size), batch_size=batch_size)
            for _ in pools.train
        ]
        self.rng = np.random.default_rng(seed)
        self.iterations = 0  # collection iterations done

    # ------------------------------------------------------------------------------------------ collection
    @torch.no_grad()
    def rollout_tasks(
        self,
        indices: list[int],
        steps: int,
        after_round: Callable[[int, list[TensorDictBase | None]], None] | None = None,
    ) -> list[TensorDictBase]:
        """``steps`` transitions on each train task of ``indices`` (distinct, at most the env's rows), side by side
        (:func:`task_episodes`: whole episodes, the last one cut at the budget), stored nowhere; per task, its
        transitions. ``after_round`` as :func:`task_episodes` (PEARL stores episodes and updates ``z`` there)."""
        tasks = [self.pools.train[i] for i in indices]
        episodes = task_episodes(self.env, self.policy, tasks, self.horizon, steps=steps, after_round=after_round)
        return [torch.cat(e, 0) for e in episodes]

    def collect_tasks(self, indices: list[int], steps: int) -> list[TensorDictBase]:
        """``steps`` transitions on each train task of ``indices``, in runs of distinct tasks that fit the env
        (:func:`unique_runs`), into the tasks' replay buffers."""
        out = []
        for run in unique_runs(indices, self.rows):
            for index, batch in zip(run, self.rollout_tasks(run, steps), strict=True):
                self.buffers[index].extend(batch.select(*TASK_TRANSITION_KEYS))
                out.append(batch)
        return out

    def collect(self) -> TensorDictBase:
        """One iteration of the schedule; returns everything collected (for episode statistics)."""
        if self.iterations == 0:
            tasks, steps = list(range(len(self.buffers))), self.initial_steps
        else:
            tasks = self.rng.integers(len(self.buffers), size=self.tasks_per_iteration).tolist()
            steps = self.steps_per_task
        batch = torch.cat(self.collect_tasks(tasks, steps), 0) if steps > 0 else TensorDict({}, [0])
        self.iterations += 1
        return batch

    # ------------------------------------------------------------------------------------------ training batches
    def sample(self) -> TensorDictBase:
        """A meta-batch ``(meta_batch_size, batch_size)``: ``meta_batch_size`` train tasks, drawn with replacement."""
        tasks = self.rng.integers(len(self.buffers), size=self.meta_batch_size).tolist()
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
