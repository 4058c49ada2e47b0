"""A plain-PyTorch + multiprocessing episodic sampler the way the MAML authors sample (for ``maml_speed.py``).

The authors' ``maml_rl`` (``BatchSampler`` over a ``SubprocVecEnv``, ``BatchEpisodes``) samples one task at a time:

* ``num_workers`` worker processes (their default ``cpu_count - 1``), each owning one gym env;
* per task: the task is set on every worker, the episode ids ``0 .. batch_size - 1`` go into a multiprocessing
  queue followed by one ``None`` per worker, and every worker takes its next id from the queue when its episode
  ends (``None``: the worker idles, reporting zeros, until the batch is over);
* the parent steps all workers in lockstep: one torch forward of the policy on the stacked observations of the
  workers (no grad), actions sent down one pipe per worker, one ``(obs, reward, done, id, info)`` back from each;
* transitions are appended per episode id into numpy lists and padded to the longest episode at the end.

This module re-implements that way for our gymnasium task families (``gymnasium.make(env_id)``, the task set with
the env's ``set_task``) and our policies: :class:`ReferenceSampler` owns the processes, :func:`policy_actor` runs
the MAML module's own policy (same parameters, the task-only part computed once per batch as the authors'
``get_z``), :func:`reference_meta_batch` is the sampling phase of one meta-update (train episodes, baseline + GAE,
one inner step, validation episodes, per task in turn) with the MAML module's own math, so that only the sampler
differs from ``MAML.sample_meta_batch``.

Shutdown: :meth:`ReferenceSampler.close` (also on leaving a ``with`` block, and at interpreter exit) asks each
worker to stop, joins it with a timeout and terminates what is left; workers are daemonic and also exit when the
parent's end of their pipe goes away. A worker's exception is sent back and raised in the parent; an error during
:meth:`~ReferenceSampler.sample` (a worker's, a dead worker, the actor's) also shuts the workers down.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import traceback
import weakref

import numpy as np


# ---------------------------------------------------------------------------------------------------------- worker
def _worker(conn, env_id: str, queue, seed: int) -> None:
    """One worker process: owns one env and answers ``(command, data)`` messages until ``close`` or EOF."""
    try:
        import gymnasium as gym

        import hyperrl.envs  # noqa: F401  (registers the task families)

        env = gym.make(env_id)
        shape = env.observation_space.shape
        seeded = False
        episode = None  # the id of the episode this worker is running; None: nothing (more) to run

        def next_episode():
            nonlocal episode, seeded
            episode = queue.get(True)
            if episode is None:
                return np.zeros(shape, dtype=np.float32)
            obs, _ = env.reset(seed=None if seeded else seed)
            seeded = True
            return obs

        while True:
            try:
                command, data = conn.recv()
            except (EOFError, OSError):
                return
            try:
                if command == "step":
                    if episode is None:
                        conn.send((True, (np.zeros(shape, dtype=np.float32), 0.0, True, None, {})))
                        continue
                    obs, reward, terminated, truncated, info = env.step(data)
                    done = bool(terminated or truncated)
                    if done:
                        obs = next_episode()
                    conn.send((True, (obs, float(reward), done, episode, info)))
                elif command == "reset":
                    obs = next_episode()
                    conn.send((True, (obs, episode)))
                elif command == "set_task":
                    env.unwrapped.set_task(data)
                    conn.send((True, None))
                elif command == "close":
                    conn.send((True, None))
                    return
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception:  # noqa: BLE001  (sent to the parent, which raises it)
                conn.send((False, traceback.format_exc()))
    finally:
        try:
            conn.close()
        except OSError:
            pass


_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sampler in list(_OPEN):
        sampler.close()


# ---------------------------------------------------------------------------------------------------------- sampler
class Episodes:
    """One batch's transitions per episode id (numpy lists), padded on demand: the authors' ``BatchEpisodes``."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.observations = [[] for _ in range(batch_size)]
        self.actions = [[] for _ in range(batch_size)]
        self.rewards = [[] for _ in range(batch_size)]

    def append(self, observations, actions, rewards, ids) -> None:
        for obs, action, reward, i in zip(observations, actions, rewards, ids):
            if i is None:
                continue
            self.observations[i].append(np.asarray(obs, dtype=np.float32))
            self.actions[i].append(np.asarray(action, dtype=np.float32))
            self.rewards[i].append(np.float32(reward))

    @property
    def lengths(self) -> list[int]:
        return [len(r) for r in self.rewards]

    def padded(self) -> dict[str, np.ndarray]:
        """``observation (E, T, S)``, ``action (E, T, A)``, ``reward (E, T)``, ``mask (E, T)``, ``T`` the longest
        episode; zeros after an episode's end."""
        e, t = self.batch_size, max(self.lengths)
        obs = np.zeros((e, t) + self.observations[0][0].shape, dtype=np.float32)
        act = np.zeros((e, t) + self.actions[0][0].shape, dtype=np.float32)
        rew = np.zeros((e, t), dtype=np.float32)
        mask = np.zeros((e, t), dtype=np.float32)
        for i, n in enumerate(self.lengths):
            obs[i, :n] = np.stack(self.observations[i])
            act[i, :n] = np.stack(self.actions[i])
            rew[i, :n] = self.rewards[i]
            mask[i, :n] = 1.0
        return {"observation": obs, "action": act, "reward": rew, "mask": mask}

    def tensors(self, context):
        """:meth:`padded` as torch tensors in the layout of one task of ``OnPolicyData.rollout`` (``context``
        broadcast to ``(E, T, c)``), plus ``return (E,)``."""
        import torch

        out = {k: torch.from_numpy(v) for k, v in self.padded().items()}
        e, t = out["mask"].shape
        out["context"] = torch.as_tensor(context, dtype=torch.float32).reshape(1, 1, -1).expand(e, t, -1)
        out["return"] = out["reward"].sum(-1)
        return out


