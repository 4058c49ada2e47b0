"""Meta-RL task families: the task API every family shares, seeded task pools and oracle-context normalisation.

A *task* is a plain dict of Python floats/lists (``{"velocity": 1.3}``, ``{"direction": -1.0}``,
``{"goal": [x, y]}``), so that it goes into a checkpoint loadable with ``torch.load(weights_only=True)``.
A *family* (:class:`TaskFamily`) describes, without a simulator, what its tasks are: the task key, the named task
distributions, the train/test/OOD splits and how a task becomes its oracle context.

Oracle context of a task with raw value ``x`` (``(context_dim,)``: the velocity, the direction or the goal), with
bounds ``low``/``high`` (per context coordinate, in task units) and the family's output range ``[r0, r1]``::

    c = r0 + (r1 - r0) * (x - low) / (high - low)

* velocity: ``[r0, r1] = [0, 1]``, so ``c = (v - min) / (max - min)``;
* direction: ``[-1, 1]`` with bounds ``[-1, 1]``, so ``c = dir`` (the authors' ``dir / max``);
* goal: ``[-1, 1]``, so ``c = 2 (goal - min) / (max - min) - 1``, with a **scalar** ``min``/``max`` over both
  coordinates of the train goals (the authors' choice; it scales both axes alike, keeping the geometry). The bounds
  are stored per coordinate, so a per-coordinate normalisation is one ``set_context_bounds`` call away.

:func:`make_task_pools` takes ``min``/``max`` from the TRAIN pool only, so out-of-distribution tasks map outside
the train range (``> 1`` for HalfCheetah-Vel-Medium's OOD velocities), as in the paper.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from hyperrl.errors import ConfigurationError

# --------------------------------------------------------------------------------------------------------------
# Families (data only)


def _uniform(low: float, high: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(low, high, size=(n, 1))

    draw.description = f"U[{low:g}, {high:g}]"
    return draw


def _choice(values: tuple[float, ...]) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(np.asarray(values, dtype=np.float64), size=(n, 1))

    draw.description = "{" + ", ".join(f"{v:+g}" for v in values) + "}"
    return draw


def _upper_half_circle(rng: np.random.Generator, n: int) -> np.ndarray:
    angle = rng.uniform(0.0, math.pi, size=n)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


_upper_half_circle.description = "unit circle, angle U[0, pi]"


def _disc(radius: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Uniform in the disc of ``radius``: angle ``U[0, 2 pi]``, radius ``radius * sqrt(U[0, 1])`` (PEARL's
    ``ant_goal.py``; the square root makes the density uniform in area)."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        angle = rng.uniform(0.0, 2.0 * math.pi, size=n)
        r = radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)

    draw.description = f"uniform in the disc of radius {radius:g}"
    return draw


def _square(half: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-half, half, size=(n, 2))

    draw.description = f"U[-{half:g}, {half:g}]^2"
    return draw


@dataclass(frozen=True)
class Split:
    """A named train/test/OOD split: which distribution each pool draws from, and the default pool sizes."""

    train: str
    test: str
    ood: str | None
    n_train: int
    n_test: int
    n_ood: int = 0


@dataclass(frozen=True)
class TaskFamily:
    """What the tasks of a family are (no simulator).

    ``key``: the task dict's one key; ``context_dim``: length of the raw task value and of its context;
    ``context_range``: ``(r0, r1)`` the bounds map to; ``nominal_low``/``nominal_high``: the default bounds (the
    nominal train range); ``distributions``: name -> sampler ``(rng, n) -> (n, context_dim)`` array;
    ``fixed_tasks``: a family with a fixed task set (directions) ignores seeds and sizes; ``allow_overlap``: whether
    test tasks may equal train tasks.
    """

    name: str
    key: str
    context_dim: int
    context_range: tuple[float, float]
    nominal_low: float
    nominal_high: float
    default_value: tuple[float, ...]
    distributions: Mapping[str, Callable[[np.random.Generator, int], np.ndarray]]
    splits: Mapping[str, Split]
    allow_overlap: bool = False
    fixed_tasks: tuple[float, ...] | None = None

    # tasks <-> raw arrays ------------------------------------------------------------------------------------
    def make_task(self, value) -> dict:
        """The plain-data task for a raw value of shape ``(context_dim,)``."""
        value = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
        return {self.key: value[0]} if self.context_dim == 1 else {self.key: value}

    def raw(self, task) -> np.ndarray:
        """The raw value ``(context_dim,)`` float64 of a valid task."""
        return np.asarray(self.validate(task)[self.key], dtype=np.float64).reshape(self.context_dim)

    def validate(self, task) -> dict:
        """Check a task and return it as plain data (Python floats); ConfigurationError otherwise."""
        expected = (
            f"a dict {{{self.key!r}: "
            + ("a finite float" if self.context_dim == 1 else f"a list of {self.context_dim} finite floats")
            + "}"
            + (f" with {self.key} in {list(self.fixed_tasks)}" if self.fixed_tasks else "")
        )
        if not isinstance(task, Mapping) or set(task) != {self.key}:
            raise ConfigurationError(f"task {task!r} is not allowed for a {self.name} family: expected {expected}")
        value = task[self.key]
        if self.context_dim == 1:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            values = [float(value)] if ok else None
        else:
            try:
                values = [float(v) for v in value] if not isinstance(value, (str, bytes)) else None
            except (TypeError, ValueError):
                values = None
            ok = values is not None and len(values) == self.context_dim and all(map(math.isfinite, values))
        if not ok or (self.fixed_tasks is not None and values[0] not in self.fixed_tasks):
            raise ConfigurationError(f"task {task!r} is not allowed for a {self.name} family: expected {expected}")
        return self.make_task(values)

    # sampling --------------------------------------------------------------------------------------------------
    def sample(self, n: int, rng, distribution: str = "train") -> list[dict]:
        """``n`` tasks drawn from the named distribution; ``rng`` is an int seed or a numpy ``Generator``."""
        _require_size("n", n)
        if distribution not in self.distributions:
            raise ConfigurationError(
                f"distribution={distribution!r} is not allowed for a {self.name} family: "
                f"expected one of {sorted(self.distributions)}"
            )
        rng = as_generator(rng)
        return [self.make_task(row) for row in self.distributions[distribution](rng, int(n))]

    # context ---------------------------------------------------------------------------------------------------
    def check_bounds(self, low, high) -> tuple[list[float], list[float]]:
        """Bounds as two lists of ``context_dim`` floats (a scalar is broadcast); ``high > low`` everywhere."""
        out = []
        for name, b in (("low", low), ("high", high)):
            try:
                arr = np.broadcast_to(np.asarray(b, dtype=np.float64), (self.context_dim,))
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"context {name}={b!r} is not allowed: expected a float or {self.context_dim} floats"
                ) from None
            if not np.isfinite(arr).all():
                raise ConfigurationError(f"context {name}={b!r} is not allowed: expected finite values")
            out.append([float(v) for v in arr])
        if not all(h > lo for lo, h in zip(*out)):
            raise ConfigurationError(
                f"context bounds low={out[0]} high={out[1]} are not allowed: expected high > low in every coordinate"
            )
        return out[0], out[1]

    def context(self, task, low, high) -> np.ndarray:
        """The normalised oracle context ``(context_dim,)`` float32 (equation in the module docstring)."""
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        r0, r1 = self.context_range
        return (r0 + (r1 - r0) * (self.raw(task) - low) / (high - low)).astype(np.float32)

    def bounds_from(self, tasks) -> tuple[list[float], list[float]]:
        """The normalisation bounds of a (train) pool: min/max over its tasks (scalar over coordinates)."""
        values = np.stack([self.raw(t) for t in tasks])
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            raise ConfigurationError(
                f"train pool {list(tasks)!r} has a degenerate context range [{lo}, {hi}]: "
                "expected at least two distinct train tasks (n_train_tasks >= 2)"
            )
        return [lo] * self.context_dim, [hi] * self.context_dim

    @property
    def default_task(self) -> dict:
        return self.make_task(self.default_value)


def _velocity_splits() -> dict[str, Split]:
    return {
        "default": Split("train", "train", None, 100, 30),
        # HalfCheetah-Vel-Medium (PEARL's cheetah-vel-medium): its "test" set U[2.5, 3] is our OOD pool.
        "medium": Split("medium", "medium", "ood", 100, 30, 30),
    }


VELOCITY = TaskFamily(
    name="velocity",
    key="velocity",
    context_dim=1,
    context_range=(0.0, 1.0),
    nominal_low=0.0,
    nominal_high=3.0,
    default_value=(1.5,),
    distributions={"train": _uniform(0.0, 3.0), "medium": _uniform(0.0, 2.5), "ood": _uniform(2.5, 3.0)},
    splits=_velocity_splits(),
)

DIRECTION = TaskFamily(
    name="direction",
    key="direction",
    context_dim=1,
    context_range=(-1.0, 1.0),
    nominal_low=-1.0,
    nominal_high=1.0,
    default_value=(1.0,),
    distributions={"train": _choice((-1.0, 1.0))},
    splits={"default": Split("train", "train", None, 2, 2)},
    allow_overlap=True,
    fixed_tasks=(-1.0, 1.0),
)

NAVIGATION_GOAL = TaskFamily(
    name="navigation goal",
    key="goal",
    context_dim=2,
    context_range=(-1.0, 1.0),
    nominal_low=-1.0,
    nominal_high=1.0,
    default_value=(0.0, 1.0),
    distributions={"train": _upper_half_circle},
    splits={"default": Split("train", "train", None, 80, 20)},
)

ANT_GOAL = TaskFamily(
    name="ant goal",
    key="goal",
    context_dim=2,
    context_range=(-1.0, 1.0),
    nominal_low=-3.0,
    nominal_high=3.0,
    default_value=(1.5, 1.5),
    distributions={"train": _square(3.0)},
    splits={"default": Split("train", "train", None, 100, 30)},
)


# PEARL's ant-goal (its own family, not MAML's AntPos): goals uniform in the disc of radius 3; the authors' PEARL
# config (PEARL/configs/ant-goal.json) splits 150 train / 30 test.
PEARL_ANT_GOAL = replace(
    ANT_GOAL,
    name="PEARL ant goal",
    distributions={"train": _disc(3.0)},
    splits={"default": Split("train", "train", None, 150, 30)},
)


@dataclass(frozen=True)
class TaskEnvEntry:
    """A registered task env: its gymnasium entry point, horizon, constructor kwargs and task family."""

    entry_point: str
    max_episode_steps: int
    family: TaskFamily
    kwargs: Mapping = field(default_factory=dict)


TASK_ENVS: dict[str, TaskEnvEntry] = {
    "hyperrl/HalfCheetahVel-v0": TaskEnvEntry("hyperrl.envs.locomotion:HalfCheetahVelEnv", 200, VELOCITY),
    "hyperrl/HalfCheetahDir-v0": TaskEnvEntry("hyperrl.envs.locomotion:HalfCheetahDirEnv", 200, DIRECTION),
    "hyperrl/AntVel-v0": TaskEnvEntry("hyperrl.envs.locomotion:AntVelEnv", 200, VELOCITY),
    "hyperrl/AntDir-v0": TaskEnvEntry("hyperrl.envs.locomotion:AntDirEnv", 200, DIRECTION),
    "hyperrl/AntDirAngle-v0": TaskEnvEntry(
        "hyperrl.envs.locomotion:AntDirEnv", 200, DIRECTION, {"direction_as_angle": True}
    ),
    "hyperrl/AntGoal-v0": TaskEnvEntry("hyperrl.envs.locomotion:AntGoalEnv", 200, ANT_GOAL),
    "hyperrl/PearlAntGoal-v0": TaskEnvEntry("hyperrl.envs.locomotion:PearlAntGoalEnv", 200, PEARL_ANT_GOAL),
    "hyperrl/Navigation2D-v0": TaskEnvEntry("hyperrl.envs.navigation:Navigation2DEnv", 100, NAVIGATION_GOAL),
    "hyperrl/SparseNavigation2D-v0": TaskEnvEntry(
        "hyperrl.envs.navigation:Navigation2DEnv", 100, NAVIGATION_GOAL, {"sparse": True}
    ),
}
TASK_ENV_IDS: tuple[str, ...] = tuple(TASK_ENVS)


def register_task_envs() -> None:
    """Register every task env with gymnasium (idempotent); ``import hyperrl.envs`` calls it."""
    import gymnasium as gym

    for env_id, entry in TASK_ENVS.items():
        if env_id not in gym.envs.registry:
            gym.register(
                env_id, entry_point=entry.entry_point, max_episode_steps=entry.max_episode_steps, kwargs=dict(entry.kwargs)
            )


def task_family(env_id: str) -> TaskFamily:
    """The family of a registered task env id; ConfigurationError (with close matches) for another id."""
    if isinstance(env_id, str) and env_id in TASK_ENVS:
        return TASK_ENVS[env_id].family
    close = difflib.get_close_matches(str(env_id), TASK_ENV_IDS, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigurationError(
        f"unknown task family {env_id!r}{hint} (task families: {', '.join(repr(i) for i in TASK_ENV_IDS)})"
    )


def check_context_dim(env_id: str, context_dim) -> int:
    """Raise ConfigurationError unless ``context_dim`` is the context dimension of ``env_id``'s family."""
    expected = task_family(env_id).context_dim
    if isinstance(context_dim, bool) or not isinstance(context_dim, numbers.Integral) or context_dim != expected:
        raise ConfigurationError(f"context_dim={context_dim!r} is not allowed for {env_id!r}: its context has {expected}")
    return expected


