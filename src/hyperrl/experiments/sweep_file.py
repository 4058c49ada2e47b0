"""The sweep file and its runs: the format (docs/sweeps.md), its expansion into runs ``<labels>-seed<N>`` (axes
crossed, then seeds), the ``hyperrl fit`` arguments of each run, the check of every distinct setting before anything
starts, each run's record ``<out>/<run>/sweep_run.json``, which ``hyperrl report`` and ``hyperrl analyze`` read,
and what the sweep reads in a run's folder (its last checkpoint, its progress, its error line). Nothing here needs
Ray.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, fields
from typing import Literal

from jsonargparse.typing import PositiveInt, restricted_number_type

from hyperrl.errors import ConfigurationError
from hyperrl.jsonio import write_json
from hyperrl.runs import last_checkpoint_under, version_folders

SWEEP_KEYS = ("name", "description", "configs", "overrides", "grid", "seeds", "seed_key", "resources", "scheduler")
RUN_FILE = "sweep_run.json"
_LABEL = re.compile(r"[^A-Za-z0-9_.=+-]+")


@dataclass
class Run:
    """One ``hyperrl fit`` of the grid."""

    name: str
    labels: dict[str, str]
    seed: int
    settings: list[tuple[str, object]]  # (dotted key, value), in command-line order

    @property
    def env_setting(self) -> str:
        """The run's own ``model.init_args.env`` setting ("" when its config sets the environment): what a
        scheduler groups runs by."""
        return str(dict(self.settings).get("model.init_args.env", ""))


ReductionFactor = restricted_number_type("ReductionFactor", float, [(">=", 1.5), ("<=", 100)])


@dataclass(frozen=True)
class Scheduler:
    """Ray Tune's ASHA (asynchronous successive halving, Li et al. 2020) over a sweep's runs.

    A run reports its environment frames (``train/frames``) and its evaluation score (the metric ``hyperrl report``
    ranks it by). Rungs sit at ``grace_period * reduction_factor**k`` frames up to ``max_t``; the first score a run
    reports at or past a rung is compared with those the other runs reported there, and a run below the top
    ``1 / reduction_factor`` of them is stopped: state ``pruned``. A run is never stopped for reaching ``max_t``
    (its own ``trainer.max_steps`` ends it).
    """

    type: Literal["asha"]
    max_t: PositiveInt
    grace_period: PositiveInt
    reduction_factor: ReductionFactor = 4.0


@dataclass
class Sweep:
    name: str
    configs: list[str]
    runs: list[Run]
    resources: dict
    scheduler: Scheduler | None = None


def _label(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _LABEL.sub("_", text).strip("_") or "x"


def _fail(path: str, message: str):
    raise ConfigurationError(f"sweep file {path}: {message}")


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep file; the grid is expanded in order (axes crossed, then seeds)."""
    import yaml

    if not os.path.isfile(path):
        _fail(path, "no such file")
    try:
        with open(path) as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        _fail(path, f"not valid YAML: {' '.join(str(exc).split())}")
    if not isinstance(spec, dict):
        _fail(path, f"expected a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        _fail(path, f"unknown key {unknown[0]!r}; allowed keys: {', '.join(SWEEP_KEYS)}")
    configs = spec.get("configs") or []
    configs = [configs] if isinstance(configs, str) else configs
    if not isinstance(configs, list) or not configs:
        _fail(path, "configs must name at least one base config file")
    here, resolved = os.path.dirname(os.path.abspath(path)), []
    for config in map(str, configs):  # relative to the sweep file, else to the working directory
        found = [c for c in (os.path.join(here, config), os.path.abspath(config)) if os.path.isfile(c)]
        if not found:
            _fail(path, f"base config {config!r} does not exist")
        resolved.append(os.path.normpath(found[0]))
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict):
        _fail(path, "overrides must be a mapping of option -> value")
    seeds = spec.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        _fail(path, f"seeds={seeds!r} is not allowed: expected a list of integers")
    seed_key = str(spec.get("seed_key", "model.init_args.seed"))
    resources = spec.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"cpus", "gpus"}:
        _fail(path, f"resources takes only cpus and gpus, got {resources!r}")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            _fail(path, f"resources.{key}={value!r} is not allowed: expected a number >= 0")
    axes, runs = _axes(path, spec.get("grid") or {}), []
    for combination in itertools.product(*[variants for _, variants in axes]):
        labels = {axis: label for (axis, _), (label, _) in zip(axes, combination)}
        settings = list(overrides.items()) + [item for _, values in combination for item in values.items()]
        for seed in seeds:
            runs.append(Run("-".join([*labels.values(), f"seed{seed}"]), labels, seed, [*settings, (seed_key, seed)]))
    if not runs:
        _fail(path, "the grid is empty (an axis or seeds has no values)")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        _fail(path, f"two runs would share the folder {next(n for n in names if names.count(n) > 1)!r}: use "
                    "distinct labels")
    name = str(spec.get("name") or os.path.splitext(os.path.basename(path))[0])
    return Sweep(name, resolved, runs, resources, _scheduler(path, spec.get("scheduler")))