class ReferenceSampler:
    """``workers`` processes, each with one ``gymnasium.make(env_id)``; :meth:`sample` runs ``batch_size`` episodes
    of the current task (:meth:`set_task`) the authors' way (module docstring)."""

    def __init__(self, env_id: str, workers: int, seed: int = 0, start_method: str = "spawn",
                 join_timeout: float = 10.0) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers!r}: expected at least 1")
        self.env_id, self.workers, self.join_timeout = env_id, int(workers), float(join_timeout)
        self.closed = False
        ctx = mp.get_context(start_method)
        self.queue = ctx.Queue()
        self.remotes, self.processes = [], []
        _OPEN.add(self)
        try:
            for w in range(self.workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, env_id, self.queue, seed + w), daemon=True,
                                name=f"maml-reference-worker-{w}")
                p.start()
                child.close()  # the parent keeps only its end: a dead worker then reads as EOF, not a hang
                self.remotes.append(parent)
                self.processes.append(p)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ReferenceSampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _recv(self, remote):
        try:
            ok, payload = remote.recv()
        except (EOFError, OSError) as err:
            raise RuntimeError("a reference sampler worker died") from err
        if not ok:
            raise RuntimeError(f"reference sampler worker failed:\n{payload}")
        return payload

    def _send(self, remote, message) -> None:
        try:
            remote.send(message)
        except OSError as err:
            raise RuntimeError("a reference sampler worker died") from err

    def _gather(self) -> list:
        """One reply from every worker (all of them read, so none is left in a pipe), then the first error."""
        replies, error = [], None
        for remote in self.remotes:
            try:
                replies.append(self._recv(remote))
            except RuntimeError as err:
                error = error or err
        if error is not None:
            raise error
        return replies

    def _all(self, command: str, data=None) -> list:
        for remote in self.remotes:
            self._send(remote, (command, data))
        return self._gather()

    def set_task(self, task: dict) -> None:
        """The authors' ``reset_task``: the task on every worker."""
        self._all("set_task", task)

    def sample(self, actor, batch_size: int) -> Episodes:
        """``batch_size`` whole episodes of the current task; ``actor(observations (W, S) float32) -> actions (W, A)``
        numpy, called once per lockstep step."""
        if self.closed:
            raise RuntimeError("ReferenceSampler.sample() after close()")
        episodes = Episodes(batch_size)
        try:
            for i in range(batch_size):
                self.queue.put(i)
            for _ in range(self.workers):
                self.queue.put(None)
            observations, ids = zip(*self._all("reset"))
            observations = np.stack(observations)
            while any(i is not None for i in ids):
                actions = actor(observations)
                for remote, action in zip(self.remotes, actions):
                    self._send(remote, ("step", action))
                new_obs, rewards, _dones, new_ids, _infos = zip(*self._gather())
                episodes.append(observations, actions, rewards, ids)
                observations, ids = np.stack(new_obs), new_ids
        except BaseException:
            self.close()  # ids of an unfinished batch are left in the queue: the workers cannot be reused
            raise
        return episodes

    def close(self) -> None:
        """Stop the workers (idempotent): ``close`` to each, join with a timeout, terminate and join what is left."""
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        for remote in self.remotes:
            try:
                remote.send(("close", None))
            except (OSError, ValueError):
                pass
        for p in self.processes:
            p.join(self.join_timeout)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
                p.join(self.join_timeout)
            if p.is_alive():
                p.kill()
                p.join()
        for remote in self.remotes:
            remote.close()
        self.queue.cancel_join_thread()  # never block on ids nobody will read
        self.queue.close()


