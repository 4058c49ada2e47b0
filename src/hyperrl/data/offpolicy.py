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


class OffPolicyData:
    """Owns the training environment's collector and the replay buffer.

    Args:
        env_fn: zero-argument factory of the (seeded) training environment.
        policy: TensorDictModule ``observation -> action`` (explores under TorchRL's default exploration type).
        buffer_size: replay capacity (FIFO).
        batch_size: transitions per gradient update.
        frames_per_batch: environment frames per collector batch (= per training step).
        warmup_frames: frames of uniformly random actions before the policy acts.
        device: where sampled batches are moved.
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
        )
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(buffer_size), batch_size=batch_size)
        self._batches = iter(self.collector)

    def collect(self) -> TensorDictBase:
        """Run the collector for one batch, add its transitions to the buffer, return the batch."""
        batch = next(self._batches).reshape(-1)
        self.buffer.extend(batch.select(*TRANSITION_KEYS))
        return batch

    def sample(self) -> TensorDictBase:
        return self.buffer.sample().to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.buffer)

    def state_dict(self) -> dict:
        """Buffer contents (only the filled part), write cursor, frame count and the episode in progress (MuJoCo
        envs), as plain tensors and ints; restores with :meth:`load_state_dict`."""
        n = len(self.buffer)
        return {
            # a plain nested dict of tensors, so checkpoints load with torch.load(weights_only=True)
            "transitions": self.buffer.storage.get(torch.arange(n)).to_dict() if n else None,
            "writer": self.buffer._writer.state_dict(),
            "collector_frames": self.collector._frames,
            # the episode in progress: simulator state + the collector's current step (observation, running return)
            "env": env_state(self.collector.env),
            "carrier": self.collector._carrier.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.buffer.empty()
        if state["transitions"] is not None:
            n = len(state["transitions"]["observation"])
            self.buffer.extend(TensorDict.from_dict(state["transitions"], batch_size=[n]))
        self.buffer._writer.load_state_dict(state["writer"])
        # random warm-up is judged by the collector's frame counter: restore it so warm-up is not repeated
        self.collector._frames = state["collector_frames"]
        if load_env_state(self.collector.env, state.get("env")) and state.get("carrier") is not None:
            carrier = self.collector._carrier
            carrier.update(TensorDict.from_dict(state["carrier"], batch_size=carrier.batch_size))

    def shutdown(self) -> None:
        self.collector.shutdown()