# --------------------------------------------------------------------------------------------------------------
# The task API every env of a family implements


def as_generator(rng) -> np.random.Generator:
    """An int seed or a numpy ``Generator`` as a ``Generator``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ConfigurationError(f"rng={rng!r} is not allowed: expected a non-negative int seed or a numpy Generator")


class TaskEnvMixin:
    """The task API of a gymnasium env of a task family (mix in before the gymnasium base class).

    ``sample_tasks(n, rng, distribution="train")``, ``set_task(task)`` (only the reward/termination change, never
    the dynamics), ``task``, ``context_dim``, ``set_context_bounds(low, high)`` / ``context_bounds``, and
    ``context()``: the current task's normalised oracle context, which the env also puts in ``info["context"]``
    (float32, ``(context_dim,)``) at reset and at every step. Subclasses set ``task_family`` and call
    :meth:`_init_task` in their constructor.
    """

    task_family: TaskFamily

    def _init_task(self, task=None) -> None:
        family = self.task_family
        self._context_low, self._context_high = family.check_bounds(family.nominal_low, family.nominal_high)
        self.set_task(family.default_task if task is None else task)

    @property
    def context_dim(self) -> int:
        return self.task_family.context_dim

    def sample_tasks(self, n: int, rng, distribution: str = "train") -> list[dict]:
        """``n`` tasks from the family's named distribution (``"train"`` by default); see :class:`TaskFamily`."""
        return self.task_family.sample(n, rng, distribution)

    def set_task(self, task) -> None:
        """Switch to ``task`` (a plain dict); takes effect from the next step (reset for a fresh episode)."""
        self._task = self.task_family.validate(task)
        self._task_value = self.task_family.raw(self._task)
        self._context = self.task_family.context(self._task, self._context_low, self._context_high)

    @property
    def task(self) -> dict:
        """A copy of the current task."""
        return self.task_family.make_task(self._task_value)

    def set_context_bounds(self, low, high) -> None:
        """The normalisation bounds in task units (a float or ``context_dim`` floats each); default: nominal."""
        self._context_low, self._context_high = self.task_family.check_bounds(low, high)
        self._context = self.task_family.context(self._task, self._context_low, self._context_high)

    @property
    def context_bounds(self) -> tuple[list[float], list[float]]:
        return list(self._context_low), list(self._context_high)

    def context(self) -> np.ndarray:
        """The current task's normalised oracle context, ``(context_dim,)`` float32."""
        return self._context.copy()

    def get_task_state(self) -> dict:
        """Task and bounds as plain data (for exact resume)."""
        return {"task": self.task, "context_low": list(self._context_low), "context_high": list(self._context_high)}

    def set_task_state(self, state: Mapping) -> None:
        self._context_low, self._context_high = self.task_family.check_bounds(
            state["context_low"], state["context_high"]
        )
        self.set_task(state["task"])


