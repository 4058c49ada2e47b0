"""An algorithm's settings, grouped by concern: the task pools, the data (replay or sampling), the adaptation, the
objective and its optimiser, the evaluation.

Each group is a frozen dataclass whose field annotations are its value rules (:mod:`hyperrl.algos.arguments`):
jsonargparse applies them when the ``hyperrl`` command parses ``--model.init_args.replay.batch_size 64`` or a
config's ``replay: {batch_size: 64}``, and ``__post_init__`` applies them (and the group's rules that relate two
of its fields) to a group built in Python. A setting that chooses a network, the environment, the seed and the speed
switches stay top-level settings of the algorithm, as do the settings only one algorithm has (SAC's temperature,
TD3's noise, PEARL's encoder).

An algorithm takes each group as the dataclass or as a mapping of some of its fields, which :meth:`Settings.of`
lays over the algorithm's defaults. Its hyperparameters (checkpoints, ``hparams.yaml``) hold each group as a plain
dict (:meth:`Settings.plain`), the module holds the typed group as an attribute (``model.replay.batch_size``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)

from hyperrl.algos.arguments import LeftOpenUnitInterval, Seed, check_arguments
from hyperrl.errors import ConfigurationError

S = TypeVar("S", bound="Settings")


def _plain(value: Any) -> Any:
    """Builtin types only, recursively: tuples as lists, and a restricted number (jsonargparse's ``PositiveInt(3)``,
    an ``int`` subclass) as its ``int`` or ``float``: what YAML, JSON and a ``weights_only`` checkpoint all hold."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _require_finite(group: str, name: str, value: Any, minimum: Literal["positive", ">= 0"]) -> None:
    """A finite number that is positive, or >= 0 (spelled out, not a restricted type: the command line's ``inf``
    reaches this message, which says what is wrong with it)."""
    words = "a finite positive number" if minimum == "positive" else "a finite number >= 0"
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not math.isfinite(value) or not (value > 0 if minimum == "positive" else value >= 0):
        raise ConfigurationError(f"{group}.{name}={value!r} is not allowed: expected {words}")


@dataclass(frozen=True)
class Settings:
    """Base of the settings groups: a frozen dataclass named :attr:`GROUP` in an algorithm's settings (a dataclass
    itself, so that jsonargparse takes its subclasses as plain groups of settings, not as ``class_path`` choices)."""

    #: the group's name among an algorithm's settings (``replay`` in ``--model.init_args.replay.batch_size``)
    GROUP: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_arguments(type(self), {name: getattr(self, name) for name in self.names()}, prefix=f"{self.GROUP}.")
        for name in self.names():  # builtin values (jsonargparse hands over its restricted number types)
            object.__setattr__(self, name, _plain(getattr(self, name)))
        self.check()

    def check(self) -> None:
        """The group's rules that relate two of its fields (raise :class:`ConfigurationError`)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def plain(self) -> dict[str, Any]:
        """The group as a plain dict (its values are builtin since ``__post_init__``): what checkpoints and
        ``hparams.yaml`` hold."""
        return dataclasses.asdict(self)

    @classmethod
    def of(cls: type[S], value: Any, default: S | None = None) -> S:
        """``value`` as this group: the group itself, or a mapping of some of its fields laid over ``default`` (the
        algorithm's defaults; the class's own when ``None``). Another group's dataclass counts as its mapping."""
        if isinstance(value, cls):
            return value
        if value is None:
            return default if default is not None else cls()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"{cls.GROUP}={value!r} is not allowed: expected a mapping of {cls.GROUP} settings "
                f"({', '.join(cls.names())})"
            )
        unknown = [str(k) for k in value if k not in cls.names()]
        if unknown:
            raise ConfigurationError(
                f"{cls.GROUP}.{unknown[0]} is not a {cls.GROUP} setting: allowed {', '.join(cls.names())}"
            )
        base = default if default is not None else cls()
        fields = {name: getattr(base, name) for name in cls.names()}
        return cls(**{**fields, **value})