# ---------------------------------------------------------------------------------------------------------- policy
def policy_actor(maml, params, context, generator):
    """``actor(observations) -> actions`` (numpy) with ``π_params`` of the MAML module's policy for one task: the
    task-only part once (the authors' ``get_z``), then per step one forward and ``a = μ + σ·ε``, no grad."""
    import torch

    ctx = torch.as_tensor(context, dtype=torch.float32).reshape(1, -1)
    with torch.no_grad():
        cond = maml._run(params, "condition", ctx if maml.policy.uses_context else None)

    def actor(observations: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            loc, scale = maml._run(params, "forward", torch.from_numpy(observations), cond)
            return (loc + scale * torch.randn(loc.shape, generator=generator, dtype=loc.dtype)).numpy()

    return actor


def reference_rollout(maml, sampler: ReferenceSampler, tasks: list[dict], episodes: int, params, generator):
    """``episodes`` episodes of each task in turn with the same ``params``: a list of :meth:`Episodes.tensors`."""
    out = []
    for task in tasks:
        sampler.set_task(task)
        context = maml.pools.context(task)
        out.append(sampler.sample(policy_actor(maml, params, context, generator), episodes).tensors(context))
    return out


def reference_meta_batch(maml, sampler: ReferenceSampler, tasks: list[dict], generator):
    """The sampling phase of one meta-update the authors' way (``MetaLearner.sample``): per task in turn, train
    episodes with θ, baseline + GAE advantages, ``adaptation_steps`` inner steps, validation episodes with ``φ_i``
    and their advantages. The math is the MAML module's; a list of ``(train, train_adv, valid, valid_adv)``."""
    import torch

    from hyperrl.algos.returns import advantages

    optim = maml.optim
    e = maml.sampling.fast_batch_size
    meta = maml._detached(maml.meta_params())

    def adv(batch):
        return advantages(batch["observation"], batch["reward"], batch["mask"], optim.gamma, optim.gae_lambda,
                          optim.baseline_reg)

    out = []
    for task in tasks:
        sampler.set_task(task)
        context = maml.pools.context(task)
        train = sampler.sample(policy_actor(maml, meta, context, generator), e).tensors(context)
        with torch.no_grad():
            train_adv = adv(train)
        if maml.adaptation.adaptation_steps == 0:
            out.append((train, train_adv, train, train_adv))
            continue
        adapted = maml._detached(maml.adapt(maml.meta_params(), train, train_adv, create_graph=False))
        valid = sampler.sample(policy_actor(maml, adapted, context, generator), e).tensors(context)
        with torch.no_grad():
            out.append((train, train_adv, valid, adv(valid)))
    return out