def _scheduler(path: str, spec) -> Scheduler | None:
    """The ``scheduler:`` mapping, checked by :class:`Scheduler`'s annotations."""
    from hyperrl.algos.arguments import check_arguments

    if spec is None:
        return None
    names = [f.name for f in fields(Scheduler)]
    if not isinstance(spec, dict):
        _fail(path, f"scheduler must be a mapping with keys {', '.join(names)}, got {spec!r}")
    unknown = [k for k in spec if k not in names]
    if unknown:
        _fail(path, f"unknown scheduler key {unknown[0]!r}; allowed keys: {', '.join(names)}")
    missing = [n for n in ("type", "max_t", "grace_period") if n not in spec]
    if missing:
        _fail(path, f"scheduler needs {missing[0]}" + (" (environment frames)" if missing[0] != "type" else ""))
    try:
        check_arguments(Scheduler, spec)
    except ConfigurationError as exc:
        _fail(path, f"scheduler.{exc}")
    if spec["grace_period"] > spec["max_t"]:
        _fail(path, f"scheduler.grace_period={spec['grace_period']} is not allowed: expected <= max_t "
                    f"({spec['max_t']})")
    return Scheduler(**spec)


def _axes(path: str, grid) -> list[tuple[str, list[tuple[str, dict]]]]:
    """``(axis name, [(label, settings)])`` of each grid axis."""
    if not isinstance(grid, dict):
        _fail(path, "grid must be a mapping of axes")
    axes = []
    for axis, variants in grid.items():
        if isinstance(variants, list):  # option: [values]
            axes.append((str(axis).rsplit(".", 1)[-1], [(_label(v), {str(axis): v}) for v in variants]))
        elif isinstance(variants, dict) and all(isinstance(v, dict) for v in variants.values()):
            axes.append((str(axis), [(_label(label), dict(v)) for label, v in variants.items()]))
        else:
            _fail(path, f"grid axis {axis!r} must be a list of values of that option, or a mapping label -> "
                        "{option: value}")
        if not axes[-1][1]:
            _fail(path, f"the grid is empty (axis {axis!r} has no values)")
    return axes


def setting_args(settings: list[tuple[str, object]]) -> list[str]:
    """``[("trainer.max_steps", 10), ("trainer.callbacks+", {...})]`` -> ``hyperrl fit`` arguments."""
    args = []
    for key, value in settings:
        text = value if isinstance(value, str) else json.dumps(value)
        args += [f"--{key}={text}"] if key.endswith("+") else [f"--{key}", text]
    return args


def fit_args(sweep: Sweep, run: Run, out: str, fit_options: list[str]) -> list[str]:
    """The ``hyperrl fit`` arguments of ``run`` (without ``--ckpt_path``): configs, sweep settings, the run's folder,
    then the ``-- FIT OPTIONS`` of the command line (which win)."""
    configs = [arg for config in sweep.configs for arg in ("--config", config)]
    root = ["--trainer.default_root_dir", os.path.join(out, run.name)]
    return ["fit", *configs, *setting_args(run.settings), *root, *fit_options]


