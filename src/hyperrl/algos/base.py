"""What every hyperrl LightningModule shares, whatever its data: :class:`Algorithm`.

Lightning counts ``optimizer.step()`` calls as ``trainer.global_step`` under manual optimization (upstream issue
#17958: with three optimizers, ``max_steps=30`` stopped after 10 training steps). :class:`Algorithm` therefore owns
the counting: a subclass does the work of one training step in :meth:`Algorithm.train_step`, stepping its raw torch
optimizer(s) (``self.optimizer.step()``) as often as its algorithm needs, or none at all (MAML's TRPO outer step),
and the base makes exactly ONE counted step per training step. So ``trainer.global_step`` counts training steps,
and ``--trainer.max_steps N`` means N training steps, for every algorithm.

Also here: the NaN guard (every rank stops at the same update), step logging only when Lightning writes it, the
environment-frame counter, RNG and data-source state in checkpoints (exact resume), and small helpers the losses
share (:func:`frozen`, :func:`detach_condition`, :func:`polyak_update`), and the optional cosine decay of every
learning rate (:func:`cosine_decay`, :meth:`Algorithm.scale_learning_rates`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hyperrl.data import DataSource, training_steps_loader
from hyperrl.checkpoint_io import check_training_state, training_state_checksum
from hyperrl.errors import CheckpointError, ConfigurationError, NonFiniteLossError
from hyperrl.algos.settings import Settings
from hyperrl.nn.registry import NetworkKind

#: fp32, or bf16 autocast with fp32 weights, targets, log-probabilities and α. Not "*-true" casts of the whole module
#: (replay batches stay fp32, and bf16 weights would break the fp32 targets), not fp16 (needs loss scaling).
SUPPORTED_PRECISIONS = ("32-true", "32", "bf16-mixed")


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Build the enclosed graph without ``module``'s parameters as leaves, so its loss terms give them no gradient
    (the actor loss must move the actor only). Restores the previous ``requires_grad`` flags."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def detach_condition(condition: Any) -> Any:
    """Detach a critic's state-only ``condition`` (a tensor, or nested lists/tuples of tensors)."""
    if isinstance(condition, Tensor):
        return condition.detach()
    if isinstance(condition, (list, tuple)):
        return type(condition)(detach_condition(c) for c in condition)
    return condition