# --------------------------------------------------------------------------------------------- the task pools
@dataclass(frozen=True)
class Tasks(Settings):
    """The task pools of a meta-RL run (:func:`hyperrl.envs.make_task_pools`).

    Args:
        split: the family's train/test/OOD split (``medium``: HalfCheetah-Vel-Medium's OOD velocities).
        n_train_tasks: train pool size (null: the algorithm's default for the split).
        n_test_tasks: test pool size (null: as above).
        n_ood_tasks: out-of-distribution pool size, where the split has one (null: as above).
        task_seed: the seed the pools are drawn from.
    """

    GROUP: ClassVar[str] = "tasks"

    split: str = "default"
    n_train_tasks: PositiveInt | None = None
    n_test_tasks: PositiveInt | None = None
    n_ood_tasks: PositiveInt | None = None
    task_seed: Seed = 0


# --------------------------------------------------------------------------------------------- SAC and TD3
@dataclass(frozen=True)
class Replay(Settings):
    """The replay buffer and the collect/update schedule of SAC and TD3.

    Args:
        batch_size: transitions per gradient update.
        buffer_size: replay capacity in transitions.
        warmup_frames: frames collected with uniform random actions first.
        learning_starts: frames in the buffer before the first update.
        frames_per_batch: frames collected per training step.
        updates_per_batch: gradient updates per training step.
    """

    GROUP: ClassVar[str] = "replay"

    batch_size: PositiveInt = 256
    buffer_size: PositiveInt = 1_000_000
    warmup_frames: NonNegativeInt = 1000
    learning_starts: NonNegativeInt = 256
    frames_per_batch: PositiveInt = 1
    updates_per_batch: PositiveInt = 1

    def check(self) -> None:
        for name in ("frames_per_batch", "learning_starts", "batch_size"):
            if getattr(self, name) > self.buffer_size:
                what = " (each collector batch would overwrite the replay buffer)" if name == "frames_per_batch" else ""
                raise ConfigurationError(
                    f"replay.{name}={getattr(self, name)} is not allowed: it must not exceed "
                    f"buffer_size={self.buffer_size}{what}"
                )


@dataclass(frozen=True)
class OffPolicyOptim(Settings):
    """The objective and the optimiser of SAC and TD3 (one Adam, a param group per network).

    Args:
        critic_lr: the critics' learning rate (null: the paper's, 5e-5 for hypernetwork critics, 3e-4 otherwise).
        actor_lr: the actor's learning rate.
        gamma: the discount.
        tau: the Polyak coefficient of the target critics.
        fused_adam: torch's fused Adam (null: where every parameter allows it).
    """

    GROUP: ClassVar[str] = "optim"

    critic_lr: PositiveFloat | None = None
    actor_lr: PositiveFloat = 3e-4
    gamma: ClosedUnitInterval = 0.99
    tau: LeftOpenUnitInterval = 0.005
    fused_adam: bool | None = None


@dataclass(frozen=True)
class Evaluation(Settings):
    """The evaluation of SAC and TD3.

    Args:
        eval_episodes: deterministic episodes per evaluation.
    """

    GROUP: ClassVar[str] = "evaluation"

    eval_episodes: PositiveInt = 10


# --------------------------------------------------------------------------------------------- MetaSAC and PEARL
@dataclass(frozen=True)
class MultiTaskReplay(Settings):
    """The per-task replay buffers and the collection schedule of MetaSAC and PEARL.

    Args:
        meta_batch_size: tasks per update.
        batch_size: transitions per task and update.
        buffer_size: replay capacity per train task.
        initial_steps: transitions collected per train task before training (PEARL's ``num_initial_steps``).
        tasks_per_iteration: tasks drawn per collection iteration (``num_tasks_sample``).
        updates_per_iteration: updates per collection iteration (``num_train_steps_per_itr``).
    """

    GROUP: ClassVar[str] = "replay"

    meta_batch_size: PositiveInt = 16
    batch_size: PositiveInt = 256
    buffer_size: PositiveInt = 1_000_000
    initial_steps: PositiveInt = 2000
    tasks_per_iteration: PositiveInt = 5
    updates_per_iteration: PositiveInt = 2000

    def check(self) -> None:
        if self.batch_size > self.buffer_size:
            raise ConfigurationError(f"replay.batch_size={self.batch_size} is not allowed: it must not exceed "
                                     f"buffer_size={self.buffer_size}")


@dataclass(frozen=True)
class MetaSACReplay(MultiTaskReplay):
    """MetaSAC's replay (:class:`MultiTaskReplay`) and its per-task collection.

    Args:
        steps_per_task: transitions collected per drawn task and iteration (PEARL's ``num_steps_prior +
            num_extra_rl_steps_posterior``).
    """

    steps_per_task: NonNegativeInt = 1000