def validate(sweep: Sweep, out: str, fit_options: list[str], report=print) -> None:
    """Before any run starts: ``hyperrl fit ... --print_config`` (in this process) of every distinct combination of
    settings (the first seed of each), then its model built on the meta device so the model's own checks run. What
    depends on the node a run lands on (``trainer.accelerator: gpu``) is left to the run."""
    import io
    import pydoc

    import torch
    import yaml

    from hyperrl.cli import main as cli_main

    combos, configs = {}, []
    for run in sweep.runs:
        combos.setdefault(json.dumps(run.settings[:-1], sort_keys=True, default=str), run)
    report(f"checking {len(combos)} distinct setting(s) of {len(sweep.runs)} runs with hyperrl fit --print_config")
    for run in combos.values():
        printed, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(err):
            try:
                cli_main([*fit_args(sweep, run, out, fit_options), "--print_config"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
        if code:
            lines = [line for line in err.getvalue().splitlines() if line.strip()] or [f"exit status {code}"]
            raise ConfigurationError(f"run {run.name}: {lines[-1].removeprefix('hyperrl: error: ')}")
        config = yaml.safe_load(printed.getvalue()) or {}
        model = config.get("model") or {}
        if not model.get("class_path"):
            continue
        configs.append((run, config))
        cls, init_args = pydoc.locate(str(model["class_path"])), model.get("init_args") or {}
        try:
            try:
                with torch.device("meta"):
                    cls(**init_args)
            except ConfigurationError:
                raise
            except Exception:  # noqa: BLE001 - something the meta device cannot do: build it for real
                cls(**init_args)
        except ConfigurationError as exc:
            raise ConfigurationError(f"run {run.name}: {exc}") from None
    if sweep.scheduler:
        _check_scheduler(sweep.scheduler, configs)


def _check_scheduler(scheduler: Scheduler, configs: list[tuple[Run, dict]]) -> None:
    """What ranking runs needs of them (``configs``: each run and its printed config): one algorithm (one score), an
    environment per scheduler (the runs' ``model.init_args.env`` setting, see ``hyperrl.experiments.asha``), and
    (SAC, TD3) a first rung after the first update and within the run."""
    grace, classes, envs = scheduler.grace_period, {}, {}
    for run, config in configs:
        model = config.get("model") or {}
        init = model.get("init_args") or {}
        classes.setdefault(str(model.get("class_path")), run.name)
        envs.setdefault(run.env_setting, {}).setdefault(str(init.get("env")), run.name)
        replay = init.get("replay") or {}
        starts, per_step = replay.get("learning_starts"), replay.get("frames_per_batch")
        steps = (config.get("trainer") or {}).get("max_steps")
        problem = None
        if isinstance(starts, int) and grace <= starts:
            problem = (f"expected > the run's replay.learning_starts ({starts}), or its first rung ranks policies never "
                       "updated")
        elif isinstance(per_step, int) and isinstance(steps, int) and 0 < steps * per_step < grace:
            problem = (f"expected <= the run's {steps * per_step} frames (trainer.max_steps x replay.frames_per_batch), "
                       "or "
                       "the scheduler never acts")
        if problem:
            raise ConfigurationError(f"run {run.name}: scheduler.grace_period={grace} is not allowed: {problem}")
    if len(classes) > 1:
        (first, a), (second, b) = list(classes.items())[:2]
        raise ConfigurationError(f"a scheduler ranks the runs of one algorithm: run {a} is {first}, run {b} is "
                                 f"{second}; sweep each algorithm in its own file")
    for found in envs.values():
        if len(found) > 1:
            (first, a), (second, b) = list(found.items())[:2]
            raise ConfigurationError(
                f"a scheduler would rank runs {a} ({first}) and {b} ({second}) against each other: give the "
                "environment a grid axis of its own (model.init_args.env: [...]) so that each environment gets its "
                "own scheduler")


def run_settings(sweep: Sweep, run: Run) -> dict:
    """What makes a run: its base configs and its settings from the sweep file (not the ``-- FIT OPTIONS``, which
    may change between sweeps: a larger ``max_steps`` extends the runs left), as plain JSON data."""
    return json.loads(json.dumps({"configs": sweep.configs, "settings": run.settings}, default=str))


def check_same_settings(directory: str, settings: dict) -> None:
    """Refuse a run folder that holds a run of other settings (a changed sweep file into the same ``--out``)."""
    recorded = read_run_file(directory).get("settings")
    if recorded is None or recorded == settings:
        return
    old, new = dict(map(tuple, recorded["settings"])), dict(map(tuple, settings["settings"]))
    differing = next((k for k in [*new, *old] if old.get(k) != new.get(k)), "the base configs")
    raise ConfigurationError(
        f"{directory} holds a run of other settings ({differing}: {old.get(differing)!r} there, "
        f"{new.get(differing)!r} now): give another --out, or remove that folder to run it anew")


def read_run_file(directory: str) -> dict:
    try:
        with open(os.path.join(directory, RUN_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def update_run_file(directory: str, **fields) -> dict:
    record = {**read_run_file(directory), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(os.path.join(directory, RUN_FILE), record)
    return record


# ---------------------------------------------------------------------- a run's folder, as the sweep reads it
def last_checkpoint(directory: str, tidy: bool = False) -> str | None:
    """The run's newest ``version_<n>/checkpoints/last.ckpt``; ``tidy`` removes the folders of starts killed before
    their first checkpoint (nothing to resume from), so that a run keeps one folder and its metrics once."""
    if tidy:
        import shutil

        for version in version_folders(directory):
            if not os.path.isfile(os.path.join(directory, version, "checkpoints", "last.ckpt")):
                shutil.rmtree(os.path.join(directory, version))
    return last_checkpoint_under(directory)


def error_line(log_path: str) -> str:
    """The line of a failed fit's log that says why: ``hyperrl: error/stopped: ...``, else the last exception."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return "no log"
    for pattern in (r"^hyperrl: (error|stopped)", r"^[\w.]*(Error|Exception|Interrupt)\b", ""):
        found = next((line for line in reversed(lines) if re.match(pattern, line)), None)
        if found:
            return found[:300]
    return "no output"


def progress(directory: str) -> dict:
    """From the run's ``metrics.csv``: ``train/frames`` (the newest), ``score`` (the newest value of the evaluation
    metric ``hyperrl report`` ranks the run by: the first of its ``METRICS`` the run logs; NaN before the first
    evaluation), ``metric`` (its name) and ``score_frames`` (the ``train/frames`` logged at or before that
    evaluation: the time the scheduler compares runs at)."""
    import csv

    from hyperrl.experiments.report import METRICS

    frames, scores = None, {}  # metric -> (value, frames at its row)
    with contextlib.suppress(OSError, ValueError, csv.Error):
        for version in version_folders(directory)[-1:]:
            with open(os.path.join(directory, version, "metrics.csv"), newline="") as f:
                text = f.read()
            lines = text.splitlines(keepends=True)
            complete = lines if text.endswith("\n") else lines[:-1]  # a row being written is read next time
            for row in csv.DictReader(complete):
                if None not in row.values():  # (a short row: one the logger was still writing)
                    frames = float(row["train/frames"]) if row.get("train/frames") else frames
                    scores.update({m: (float(row[m]), frames) for m in METRICS if row.get(m)})
    found = {"score": float("nan")} | ({"train/frames": frames} if frames is not None else {})
    metric = next((m for m in METRICS if m in scores), None)
    if metric:
        found.update(score=scores[metric][0], metric=metric)
        if scores[metric][1] is not None:
            found["score_frames"] = scores[metric][1]
    return found