def cosine_decay(update: int, start: int, end: int, final: float) -> float:
    """The learning-rate factor at ``update``: 1 up to ``start``, a half cosine from 1 down to ``final`` over
    ``[start, end]``, ``final`` from ``end`` on."""
    if update <= start:
        return 1.0
    if update >= end:
        return float(final)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * (update - start) / (end - start)))


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``θ_target ← (1 − τ) θ_target + τ θ``, in place, for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def rng_state() -> dict:
    """Every RNG a run draws from, as plain tensors/ints (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


def check_precision(module: L.LightningModule) -> None:
    precision = str(module.trainer.precision) if module._trainer is not None else "32-true"
    if precision not in SUPPORTED_PRECISIONS:
        raise ConfigurationError(
            f"precision {precision!r} is not supported: allowed {', '.join(SUPPORTED_PRECISIONS)} "
            "(fp16 needs loss scaling, which these RL updates do not use; '-true' precisions would cast "
            "the fp32 targets and replay data)"
        )


def check_fast_update(module: L.LightningModule) -> None:
    """Refuse ``compile``/``cudagraphs`` where they cannot work: CUDA graphs need a CUDA device, and neither runs
    under data parallelism (the gradient all-reduce of a DDP backward is not part of the compiled update)."""
    hp = module.hparams
    if hp.get("cudagraphs") and module.device.type != "cuda":
        raise ConfigurationError(
            f"cudagraphs=True is not allowed on device {module.device.type!r}: CUDA graphs need a CUDA device "
            "(--trainer.accelerator gpu), or set --model.init_args.cudagraphs false"
        )
    world = module.trainer.world_size if module._trainer is not None else 1
    if (hp.get("compile") or hp.get("cudagraphs")) and world > 1:
        raise ConfigurationError(
            f"compile/cudagraphs are not allowed with {world} devices: they support one device only "
            "(use --trainer.devices 1, or set compile and cudagraphs to false)"
        )


def detached(losses: dict[str, Tensor]) -> TensorDict:
    """Loss terms as a TensorDict of detached scalars: what a whole update returns (CUDA graphs need tensor outputs
    that are not part of an autograd graph)."""
    return TensorDict({name: value.detach() for name, value in losses.items()}, batch_size=[])


class Algorithm(L.LightningModule):
    """Data-agnostic base of every hyperrl LightningModule (manual optimization); the CLI accepts any subclass.

    A subclass calls ``self.save_hyperparameters()`` in its ``__init__`` and implements:

    * :meth:`make_data`: its :class:`~hyperrl.data.DataSource` (built in ``setup("fit")``, kept in ``self.data``,
      saved in every checkpoint and restored on resume), or ``None``;
    * :meth:`train_step`: one training step (collect, update...), returning the loss terms to log;
    * :meth:`param_groups` (the one Adam it gets, see :meth:`configure_optimizers`) or its own
      ``configure_optimizers``;
    * :meth:`validation_step` for evaluation.

    Frames: :meth:`count_frames` adds environment frames as the subclass collects them; ``self.frames`` is the total
    over all ranks, logged as ``train/frames`` and carried by checkpoints.

    Fast updates: a subclass whose hyperparameters include ``compile`` / ``cudagraphs`` writes its whole gradient
    update (losses, backward, optimizer step, target update) as one function of the batch and runs it through
    :meth:`fast_update`, which applies ``torch.compile`` and/or tensordict's ``CudaGraphModule`` as asked.

    Settings: a subclass declares its settings groups in :attr:`GROUPS` (:mod:`hyperrl.algos.settings`), takes each
    as an ``__init__`` argument, and calls :meth:`set_groups` then :meth:`hparams_as_data` around
    ``save_hyperparameters()``.

    Older checkpoints: :meth:`current_hparams` reads their hyperparameters as the algorithm now names them, with
    what a subclass declares: :attr:`RETIRED_HPARAMS`, :attr:`RENAMED_HPARAMS`, :attr:`NETWORKS` (each setting
    that chooses a network, a preset name or ``class_path``/``init_args``, :mod:`hyperrl.nn.registry`) and
    :attr:`GROUPS` (flat settings of older files move into their groups).
    """

    #: setting name -> the kind of network it chooses
    NETWORKS: ClassVar[Mapping[str, NetworkKind]] = {}
    #: settings older checkpoints carry that the algorithm now derives
    RETIRED_HPARAMS: ClassVar[frozenset[str]] = frozenset()
    #: settings older checkpoints carry under another name (old -> new)
    RENAMED_HPARAMS: ClassVar[Mapping[str, str]] = {}
    #: group name -> its settings dataclass (``replay`` -> :class:`~hyperrl.algos.settings.Replay`)
    GROUPS: ClassVar[Mapping[str, type[Settings]]] = {}

    @classmethod
    def current_hparams(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """Saved hyperparameters (a checkpoint's, an analysis snapshot's) as this algorithm now names them, so that
        an older file still rebuilds its model: less the retired settings, renamed ones under their new names, and
        a network's ``<setting>_kwargs`` folded into the setting as its preset's class with those settings."""
        hparams = {cls.RENAMED_HPARAMS.get(k, k): v for k, v in saved.items() if k not in cls.RETIRED_HPARAMS}
        for group, settings_class in cls.GROUPS.items():  # files written before the settings were grouped
            flat = {name: hparams.pop(name) for name in settings_class.names() if name in hparams}
            if flat:
                hparams[group] = {**flat, **dict(hparams.get(group) or {})}
        for name, kind in cls.NETWORKS.items():
            if f"{name}_kwargs" in hparams:
                settings = cls.network_settings_of_old(name, dict(hparams.pop(f"{name}_kwargs") or {}), hparams)
                if settings and isinstance(hparams.get(name), str) and hparams[name] in kind.presets:
                    hparams[name] = kind.with_settings(hparams[name], settings)
        return hparams

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, **kwargs: Any) -> Algorithm:
        """Lightning's ``load_from_checkpoint`` for the checkpoints of every hyperrl version: the saved settings are
        read as the algorithm now names them (:meth:`current_hparams`: older flat settings in their groups, renamed
        and retired ones) before the model is built; ``kwargs`` override them. Called on a base class (``Algorithm``,
        ``ContextSAC``), it builds the class the checkpoint names. Lightning's own would pass the saved settings to
        ``__init__`` as they are."""
        from hyperrl.runs import algorithm_class

        if hparams_file is not None:
            raise ConfigurationError("hparams_file is not allowed: a hyperrl checkpoint holds its own settings")
        checkpoint = torch.load(checkpoint_path, map_location=map_location or "cpu", weights_only=True)
        saved = dict(checkpoint.get("hyper_parameters") or {})
        named = algorithm_class(saved.get("_class_path"))
        target = named if isinstance(named, type) and issubclass(named, cls) else cls
        settings = {k: v for k, v in target.current_hparams(saved).items() if not k.startswith("_")}
        model = target(**{**settings, **kwargs})
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=model.strict_loading if strict is None else strict)
        device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, Tensor)), None)
        return model.to(device) if device is not None else model

    @classmethod
    def network_settings_of_old(cls, name: str, settings: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
        """An older checkpoint's ``<name>_kwargs`` less the settings this algorithm now decides itself (which a
        subclass takes out, or moves to its own setting in ``hparams``)."""
        return settings

    def set_groups(self, **groups: Any) -> None:
        """Each settings group as its typed object (``self.replay``): a group or a mapping of some of its fields,
        laid over the group's defaults (:meth:`~hyperrl.algos.settings.Settings.of`; a subclass with other defaults
        passes its group already built)."""
        for name, value in groups.items():
            setattr(self, name, self.GROUPS[name].of(value))

    def hparams_as_data(self) -> None:
        """The hyperparameters as plain data (what checkpoints and the loggers' hparams.yaml hold): each settings
        group as the dict of all its fields, and each network setting of :attr:`NETWORKS` given in Python as a class
        or ``functools.partial`` in its ``class_path``/``init_args`` form (the CLI saves its config's data already).
        A subclass calls it right after ``save_hyperparameters()``."""
        plain = {name: kind.plain(self.hparams[name]) for name, kind in self.NETWORKS.items() if name in self.hparams}
        plain.update({name: getattr(self, name).plain() for name in self.GROUPS})
        # the initial copy the loggers write, too
        self.save_hyperparameters({**self.hparams, **plain})

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.data: DataSource | None = None
        self._envs: dict = {}  # a plain dict: environments are not submodules (no state_dict, no summary row)
        self._episode_returns: list[float] = []  # the last 100 finished training episodes
        self._new_returns: list[float] = []  # finished since the last log line
        self._clock: tuple[float, int] | None = None
        self._local_frames = 0  # environment frames collected on this rank
        self._pending_restore: dict | None = None
        self._fast_updates: dict[Hashable, Callable] = {}
        self._own_optimizer: torch.optim.Optimizer | None = None
        self._unlogged: dict[str, Tensor] | None = None  # the loss terms of a step whose row was not written

    # ------------------------------------------------------------------ subclass interface
    def make_data(self) -> DataSource | None:
        """The data source of a fit (called once in ``setup("fit")``, after the device is known)."""
        return None

    def train_step(self) -> dict[str, Tensor]:
        """The work of one training step; returns named loss terms (``"loss"`` is not logged)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Param groups (each with its own ``lr`` and ``name``) of the single Adam optimizer."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    # ------------------------------------------------------------------ Lightning plumbing
    def configure_optimizers(self):
        fused = getattr(getattr(self, "optim", None), "fused_adam", None)
        if fused is None:
            fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.parameters())
        # a step replayed from a CUDA graph must keep its step counters on the device
        return torch.optim.Adam(self.param_groups(), fused=fused, capturable=bool(self.hparams.get("cudagraphs")))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The raw torch optimizer: its ``step()`` is not counted by Lightning (the base counts training steps).
        Outside a Trainer (a benchmark, a user's own loop) the module makes one of its own on first use."""
        if self._trainer is None:
            if self._own_optimizer is None:
                self._own_optimizer = self.configure_optimizers()
            return self._own_optimizer
        return self.optimizers().optimizer

    def backpropagate(self, loss: Tensor) -> None:
        """``loss.backward()`` through Lightning when a Trainer runs the module (its precision plugin, DDP's
        gradient all-reduce) and not inside a compiled or CUDA-graphed update, whose graph holds the backward."""
        if self._trainer is None or self.is_fast:
            loss.backward()
        else:
            self.manual_backward(loss)

    def setup(self, stage: str) -> None:
        check_precision(self)
        check_fast_update(self)
        self._fast_updates.clear()  # a new fit gets a new optimizer: graphs captured with the old one must go
        if stage == "fit" and self.data is None:
            self.data = self.make_data()

    def teardown(self, stage: str) -> None:
        if self.data is not None and stage == "fit":
            self.data.shutdown()
            self.data = None

    def train_dataloader(self) -> DataLoader:
        return training_steps_loader()

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None, generator=torch.Generator())

    def training_step(self, step: int, batch_idx: int) -> None:
        losses = self.train_step()
        if losses is None:
            losses = {}
        self._count_training_step()
        self._unlogged = None
        if self._should_log():
            self._log_step(losses)
        else:
            self._unlogged = losses

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # a stop asked for after this step's training_step (the Timer of --trainer.max_time, a signal, both in their
        # on_train_batch_end, which runs before this hook): Lightning writes this step's row because it stops, so
        # give it this step's values, not those of the last row written
        if self._unlogged is not None and self.trainer.should_stop and self.trainer.log_every_n_steps > 0:
            self._log_step(self._unlogged)
        self._unlogged = None

    def _count_training_step(self) -> None:
        """The one ``optimizer.step()`` Lightning counts for this training step. Gradients are cleared first, so it
        changes no parameter and no optimizer state (Adam skips parameters without a gradient)."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()

    def backward_and_step(self, losses: dict[str, Tensor]) -> None:
        """Check ``losses`` (see :meth:`stop_if_not_finite`; a compiled or CUDA-graphed update is checked by
        :meth:`run_fast_update` after its step), backpropagate ``losses["loss"]``, step the optimizer."""
        if not self.is_fast:
            self.stop_if_not_finite(losses)
        optimizer = self.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.backpropagate(losses["loss"])
        optimizer.step()

    @property
    def is_fast(self) -> bool:
        """Whether updates run compiled or CUDA-graphed (``compile`` / ``cudagraphs`` hyperparameters)."""
        return bool(self.hparams.get("compile") or self.hparams.get("cudagraphs"))

    def fast_update(self, key: Hashable, update: Callable[[TensorDictBase], TensorDictBase]) -> Callable:
        """``update`` (a whole gradient update: a function of the batch TensorDict returning the detached loss terms
        as a TensorDict) wrapped as the ``compile`` / ``cudagraphs`` settings ask, built once per ``key`` (one key per
        distinct control flow, e.g. TD3's updates with and without the actor step: a CUDA graph replays one fixed
        sequence of kernels). With ``cudagraphs`` the first calls run eagerly on a side stream (warm-up, compiling
        when ``compile`` is on too), then one call is captured and every later call replays it: the batch must keep
        its shape, and nothing in ``update`` may depend on Python values that change between calls. A caller checks
        the returned losses after the step (:meth:`run_fast_update`): a check inside would split the graph."""
        fn = self._fast_updates.get(key)
        if fn is None:
            fn = update
            if self.hparams.get("compile"):
                fn = torch.compile(fn)
            if self.hparams.get("cudagraphs"):
                from tensordict.nn import CudaGraphModule

                fn = CudaGraphModule(fn, in_keys=[], out_keys=[], warmup=5 if self.hparams.get("compile") else 2)
            self._fast_updates[key] = fn
        return fn

    def run_fast_update(self, key: Hashable, update: Callable[[TensorDictBase], TensorDictBase],
                        batch: TensorDictBase) -> TensorDictBase:
        """``update(batch)`` through :meth:`fast_update`, its losses checked after the step: a non-finite loss still
        stops the run before anything is checkpointed."""
        losses = self.fast_update(key, update)(batch)
        self.stop_if_not_finite(losses)
        return losses

    def scale_learning_rates(self, factor: float) -> None:
        """Set every param group's ``lr`` to ``factor`` × its configured rate (kept in the group as ``base_lr``, so
        it travels with the optimizer's state in a checkpoint)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    @property
    def frames(self) -> int:
        """Environment frames collected so far, over all ranks."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return self._local_frames * world

    def count_frames(self, n: int) -> None:
        self._local_frames += int(n)

    def stop_if_not_finite(self, losses: dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` before the backward pass if the loss is NaN/inf on this rank or, under
        data parallelism, on any rank: every rank stops at the same update (a rank stopping alone would leave the
        others waiting in the gradient all-reduce)."""
        bad_here = not bool(torch.isfinite(losses["loss"]))
        bad = bad_here
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad_here, all=False)
        if not bad:
            return
        where = ", ".join(f"{n}={v.item():.4g}" for n, v in losses.items()) if bad_here else "on another rank"
        raise NonFiniteLossError(
            f"non-finite loss at training step {self.global_step} ({where}); stopping before anything is "
            "checkpointed: the last checkpoint is the last good state"
        )

    # ------------------------------------------------------------------ logging
    def _should_log(self) -> bool:
        """Lightning writes step metrics every ``log_every_n_steps``; calling ``self.log`` on the other steps costs
        milliseconds per step for nothing (``benchmarks/overhead.py``), so metrics are only built when written.
        Lightning's rule, from public state: called after this step's counted optimizer step, ``global_step`` is
        the number of the step being logged."""
        trainer = self.trainer
        every = trainer.log_every_n_steps
        return every > 0 and (trainer.global_step % every == 0 or trainer.should_stop)

    def _log_step(self, losses: dict[str, Tensor]) -> None:
        frames = self.frames
        metrics = {f"train/{n}": v.detach() if isinstance(v, Tensor) else float(v) for n, v in losses.items()
                   if n != "loss"}
        metrics["train/frames"] = float(frames)
        self.log_dict(metrics, batch_size=1)
        bar = {}
        if self._new_returns:
            # mean return of the episodes that finished since the previous log line
            bar["train/episode_return"] = float(np.mean(self._new_returns))
            self._new_returns = []
        # frames per second of wall time since the last log line that saw new frames: an algorithm that collects
        # once per iteration of many updates (MetaSAC, PEARL) gets its rate over the whole iteration
        now = time.perf_counter()
        if self._clock is not None and frames > self._clock[1]:
            bar["train/fps"] = (frames - self._clock[1]) / (now - self._clock[0])
        if self._clock is None or frames > self._clock[1]:
            self._clock = (now, frames)
        if bar:
            self.log_dict(bar, prog_bar=True, batch_size=1)

    def record_episodes(self, batch: TensorDictBase) -> None:
        """Note the returns of the episodes that end in ``batch`` (needs ``("next", "episode_reward")``)."""
        done = batch.get(("next", "done")).reshape(-1)
        if done.any():
            returns = batch.get(("next", "episode_reward")).reshape(-1)[done].tolist()
            self._episode_returns = (self._episode_returns + returns)[-100:]
            self._new_returns.extend(returns)

    # ------------------------------------------------------------------ checkpoint state beyond parameters
    def extra_state(self) -> dict:
        """Subclass state (plain data) to carry in checkpoints beyond parameters, buffers and the data source."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore :meth:`extra_state` (called at train start, before the first training step)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hyperrl"] = {
            "data": self.data.state_dict() if self.data is not None else None,
            "rng": rng_state(),
            "episode_returns": list(self._episode_returns[-100:]),
            "frames": self._local_frames,
            "extra": self.extra_state(),
        }
        checkpoint["hyperrl"]["checksum"] = training_state_checksum(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        problem = check_training_state(checkpoint, resuming=False)
        if problem is not None:
            raise CheckpointError(problem)
        state = checkpoint.get("hyperrl")
        if state is None:
            return
        # checkpoints from before the explicit frame counter: the collector's count is the same number
        if "frames" not in state:
            data = state.get("data") or {}
            state["frames"] = int(data.get("collector_frames", checkpoint.get("global_step", 0)))
        self._local_frames = int(state["frames"])
        self._pending_restore = state

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning labels logged rows with its own counter of stepped batches, which comes out one ahead of
        # global_step when a run resumes from a checkpoint written at the end of a fit (its epoch-end bookkeeping):
        # realign it, so a resumed run logs the same step numbers, at the same cadence, as an uninterrupted run
        loop = self.trainer.fit_loop.epoch_loop
        if loop._batches_that_stepped != self.trainer.global_step:
            loop._batches_that_stepped = self.trainer.global_step

    def on_train_start(self) -> None:
        self._clock = (time.perf_counter(), self.frames)  # the first log line's frames/s counts from here
        # restored as late as possible, after Lightning has set everything up, so nothing draws in between
        state = self._pending_restore
        if state is None:
            return
        try:
            if state["data"] is not None and self.data is not None:
                self.data.load_state_dict(state["data"])
            set_rng_state(state["rng"])
            self._episode_returns = list(state["episode_returns"])
            self.load_extra_state(state.get("extra") or {})
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise CheckpointError(f"holds training state that does not fit this run ({reason})") from exc
        self._pending_restore = None