@dataclass(frozen=True)
class PEARLReplay(MultiTaskReplay):
    """PEARL's replay (:class:`MultiTaskReplay`), its context sampling and its per-task collection
    (:mod:`hyperrl.data.pearl`).

    Args:
        embedding_batch_size: context transitions sampled per task.
        embedding_mini_batch_size: context transitions per task an update uses (divides ``embedding_batch_size``).
        num_steps_prior: transitions per drawn task with ``z`` from the prior.
        num_steps_posterior: transitions per drawn task with ``z`` from the posterior, kept for the encoder.
        num_extra_rl_steps_posterior: transitions per drawn task with ``z`` from the posterior, for the RL only.
        update_post_train: transitions between posterior updates during collection.
    """

    embedding_batch_size: PositiveInt = 100
    embedding_mini_batch_size: PositiveInt = 100
    num_steps_prior: NonNegativeInt = 400
    num_steps_posterior: NonNegativeInt = 0
    num_extra_rl_steps_posterior: NonNegativeInt = 600
    update_post_train: PositiveInt = 1

    def check(self) -> None:
        super().check()
        if self.embedding_batch_size % self.embedding_mini_batch_size:
            raise ConfigurationError(
                f"replay.embedding_mini_batch_size={self.embedding_mini_batch_size} is not allowed: it must divide "
                f"embedding_batch_size={self.embedding_batch_size}"
            )


def check_lr_decay(updates: Any, final: Any) -> tuple[int, int] | None:
    """Validate ``lr_decay_updates`` (``None`` or ``[start, end]`` update counts, ``0 <= start < end``) and
    ``lr_decay_final`` (a factor in ``[0, 1]``); returns the window as a tuple."""
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0.0 <= final <= 1.0:
        raise ConfigurationError(f"optim.lr_decay_final={final!r} is not allowed: expected a number in [0, 1]")
    if updates is None:
        return None
    ok = (isinstance(updates, (list, tuple)) and len(updates) == 2
          and all(isinstance(u, int) and not isinstance(u, bool) for u in updates)
          and 0 <= updates[0] < updates[1])  # fmt: skip
    if not ok:
        raise ConfigurationError(f"optim.lr_decay_updates={updates!r} is not allowed: expected null or [start, end], "
                                 "update counts with 0 <= start < end")
    return int(updates[0]), int(updates[1])


@dataclass(frozen=True)
class ContextSACOptim(Settings):
    """The objective and the optimiser of MetaSAC and PEARL (one Adam, a param group per network).

    Args:
        critic_lr: the Q and V networks' learning rate (null: the authors' rule).
        policy_lr: the policy's learning rate (null: the authors' rule).
        reward_scale: the reward scale (the inverse temperature).
        gamma: the discount.
        tau: the Polyak coefficient of the target V.
        policy_mean_reg: the weight of the policy's mean regulariser.
        policy_std_reg: the weight of the policy's log-std regulariser.
        fused_adam: torch's fused Adam (null: where every parameter allows it).
        lr_decay_updates: ``[start, end]`` update counts over which every learning rate decays along a half cosine
            to ``lr_decay_final`` times itself, and stays there (null, the authors': constant rates).
        lr_decay_final: the factor the decay ends at.
    """

    GROUP: ClassVar[str] = "optim"

    critic_lr: PositiveFloat | None = None
    policy_lr: PositiveFloat | None = None
    reward_scale: PositiveFloat = 5.0
    gamma: ClosedUnitInterval = 0.99
    tau: LeftOpenUnitInterval = 0.005
    policy_mean_reg: NonNegativeFloat = 1e-3
    policy_std_reg: NonNegativeFloat = 1e-3
    fused_adam: bool | None = None
    lr_decay_updates: tuple[int, int] | None = None
    lr_decay_final: ClosedUnitInterval = 0.0

    def check(self) -> None:
        check_lr_decay(self.lr_decay_updates, self.lr_decay_final)

    @property
    def lr_decay(self) -> tuple[int, int] | None:
        """The decay window as a tuple, or ``None``."""
        return check_lr_decay(self.lr_decay_updates, self.lr_decay_final)


