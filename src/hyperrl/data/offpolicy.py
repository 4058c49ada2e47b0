"""Collector + replay buffer plumbing for off-policy algorithms inside Lightning.

A TorchRL :class:`~torchrl.collectors.Collector` steps one environment with the current policy (uniformly random
actions for the first ``warmup_frames`` frames), each batch of ``frames_per_batch`` transitions goes into a
uniform TorchRL replay buffer, and training samples from it. Lightning's training loop is driven by
:class:`TrainingSteps`, an endless iterable of step indices: the real data path is collector → buffer → module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tensordict import TensorDict, TensorDictBase
from torch.utils.data import DataLoader, IterableDataset

from hyperrl.envs import env_state, load_env_state

#: The keys a transition keeps in the replay buffer (TorchRL conventions).
TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "done"),
)


class TrainingSteps(IterableDataset):
    """An endless stream ``0, 1, 2, ...``: one item per Lightning training step."""

    def __iter__(self) -> Iterator[int]:
        step = 0
        while True:
            yield step
            step += 1


def training_steps_loader() -> DataLoader:
    # its own generator: creating the iterator must not draw from the global RNG (exact resume depends on it)
    return DataLoader(TrainingSteps(), batch_size=None, num_workers=0, generator=torch.Generator())


def buffer_state(buffer) -> dict:
    """A replay buffer's filled part and write cursor as a plain nested dict of tensors and ints (loadable with
    ``torch.load(weights_only=True)``; TorchRL's own ``state_dict`` would store the whole preallocated storage)."""
    n = len(buffer)
    return {
        "transitions": buffer.storage.get(torch.arange(n)).cpu().to_dict() if n else None,
        "writer": buffer.writer.state_dict(),
    }


def load_buffer_state(buffer, state: dict) -> None:
    buffer.empty()
    if state["transitions"] is not None:
        n = len(state["transitions"]["observation"])
        buffer.extend(TensorDict.from_dict(state["transitions"], batch_size=[n]))
    buffer.writer.load_state_dict(state["writer"])


def episode_state(collector) -> dict:
    """The episode in progress: the simulator state and the collector's current step (observation, running return).

    The collector's current step has no public accessor in TorchRL 0.14 (its ``state_dict`` holds the frame count
    and the policy, not the step in flight), so it is read from ``_carrier``, the one private attribute used here.
    """
    return {"env": env_state(collector.env), "carrier": collector._carrier.to_dict()}


def load_episode_state(collector, state: dict) -> None:
    if load_env_state(collector.env, state.get("env")) and state.get("carrier") is not None:
        carrier = collector._carrier
        carrier.update(TensorDict.from_dict(state["carrier"], batch_size=carrier.batch_size))


class OffPolicyData:
    """Owns the training environment's collector and the replay buffer.

    Args:
        env_fn: zero-argument factory of the (seeded) training environment.
        policy: TensorDictModule ``observation -> action`` (explores under TorchRL's default exploration type).
        buffer_size: replay capacity (FIFO).
        batch_size: transitions per gradient update.
        frames_per_batch: environment frames per collector batch (= per training step).
        warmup_frames: frames of uniformly random actions before the policy acts.
        device: the training device: the replay buffer's storage lives there, so sampling never crosses the bus.
        compile_policy: compile the acting policy (the collector's ``compile_policy``). It is not CUDA-graphed: the
            environment hands CPU observations, which a captured graph cannot read.
    """

    def __init__(
        self,
        env_fn: Callable,
        policy,
        buffer_size: int,
        batch_size: int,
        frames_per_batch: int,
        warmup_frames: int,
        device: torch.device | str = "cpu",
        compile_policy: bool = False,
    ) -> None:
        from torchrl.collectors import Collector
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        self.device = torch.device(device)
        self.collector = Collector(
            env_fn,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=-1,
            init_random_frames=warmup_frames,
            auto_register_policy_transforms=False,
            compile_policy=compile_policy or None,
        )
        self.buffer = TensorDictReplayBuffer(
            storage=LazyTensorStorage(buffer_size, device=self.device), batch_size=batch_size
        )
        self._batches = iter(self.collector)

    def collect(self) -> TensorDictBase:
        """Run the collector for one batch, add its transitions to the buffer, return the batch."""
        batch = next(self._batches).reshape(-1)
        self.buffer.extend(batch.select(*TRANSITION_KEYS))
        return batch

    def sample(self) -> TensorDictBase:
        """A batch of transitions on the training device (without the sampler's ``"index"`` bookkeeping, which
        TorchRL keeps on the CPU: a CUDA-graphed update takes device tensors only)."""
        return self.buffer.sample().exclude("index")

    def __len__(self) -> int:
        return len(self.buffer)

    def state_dict(self) -> dict:
        """Buffer contents (only the filled part), write cursor, frame count and the episode in progress (MuJoCo
        envs), as plain tensors and ints; restores with :meth:`load_state_dict`."""
        return {
            **buffer_state(self.buffer),
            # random warm-up is judged by the collector's frame counter: restore it so warm-up is not repeated
            "collector_frames": self.collector.state_dict()["frames"],
            **episode_state(self.collector),
        }

    def load_state_dict(self, state: dict) -> None:
        load_buffer_state(self.buffer, state)
        collector_state = self.collector.state_dict()
        collector_state.pop("policy_state_dict", None)  # the policy's weights come with the module's own state
        collector_state["frames"] = state["collector_frames"]
        self.collector.load_state_dict(collector_state, strict=False)
        load_episode_state(self.collector, state)

    def shutdown(self) -> None:
        self.collector.shutdown()