# --------------------------------------------------------------------------------------------------------------
# Task pools


def _require_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigurationError(f"{name}={value!r} is not allowed: expected a positive integer")


def _keys(family: TaskFamily, tasks) -> list[tuple[float, ...]]:
    return [tuple(family.raw(t).tolist()) for t in tasks]


@dataclass
class TaskPools:
    """The train / test / OOD task lists of one family and split, with the train-pool normalisation bounds.

    Plain data throughout: :meth:`state_dict` goes into a ``weights_only`` checkpoint and
    :meth:`from_state_dict` rebuilds (and re-validates) it.
    """

    env_id: str
    split: str
    seed: int | None
    train: list[dict]
    test: list[dict]
    ood: list[dict]
    context_low: list[float]
    context_high: list[float]

    def __post_init__(self) -> None:
        family = task_family(self.env_id)
        if self.split not in family.splits:
            raise ConfigurationError(
                f"split={self.split!r} is not allowed for {self.env_id!r}: expected one of {sorted(family.splits)}"
            )
        for name in ("train", "test"):
            if not isinstance(getattr(self, name), (list, tuple)) or len(getattr(self, name)) == 0:
                raise ConfigurationError(f"the {name} pool of {self.env_id!r} is empty: expected at least one task")
        self.train = [family.validate(t) for t in self.train]
        self.test = [family.validate(t) for t in self.test]
        self.ood = [family.validate(t) for t in (self.ood or [])]
        if not family.allow_overlap:
            train = set(_keys(family, self.train))
            for name in ("test", "ood"):
                shared = [t for t, k in zip(getattr(self, name), _keys(family, getattr(self, name))) if k in train]
                if shared:
                    raise ConfigurationError(
                        f"the {name} pool of {self.env_id!r} overlaps the train pool ({shared[0]!r}): "
                        f"split {self.split!r} forbids tasks shared with the train pool"
                    )
        self.context_low, self.context_high = family.check_bounds(self.context_low, self.context_high)

    @property
    def family(self) -> TaskFamily:
        return task_family(self.env_id)

    @property
    def context_bounds(self) -> tuple[list[float], list[float]]:
        return list(self.context_low), list(self.context_high)

    def context(self, task) -> np.ndarray:
        """The normalised context of one task, ``(context_dim,)`` float32."""
        return self.family.context(task, self.context_low, self.context_high)

    def contexts(self, pool: str = "train") -> np.ndarray:
        """The contexts of a whole pool (``"train"``, ``"test"`` or ``"ood"``), ``(n, context_dim)`` float32."""
        if pool not in ("train", "test", "ood"):
            raise ConfigurationError(f"pool={pool!r} is not allowed: expected 'train', 'test' or 'ood'")
        tasks = getattr(self, pool)
        if not tasks:
            return np.zeros((0, self.family.context_dim), dtype=np.float32)
        return np.stack([self.context(t) for t in tasks])

    def state_dict(self) -> dict:
        return {
            "env_id": self.env_id,
            "split": self.split,
            "seed": self.seed,
            "train": [dict(t) for t in self.train],
            "test": [dict(t) for t in self.test],
            "ood": [dict(t) for t in self.ood],
            "context_low": list(self.context_low),
            "context_high": list(self.context_high),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> TaskPools:
        keys = ("env_id", "split", "seed", "train", "test", "ood", "context_low", "context_high")
        if not isinstance(state, Mapping) or set(state) != set(keys):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ConfigurationError(f"task pools state {got!r} is not allowed: expected the keys {list(keys)}")
        return cls(**{k: state[k] for k in keys})


def _draw_unseen(family: TaskFamily, distribution: str, n: int, rng: np.random.Generator, seen: set) -> list[dict]:
    """``n`` tasks, none equal to a task in ``seen`` nor to each other (the authors' ``sample_unseen_task``)."""
    out: list[dict] = []
    for _ in range(100):
        for task in family.sample(n - len(out), rng, distribution):
            key = tuple(family.raw(task).tolist())
            if key not in seen:
                seen.add(key)
                out.append(task)
        if len(out) == n:
            return out
    raise ConfigurationError(
        f"cannot draw {n} distinct {family.name} tasks from distribution {distribution!r}: it has too few "
        "(lower n_train_tasks, n_test_tasks or n_ood_tasks)"
    )


def make_task_pools(
    env_id: str,
    seed: int,
    split: str = "default",
    n_train: int | None = None,
    n_test: int | None = None,
    n_ood: int | None = None,
) -> TaskPools:
    """Draw the train / test / OOD pools of ``env_id``'s family from ``seed``.

    Each pool has its own child stream of ``SeedSequence(seed)``, so changing ``n_test`` leaves the train pool
    unchanged. Test and OOD tasks exclude exact duplicates of earlier draws (velocity/goal families); direction
    families have the fixed pools train = test = ``[-1, +1]``. Sizes ``None`` take the split's defaults (100/30
    velocity and ant goal, 150/30 PEARL's ant goal, 80/20 navigation; ``medium`` adds 30 OOD). The bounds are the
    train pool's min/max.
    """
    family = task_family(env_id)
    if split not in family.splits:
        raise ConfigurationError(
            f"tasks.split={split!r} is not allowed for {env_id!r}: expected one of {sorted(family.splits)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigurationError(f"tasks.task_seed={seed!r} is not allowed: expected a non-negative integer")
    spec = family.splits[split]
    # messages name the algorithms' settings (tasks.n_train_tasks, ...), which is what a user sets
    for name, value in (("tasks.n_train_tasks", n_train), ("tasks.n_test_tasks", n_test), ("tasks.n_ood_tasks", n_ood)):
        if value is not None:
            _require_size(name, value)
    if n_ood is not None and spec.ood is None:
        raise ConfigurationError(
            f"tasks.n_ood_tasks={n_ood!r} is not allowed for {env_id!r} split {split!r}: it has no OOD tasks "
            f"(splits with OOD tasks: {sorted(k for k, s in family.splits.items() if s.ood) or 'none'})"
        )
    if family.fixed_tasks is not None:
        fixed = [family.make_task([v]) for v in family.fixed_tasks]
        for name, value in (("tasks.n_train_tasks", n_train), ("tasks.n_test_tasks", n_test)):
            if value is not None and value != len(fixed):
                raise ConfigurationError(
                    f"{name}={value!r} is not allowed for {env_id!r}: a {family.name} family has the fixed pool "
                    f"{[t[family.key] for t in fixed]} ({len(fixed)} tasks)"
                )
        train, test, ood = list(fixed), [dict(t) for t in fixed], []
    else:
        n_train = spec.n_train if n_train is None else int(n_train)
        n_test = spec.n_test if n_test is None else int(n_test)
        n_ood = (spec.n_ood if n_ood is None else int(n_ood)) if spec.ood else 0
        train_rng, test_rng, ood_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))
        seen: set = set()
        train = _draw_unseen(family, spec.train, n_train, train_rng, seen)
        test = _draw_unseen(family, spec.test, n_test, test_rng, seen)
        ood = _draw_unseen(family, spec.ood, n_ood, ood_rng, seen) if n_ood else []
    low, high = family.bounds_from(train)
    return TaskPools(env_id, split, int(seed), train, test, ood, low, high)