@dataclass(frozen=True)
class ContextEvaluation(Settings):
    """The evaluation of MetaSAC and PEARL.

    Args:
        eval_train_tasks: how many train tasks to evaluate (null: as many as test tasks, as PEARL).
    """

    GROUP: ClassVar[str] = "evaluation"

    eval_train_tasks: PositiveInt | None = None


@dataclass(frozen=True)
class MetaSACEvaluation(ContextEvaluation):
    """MetaSAC's evaluation.

    Args:
        eval_episodes: deterministic episodes per evaluated task.
    """

    eval_episodes: PositiveInt = 1


@dataclass(frozen=True)
class PEARLEvaluation(ContextEvaluation):
    """PEARL's evaluation (:class:`~hyperrl.algos.meta_eval.AdaptationEvaluator`).

    Args:
        num_exp_traj_eval: exploration episodes before the posterior is used.
        num_steps_per_eval: steps per evaluation run.
        num_evals: runs per task.
        eval_sample_exploration: sample the exploration episodes' actions (default: deterministic, rlkit's).
    """

    num_exp_traj_eval: NonNegativeInt = 2
    num_steps_per_eval: PositiveInt = 600
    num_evals: PositiveInt = 1
    eval_sample_exploration: bool = False


# --------------------------------------------------------------------------------------------- MAML
@dataclass(frozen=True)
class Adaptation(Settings):
    """MAML's inner loop.

    Args:
        adaptation_steps: inner SGD steps (0: context-MAML).
        fast_lr: the inner step size (null: the policy's, 0.1 for MLPs, 0.02 for hypernetworks).
        first_order: first-order MAML (no derivative through the inner step).
    """

    GROUP: ClassVar[str] = "adaptation"

    adaptation_steps: NonNegativeInt = 1
    fast_lr: float | None = None
    first_order: bool = False

    def check(self) -> None:
        if self.fast_lr is not None:
            _require_finite("adaptation", "fast_lr", self.fast_lr, "positive")


@dataclass(frozen=True)
class Sampling(Settings):
    """MAML's episodes per meta-update.

    Args:
        meta_batch_size: tasks per meta-update.
        fast_batch_size: episodes per task, before and after adaptation.
    """

    GROUP: ClassVar[str] = "sampling"

    meta_batch_size: PositiveInt = 40
    fast_batch_size: PositiveInt = 20


POST_ADAPTATION_BASELINES = ("pre", "refit")


@dataclass(frozen=True)
class MAMLOptim(Settings):
    """MAML's objective (returns, GAE, the linear baseline) and its TRPO outer step.

    Args:
        gamma: the discount.
        gae_lambda: GAE's lambda.
        baseline_reg: the ridge of the linear baseline.
        post_adaptation_baseline: the baseline that values the post-adaptation episodes: ``pre`` (fitted on the
            task's pre-adaptation episodes, the authors') or ``refit`` (fitted on the post-adaptation episodes).
        max_kl: TRPO's trust region.
        cg_iterations: conjugate-gradient iterations.
        cg_damping: the damping of the Fisher-vector product.
        ls_ratio: the line search's step shrink factor.
        ls_max_steps: the line search's most steps.
    """

    GROUP: ClassVar[str] = "optim"

    gamma: ClosedUnitInterval = 0.95
    gae_lambda: ClosedUnitInterval = 1.0
    baseline_reg: float = 1e-5
    post_adaptation_baseline: Literal["pre", "refit"] = "pre"
    max_kl: float = 1e-2
    cg_iterations: PositiveInt = 10
    cg_damping: float = 1e-5
    ls_ratio: OpenUnitInterval = 0.8
    ls_max_steps: PositiveInt = 20

    def check(self) -> None:
        for name in ("max_kl", "baseline_reg"):
            _require_finite("optim", name, getattr(self, name), "positive")
        _require_finite("optim", "cg_damping", self.cg_damping, ">= 0")


@dataclass(frozen=True)
class MAMLEvaluation(Settings):
    """MAML's evaluation.

    Args:
        eval_tasks: tasks per pool to evaluate (null: all test/OOD tasks and as many train tasks as test tasks).
        eval_episodes: episodes per task (null: ``fast_batch_size``).
        eval_adaptation_steps: inner steps in evaluation (null: ``max(adaptation_steps, 1)``).
    """

    GROUP: ClassVar[str] = "evaluation"

    eval_tasks: PositiveInt | None = None
    eval_episodes: PositiveInt | None = None
    eval_adaptation_steps: NonNegativeInt | None = None
