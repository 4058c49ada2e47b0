"""Episodic on-policy sampling over tasks (MAML, context-MAML): whole episodes, many tasks at once, through TorchRL.

One rollout runs ``M`` tasks × ``E`` episodes side by side: a gymnasium ``SyncVectorEnv`` of ``M·E`` task envs
(row ``r`` is episode ``r mod E`` of task ``r // E``) wrapped by TorchRL's ``GymWrapper`` (batch size ``[M·E]``; the
oracle context arrives from ``info["context"]`` as the entry ``"context"``), stepped by ``env.rollout(T)`` for the
horizon ``T`` of the family. The vector env runs in-process: on few cores it is much faster than worker processes
(``benchmarks/maml_speed.py`` measures episodes/s), and one TorchRL step serves all rows.

The result is a TensorDict of batch shape ``(M, E)`` with entries ``observation (M, E, T, S)``, ``action (.., T, A)``,
``reward (.., T)``, ``mask (.., T)`` (1 up to and including the step that ended the episode, 0 after), ``context
(.., T, c)`` and ``return (M, E)``, the undiscounted episode returns. Steps after an episode's end are padding.

Threads: a rollout runs torch with ``threads`` intra-op threads (1 by default): its per-step forward passes are
small, and extra threads only add synchronisation (``docs/benchmarks.md``, MAML).

Actions: the sampler draws ``a = loc + scale·ε`` with its own ``torch.Generator`` per stream (``"train"``,
``"eval"``), so evaluation never moves the training noise, and a checkpoint holds every RNG that sampling uses
(generators, each sub-env's ``np_random``, the task-sampling generator). The env receives ``a`` clipped to its action
bounds (``[-1, 1]`` on the MuJoCo families), as pytorch-maml-rl's ``NormalizedActionWrapper`` does before ``step``:
the control cost is charged on the action the simulator applies. The clip is TorchRL's ``ClipTransform`` on the way
into the env, so the rollout keeps the unclipped sample ``a``, whose log-probability the losses use.

Dtypes: this sampler decides what the networks see: observations, contexts and actions are float32 whatever the
simulator computes in (MuJoCo's state is float64; TorchRL's ``DoubleToFloat`` casts it on the way out of the env),
and the actor's ``loc``/``scale`` are taken in float32 (under bf16 autocast its linears run in bf16).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor

from hyperrl.envs import TaskPools
from hyperrl.errors import ConfigurationError

#: ``make_actor(context (N, c)) -> actor``, ``actor(observation (N, S)) -> (loc (N, A), scale (N, A))``
ActorFactory = Callable[[Tensor], Callable[[Tensor], tuple[Tensor, Tensor]]]
STREAMS = ("train", "eval")


def episode_mask(done: Tensor) -> Tensor:
    """``(..., T)`` bool ``done`` -> float mask: 1 on steps up to and including the first done, 0 after."""
    done = done.to(torch.long)
    ended_before = torch.cumsum(done, dim=-1) - done  # dones strictly before t
    return (ended_before == 0).to(torch.float32)


class OnPolicyData:
    """Task sampling and batched whole-episode rollouts over the tasks of a :class:`~hyperrl.envs.TaskPools`.

    ``collect()`` draws a meta-batch of ``meta_batch_size`` train tasks (with replacement, the authors' choice) and
    returns them; :meth:`rollout` runs episodes of given tasks with a given actor. ``sample()`` returns the last
    collected meta-batch. State: task RNG, action generators and each env's RNG (exact resume).
    """

    def __init__(self, env_id: str, pools: TaskPools, meta_batch_size: int, seed: int = 0,
                 device: str | torch.device = "cpu", threads: int | None = 1, **env_kwargs) -> None:
        import gymnasium as gym

        self.env_id, self.pools, self.meta_batch_size = env_id, pools, int(meta_batch_size)
        self.seed, self.device, self.env_kwargs = int(seed), torch.device(device), dict(env_kwargs)
        self.threads = threads
        self.horizon = int(gym.spec(env_id).max_episode_steps)
        self._task_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        self._generators = {}
        for i, stream in enumerate(STREAMS):
            g = torch.Generator(device="cpu")
            g.manual_seed(self.seed * 1000 + 7 + i)
            self._generators[stream] = g
        self._envs: dict[tuple[str, int], object] = {}
        self._stepped: set[tuple[str, int]] = set()  # keys of self._envs already rolled out (cleared with them)
        self._env_states: dict[str, list] = {}
        self._last: list[dict] | None = None
        self.episodes_sampled = 0
        self.steps_sampled = 0

    # ------------------------------------------------------------------ tasks
    def sample_tasks(self, n: int) -> list[dict]:
        """``n`` train tasks drawn uniformly with replacement from the train pool."""
        idx = self._task_rng.integers(0, len(self.pools.train), size=int(n))
        return [dict(self.pools.train[i]) for i in idx]

    def collect(self) -> list[dict]:
        """A meta-batch of train tasks (``meta_batch_size`` of them)."""
        self._last = self.sample_tasks(self.meta_batch_size)
        return self._last

    def sample(self) -> list[dict]:
        """The last meta-batch :meth:`collect` drew."""
        if self._last is None:
            raise RuntimeError("OnPolicyData.sample() before collect()")
        return self._last

    # ------------------------------------------------------------------ environments
    def _env(self, stream: str, rows: int):
        key = (stream, rows)
        if key not in self._envs:
            import gymnasium as gym
            from torchrl.envs import Compose, DoubleToFloat, GymWrapper, TransformedEnv

            low, high = self.pools.context_bounds

            def make():
                env = gym.make(self.env_id, **self.env_kwargs)
                env.unwrapped.set_context_bounds(low, high)
                return env

            vec = gym.vector.SyncVectorEnv([make for _ in range(rows)],
                                           autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
            # GymWrapper of a vector env is itself a TransformedEnv (its autoreset transform): one flat TransformedEnv,
            # as TorchRL's default makes it, asked for explicitly (the default warns)
            env = TransformedEnv(GymWrapper(vec, device="cpu"),
                                 Compose(DoubleToFloat(), self._action_clip(vec.envs[0].action_space)), auto_unwrap=True)
            env.set_seed(self.seed * 1000 + 17 * (1 + STREAMS.index(stream)) + rows)
            saved = self._env_states.pop(f"{stream}:{rows}", None)
            if saved is not None:
                for sub, state in zip(vec.envs, saved):
                    sub.unwrapped.np_random.bit_generator.state = state
            self._envs[key] = env
        return self._envs[key]

    def _action_clip(self, space):
        """``ClipTransform`` of the actions going into the env, to the bounds of ``space`` (one value each, as every
        task family has)."""
        from torchrl.envs import ClipTransform

        low, high = np.unique(space.low), np.unique(space.high)
        if len(low) != 1 or len(high) != 1:
            raise ConfigurationError(f"env {self.env_id!r} has per-dimension action bounds {space}: the on-policy "
                                     "sampler clips actions to one [low, high] for every dimension")
        return ClipTransform(in_keys_inv=["action"], low=float(low[0]), high=float(high[0]))

    @staticmethod
    def _sub_envs(env) -> list:
        """The gymnasium envs of the rows of one of this sampler's TorchRL envs."""
        return env.base_env._env.envs

    def reseed(self, stream: str, seed: int) -> None:
        """Reseed a stream's action generator and its envs (evaluation: the same noise at every evaluation)."""
        self._generators[stream].manual_seed(int(seed))
        for (s, rows), env in self._envs.items():
            if s == stream:
                env.set_seed(int(seed) + rows)

    @torch.no_grad()
    def rollout(self, tasks: list[dict], episodes: int, make_actor: ActorFactory, stream: str = "train") -> TensorDict:
        """``episodes`` whole episodes of each task, all rows at once; TensorDict ``(M, E)`` (module docstring)."""
        if stream not in STREAMS:
            raise ConfigurationError(f"stream={stream!r} is not allowed: expected one of {', '.join(STREAMS)}")
        m, e = len(tasks), int(episodes)
        rows = m * e
        env = self._env(stream, rows)
        for r, sub in enumerate(self._sub_envs(env)):
            sub.unwrapped.set_task(tasks[r // e])
        generator = self._generators[stream]
        state: dict = {}

        def policy(td):
            obs = td.get("observation").to(self.device)
            if "actor" not in state:
                state["actor"] = make_actor(td.get("context").to(self.device))
            loc, scale = (t.to(torch.float32) for t in state["actor"](obs))
            noise = torch.randn(loc.shape, generator=generator, dtype=torch.float32).to(loc.device)
            td.set("action", (loc + scale * noise).to(td.device, env.action_spec.dtype))
            return td

        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            # an explicit full reset: a plain ``env.reset()`` of TorchRL's gymnasium vector env is only the partial one
            # its autoreset left (``VecGymEnvTransform``): if the previous rollout ended with some rows mid-episode
            # (an episode that ended early was auto-reset), those rows would start from their old state and with the
            # old task's context
            # (a never-stepped env takes the plain reset: TorchRL refuses a reset mask before the first step)
            full = TensorDict({"_reset": torch.ones(rows, 1, dtype=torch.bool)}, batch_size=[rows])
            start = env.reset(full if (stream, rows) in self._stepped else None)
            self._stepped.add((stream, rows))
            td = env.rollout(self.horizon, policy, break_when_any_done=False, auto_reset=False, tensordict=start)
        finally:
            torch.set_num_threads(previous)
        done = td.get(("next", "done")).reshape(rows, self.horizon)
        mask = episode_mask(done)
        reward = td.get(("next", "reward")).reshape(rows, self.horizon).to(torch.float32) * mask
        out = TensorDict(
            {
                "observation": td.get("observation").to(torch.float32),
                "action": td.get("action").to(torch.float32),
                "reward": reward,
                "mask": mask,
                "context": td.get("context").to(torch.float32),
            },
            batch_size=[rows],
        ).reshape(m, e).to(self.device)
        out.set("return", reward.sum(-1).reshape(m, e).to(self.device))
        self.episodes_sampled += rows
        self.steps_sampled += int(mask.sum())
        return out

    # ------------------------------------------------------------------ DataSource
    def state_dict(self) -> dict:
        envs = dict(self._env_states)
        for (stream, rows), env in self._envs.items():
            envs[f"{stream}:{rows}"] = [sub.unwrapped.np_random.bit_generator.state for sub in self._sub_envs(env)]
        return {
            "task_rng": self._task_rng.bit_generator.state,
            "generators": {k: g.get_state() for k, g in self._generators.items()},
            "envs": envs,
            "last": None if self._last is None else [dict(t) for t in self._last],
            "episodes_sampled": self.episodes_sampled,
            "steps_sampled": self.steps_sampled,
        }

    def load_state_dict(self, state: dict) -> None:
        self._task_rng.bit_generator.state = state["task_rng"]
        for k, g in self._generators.items():
            g.set_state(state["generators"][k])
        self._env_states = dict(state["envs"])
        for (stream, rows), env in self._envs.items():
            saved = self._env_states.pop(f"{stream}:{rows}", None)
            if saved is not None:
                for sub, s in zip(self._sub_envs(env), saved):
                    sub.unwrapped.np_random.bit_generator.state = s
        self._last = state["last"]
        self.episodes_sampled = int(state["episodes_sampled"])
        self.steps_sampled = int(state["steps_sampled"])

    def shutdown(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._stepped.clear()
