"""``hyperrl sweep``: a grid of ``hyperrl fit`` runs, on this machine or as Ray tasks on a cluster.

    hyperrl sweep conf/sweeps/cpu_demo.yaml [--out DIR] [--launcher local|ray] [--address ADDR] [--max-parallel N]
                  [-- FIT OPTIONS]

A sweep file (YAML) holds only these keys::

    name: cpu_demo                   # default output folder runs/sweeps/<name> (default: the file's stem)
    configs: [../quickstart.yaml]    # base config(s), relative to the sweep file (or the working directory)
    overrides:                       # settings every run gets (dotted `hyperrl fit` options)
      trainer.max_steps: 30000
    grid:                            # axes crossed with each other; an axis is either
      critic:                        #   label -> settings of that variant
        sa_hyper_small: {model.init_args.critic: sa_hyper, model.init_args.critic_kwargs: {...}}
        mlp: {model.init_args.critic: mlp, model.init_args.critic_kwargs: null}
      model.init_args.env: [InvertedPendulum-v5, Hopper-v5]   #   or one option and its values
    seeds: [0, 1, 2]                 # crossed with the grid, given as `seed_key` (default model.init_args.seed)
    resources: {cpus: 1, gpus: 0}    # per run, requested from Ray (--launcher ray)

A key ending in ``+`` appends (``trainer.callbacks+: hyperrl.analysis.AnalysisSnapshots``). Run ``<labels>-seed<N>``
is ``hyperrl fit ... --trainer.default_root_dir <out>/<run>``: the fit writes its folder ``<out>/<run>/version_0``
(``config.yaml``, the full resolved config; ``metrics.csv``; ``checkpoints/last.ckpt``; ``snapshots/``), and the
sweep writes ``<out>/<run>/fit.log`` (the fit's stdout and stderr) and ``<out>/<run>/sweep_run.json`` (labels, seed,
command, state, exit status, wall time). Re-running the sweep skips runs whose state is ``done`` and resumes the
others from their ``last.ckpt`` (the fit continues in the same folder and ``metrics.csv``).

Before any run starts, every distinct combination of settings is parsed by the ``hyperrl fit`` command itself
(``--print_config``, in this process) and its model is built on the meta device, so an unknown key, a value of the
wrong type or a setting the model refuses stops the sweep with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hyperrl.errors import ConfigurationError
from hyperrl.jsonio import write_json

SWEEP_KEYS = ("name", "description", "configs", "overrides", "grid", "seeds", "seed_key", "resources")
RUN_FILE = "sweep_run.json"
LOG_FILE = "fit.log"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_LABEL = re.compile(r"[^A-Za-z0-9_.=+-]+")


# --------------------------------------------------------------------------------------------- the sweep file
@dataclass
class Run:
    """One ``hyperrl fit`` of the grid."""

    name: str
    labels: dict[str, str]
    seed: int
    settings: list[tuple[str, object]]  # (dotted key, value), in command-line order
    directory: str = ""
    state: str = "queued"
    error: str = ""
    returncode: int | None = None
    wall_s: float = 0.0
    resumed: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Sweep:
    name: str
    path: str
    configs: list[str]
    runs: list[Run]
    resources: dict


def _label(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _LABEL.sub("_", text).strip("_") or "x"


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep file; the grid is expanded in order (axes crossed, then seeds)."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigurationError(f"sweep file {path}: no such file")
    try:
        with open(path) as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"sweep file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict):
        raise ConfigurationError(f"sweep file {path}: expected a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigurationError(
            f"sweep file {path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(SWEEP_KEYS)}"
        )
    here = os.path.dirname(os.path.abspath(path))
    configs = spec.get("configs") or []
    if isinstance(configs, str):
        configs = [configs]
    if not isinstance(configs, list) or not configs:
        raise ConfigurationError(f"sweep file {path}: configs must name at least one base config file")
    resolved = []
    for config in configs:
        candidates = [os.path.join(here, str(config)), os.path.abspath(str(config))]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise ConfigurationError(f"sweep file {path}: base config {config!r} does not exist")
        resolved.append(os.path.normpath(found))

    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigurationError(f"sweep file {path}: overrides must be a mapping of option -> value")
    axes = _axes(path, spec.get("grid") or {})
    seeds = spec.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigurationError(f"sweep file {path}: seeds={seeds!r} is not allowed: expected a list of integers")
    seed_key = str(spec.get("seed_key", "model.init_args.seed"))
    resources = spec.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"cpus", "gpus"}:
        raise ConfigurationError(f"sweep file {path}: resources takes only cpus and gpus, got {resources!r}")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigurationError(f"sweep file {path}: resources.{key}={value!r} is not allowed: expected a number >= 0")

    runs = []
    for combination in itertools.product(*[variants for _, variants in axes]):
        if not seeds:
            break
        labels = {axis: label for (axis, _), (label, _) in zip(axes, combination)}
        settings = list(overrides.items())
        for _, values in combination:
            settings += list(values.items())
        for seed in seeds:
            name = "-".join([*labels.values(), f"seed{seed}"])
            runs.append(Run(name, dict(labels), int(seed), [*settings, (seed_key, int(seed))]))
    if not runs:
        raise ConfigurationError(f"sweep file {path}: the grid is empty (an axis or seeds has no values)")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigurationError(f"sweep file {path}: two runs would share the folder {dup!r}: use distinct labels")
    name = str(spec.get("name") or os.path.splitext(os.path.basename(path))[0])
    return Sweep(name, os.path.abspath(path), resolved, runs, dict(resources))


def _axes(path: str, grid) -> list[tuple[str, list[tuple[str, dict]]]]:
    if not isinstance(grid, dict):
        raise ConfigurationError(f"sweep file {path}: grid must be a mapping of axes")
    axes = []
    for axis, variants in grid.items():
        if isinstance(variants, list):  # option: [values]
            axes.append((str(axis).rsplit(".", 1)[-1], [(_label(v), {str(axis): v}) for v in variants]))
        elif isinstance(variants, dict) and all(isinstance(v, dict) for v in variants.values()):
            axes.append((str(axis), [(_label(label), dict(v)) for label, v in variants.items()]))
        else:
            raise ConfigurationError(
                f"sweep file {path}: grid axis {axis!r} must be a list of values of that option, or a mapping "
                "label -> {option: value}"
            )
        if not axes[-1][1]:
            raise ConfigurationError(f"sweep file {path}: the grid is empty (axis {axis!r} has no values)")
    return axes


# --------------------------------------------------------------------------------------------- fit command lines
def setting_args(settings: list[tuple[str, object]]) -> list[str]:
    """``[("trainer.max_steps", 10), ("trainer.callbacks+", {...})]`` -> ``hyperrl fit`` arguments."""
    args = []
    for key, value in settings:
        text = value if isinstance(value, str) else json.dumps(value)
        if key.endswith("+"):
            args.append(f"--{key}={text}")
        else:
            args += [f"--{key}", text]
    return args


def fit_args(sweep: Sweep, run: Run, out: str, fit_options: list[str]) -> list[str]:
    """The ``hyperrl fit`` arguments of ``run`` (without ``--ckpt_path``): configs, sweep settings, the run's folder
    (``--trainer.default_root_dir <out>/<run>``: the fit writes to ``<out>/<run>/version_0``), then the
    ``-- FIT OPTIONS`` of the command line (which win)."""
    args = ["fit"]
    for config in sweep.configs:
        args += ["--config", config]
    root = ["--trainer.default_root_dir", os.path.join(out, run.name)]
    return args + setting_args(run.settings) + root + list(fit_options)


# --------------------------------------------------------------------------------------------- validation
def _cli_check(args: list[str]) -> str:
    """Parse ``hyperrl fit args --print_config`` in this process; returns the printed config or raises
    :class:`ConfigurationError` with the CLI's one-line error."""
    from hyperrl.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main([*args, "--print_config"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if code != 0:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {code}"
        raise ConfigurationError(message.removeprefix("hyperrl: error: "))
    return out.getvalue()


def _build_model(config_text: str) -> None:
    """Check the printed config as the fit would before it starts: the trainer settings Lightning only rejects later
    (``hyperrl.cli``'s own check, e.g. ``val_check_interval 0``), then the model, instantiated on the meta device (no
    memory, no weights) so its own checks (critic names and options, environment id, sizes) run. What depends on the
    machine a run lands on (``trainer.accelerator: gpu`` on a CPU node) is left to the run."""
    import importlib

    import torch
    import yaml

    from hyperrl.cli import _check_trainer_settings

    config = yaml.safe_load(config_text) or {}
    _check_trainer_settings(config)
    model = config.get("model") or {}
    class_path, init_args = model.get("class_path"), dict(model.get("init_args") or {})
    if not class_path:
        return
    module_name, _, class_name = str(class_path).rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        with torch.device("meta"):
            cls(**init_args)
    except ConfigurationError:
        raise
    except Exception:  # noqa: BLE001 - something the meta device cannot do: build it for real
        cls(**init_args)


def validate(sweep: Sweep, out: str, fit_options: list[str], report: Callable[[str], None] = print) -> None:
    """Check every distinct combination of settings before any run starts (the seed is not part of a combination:
    only the first seed of each is checked)."""
    seen = set()
    combos = []
    for run in sweep.runs:
        key = json.dumps(run.settings[:-1], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            combos.append(run)
    report(f"checking {len(combos)} distinct setting(s) of {len(sweep.runs)} runs with hyperrl fit --print_config")
    for run in combos:
        args = fit_args(sweep, run, out, fit_options)
        try:
            _build_model(_cli_check(args))
        except ConfigurationError as exc:
            raise ConfigurationError(f"run {run.name}: {exc}") from None


# --------------------------------------------------------------------------------------------- state on disk
def read_run_file(directory: str) -> dict:
    try:
        with open(os.path.join(directory, RUN_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_run_file(run: Run, args: list[str]) -> None:
    os.makedirs(run.directory, exist_ok=True)
    record = {
        "name": run.name, "labels": run.labels, "seed": run.seed, "state": run.state, "error": run.error,
        "returncode": run.returncode, "wall_s": round(run.wall_s, 1), "resumed": run.resumed,
        "command": ["hyperrl", *args], "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **run.extra,
    }  # fmt: skip
    write_json(os.path.join(run.directory, RUN_FILE), record)


def fit_folder(directory: str) -> str | None:
    """The folder the fit of a sweep run writes to: its newest ``version_<n>`` (a resumed fit continues in the
    folder of its checkpoint, so there is one), or ``None`` before the fit has made it."""
    try:
        versions = [d for d in os.listdir(directory) if re.fullmatch(r"version_\d+", d)]
    except OSError:
        return None
    if not versions:
        return None
    return os.path.join(directory, max(versions, key=lambda d: int(d.split("_")[1])))


def last_checkpoint(directory: str) -> str | None:
    folder = fit_folder(directory)
    path = os.path.join(folder, "checkpoints", "last.ckpt") if folder else None
    return path if path and os.path.isfile(path) else None


def error_line(log_path: str) -> str:
    """The line of a failed fit's log that says why: ``hyperrl: error/stopped: ...``, else the last exception."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith(("hyperrl: error", "hyperrl: stopped")):
            return line
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def progress(directory: str) -> tuple[float | None, float | None]:
    """``(train/frames, eval/return)`` of the newest rows of a run's ``metrics.csv`` (``None`` when absent)."""
    import csv

    frames = ret = None
    path = os.path.join(fit_folder(directory) or directory, "metrics.csv")
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("train/frames"):
                    frames = float(row["train/frames"])
                if row.get("eval/return"):
                    ret = float(row["eval/return"])
    except (OSError, ValueError, csv.Error):
        pass
    return frames, ret


# --------------------------------------------------------------------------------------------- launchers
def _thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _run_fit(args: list[str], log_path: str, env: dict | None = None, cwd: str | None = None) -> int:
    """Run ``python -m hyperrl.cli ARGS`` with its output in ``log_path``; returns its exit status. The log's header
    line gives the thread count the fit was started with (``$ OMP_NUM_THREADS=2 hyperrl fit ...``)."""
    threads = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} " if env and "OMP_NUM_THREADS" in env else ""
    with open(log_path, "ab") as log:
        log.write(f"\n$ {threads}hyperrl {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "hyperrl.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL, cwd=cwd)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise


class Monitor:
    """Prints one line per run state change and, every ``every`` seconds, the frames/s of the running runs."""

    def __init__(self, runs: list[Run], every: float = 30.0, stream=None) -> None:
        self.runs, self.every, self.stream = runs, every, stream or sys.stdout
        self.lock = threading.Lock()
        self._seen: dict[str, tuple[float, float]] = {}
        self._last_report = time.monotonic()
        self.width = len(str(len(runs)))

    def line(self, run: Run, text: str) -> None:
        index = self.runs.index(run) + 1
        with self.lock:
            print(f"[{index:>{self.width}}/{len(self.runs)}] {run.name}: {text}", file=self.stream, flush=True)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.every:
            return
        self._last_report = now
        for run in self.runs:
            if run.state != "running":
                continue
            frames, ret = progress(run.directory)
            text = "running"
            if frames is not None:
                text += f", {int(frames)} frames"
                before = self._seen.get(run.name)
                if before is not None and frames > before[1]:
                    text += f" at {(frames - before[1]) / (now - before[0]):.0f} frames/s"
                self._seen[run.name] = (now, frames)
            if ret is not None:
                text += f", eval/return {ret:.1f}"
            self.line(run, text)


def _launch_local(jobs, max_parallel: int, monitor: Monitor, poll: float) -> None:
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    env = _thread_env(threads)

    def work(job):
        run, args, log_path = job
        run.state = "running"
        run.extra["threads"] = threads
        start = time.monotonic()
        write_run_file(run, args)
        monitor.line(run, f"running ({threads} thread{'s' if threads > 1 else ''})")
        code = _run_fit(args, log_path, env)
        _finish(run, args, log_path, code, time.monotonic() - start, monitor)

    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        pending = {pool.submit(work, job) for job in jobs}
        while pending:
            for future in [f for f in pending if f.done()]:
                future.result()  # re-raises what went wrong in the launcher itself
                pending.discard(future)
            monitor.tick()
            if pending:
                time.sleep(poll)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "--launcher ray needs Ray, which is not installed: pip install 'hyperrl[ray]'"
        ) from None
    return ray


#: ``host:port`` or ``ray://host:port`` (Ray Client); other addresses (``auto``, ``local``) are left to Ray
_ADDRESS = re.compile(r"^(?:ray://)?(\[[^\]]+\]|[^:/\s\[\]]+):(\d+)$")
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect to a ``host:port`` Ray address, bounded by ``timeout``: Ray itself retries an unreachable
    address for minutes, printing a warning a second."""
    match = _ADDRESS.match(address.strip()) if address else None
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise ConfigurationError(
            f"--launcher ray: cannot reach the Ray cluster at {address!r} ({reason} within {timeout:g} s): "
            "is the head node up (ray start --head) and its port open?"
        ) from None


def _connect_ray(ray, address: str | None, resources: dict, report: Callable[[str], None] = print):
    """``ray.init`` (a local instance without ``address`` and ``RAY_ADDRESS``), then check that some node can ever
    run a task of ``resources``: Ray would otherwise keep such tasks pending forever, silently."""
    import logging

    given = address or os.environ.get("RAY_ADDRESS") or None
    try:
        context = ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                           logging_level=logging.WARNING)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ...: the address is the problem
        where = f"address {given!r}" if given else "a local Ray instance"
        cause, text = exc, ""
        while cause is not None:  # the innermost error says why (ConnectionError wraps an AuthenticationError)
            text = _exception_line(cause)
            if type(cause).__name__ == "AuthenticationError" or "AuthenticationError" in text:  # in Ray's message
                text = ("the cluster uses token authentication: set RAY_AUTH_MODE=token and give its token "
                        "(~/.ray/auth_token or RAY_AUTH_TOKEN)")
                break
            cause = cause.__cause__
        raise ConfigurationError(f"--launcher ray: cannot connect to {where}: {text[:300]}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    where = (context.address_info or {}).get("address") or given or "local"
    report(f"Ray at {where}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs")
    cpus, gpus = float(resources.get("cpus", 1)), float(resources.get("gpus", 0))
    fits = [n for n in nodes
            if n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus]
    if not fits:
        request = f"resources {{cpus: {cpus:g}, gpus: {gpus:g}}}"
        if given is None:  # the instance this sweep started: it will never grow
            ray.shutdown()
            raise ConfigurationError(
                f"--launcher ray: no node of the local Ray instance can run a task of {request} "
                f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs): lower the sweep file's resources "
                "or give --address of a cluster that has them"
            )
        report(f"Ray: no node has {request} yet; the runs wait until one joins the cluster")
    return ray


def _exception_line(exc: BaseException) -> str:
    """One line for an exception whose message may hold a whole traceback (Ray's do): its first and last lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if any("Traceback (most recent call last)" in line for line in lines):
        first = lines[0].split("Traceback (most recent call last)")[0].strip()
        return f"{first} {lines[-1]}".strip()
    return " ".join(lines)


def _mark_running(directory: str, node: str, threads: int) -> None:
    """The task's own note that it has started (the driver reads it: Ray gives no start event)."""
    record = read_run_file(directory)
    record.update(state="running", node=node, threads=threads, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(os.path.join(directory, RUN_FILE), record)


def ray_task(args: list[str], directory: str, log_path: str, threads: int, cwd: str) -> tuple[int, float, str]:
    """What one Ray task does, on whichever node Ray picked: one ``hyperrl fit`` with ``threads`` threads, in the
    driver's working directory when the node has it (relative paths in ``-- FIT OPTIONS``). A task Ray runs again
    (its worker or node died) resumes from the run's ``last.ckpt``. Returns (exit status, wall seconds, node)."""
    node = socket.gethostname()
    if not os.path.isdir(directory):
        raise RuntimeError(
            f"the run folder {directory} does not exist on Ray node {node}: the sweep's --out folder must be on a "
            "filesystem every node sees"
        )
    args = list(args)
    checkpoint = last_checkpoint(directory)
    if checkpoint is not None and "--ckpt_path" not in args:
        args += ["--ckpt_path", checkpoint]
    _mark_running(directory, node, threads)
    start = time.monotonic()
    code = _run_fit(args, log_path, _thread_env(threads), cwd=cwd if os.path.isdir(cwd) else None)
    return code, time.monotonic() - start, node


def _launch_ray(jobs, ray, resources: dict, monitor: Monitor, poll: float) -> None:
    cpus, gpus = float(resources.get("cpus", 1)), float(resources.get("gpus", 0))
    threads = max(1, int(cpus))
    task = ray.remote(ray_task).options(num_cpus=cpus, num_gpus=gpus)
    refs = {}
    for run, args, log_path in jobs:
        ref = task.remote(args, run.directory, log_path, threads, os.getcwd())
        refs[ref] = (run, args, log_path)
        monitor.line(run, f"submitted to Ray ({cpus:g} CPU, {gpus:g} GPU)")
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=poll)
            for run, _, _ in refs.values():  # started since the last look?
                if run.state == "queued":
                    record = read_run_file(run.directory)
                    if record.get("state") == "running":
                        run.state = "running"
                        run.extra.update(node=record.get("node"), threads=record.get("threads", threads))
                        n = run.extra["threads"]
                        monitor.line(run, f"running on {record.get('node', '?')} ({n} thread{'s' if n != 1 else ''})")
            for ref in ready:
                run, args, log_path = refs.pop(ref)
                try:
                    code, wall, node = ray.get(ref)
                    run.extra.update(node=node, threads=threads)
                except Exception as exc:  # noqa: BLE001 - the task itself failed (node lost, folder not shared, ...)
                    cause = getattr(exc, "cause", None) or exc
                    code, wall = 1, 0.0
                    text = _exception_line(cause)
                    with open(log_path, "a") as f:
                        f.write(f"hyperrl: error: Ray task failed: {type(cause).__name__}: {text[:300]}\n")
                _finish(run, args, log_path, code, wall, monitor)
            monitor.tick()
    except BaseException:  # interrupted: stop the tasks (their fits die with them); the next sweep resumes them
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


def _finish(run: Run, args, log_path: str, code: int, wall: float, monitor: Monitor) -> None:
    run.returncode, run.wall_s = code, wall
    if code == 0:
        run.state = "done"
        frames, ret = progress(run.directory)
        # a run shorter than log_every_n_steps logged no training row: say nothing rather than "0 frames"
        parts = ([f"{int(frames)} frames"] if frames is not None else []) + (
            [f"eval/return {ret:.1f}"] if ret is not None else [])
        monitor.line(run, f"done in {wall:.0f} s" + (f" ({', '.join(parts)})" if parts else ""))
    else:
        run.state = "failed"
        run.error = error_line(log_path)
        monitor.line(run, f"failed (exit {code}): {run.error}  [log: {log_path}]")
    write_run_file(run, args)


# --------------------------------------------------------------------------------------------- the command
def run_sweep(
    path: str,
    out: str | None = None,
    launcher: str = "local",
    address: str | None = None,
    max_parallel: int = 1,
    fit_options: list[str] | None = None,
    progress_every: float = 30.0,
    poll: float = 0.5,
    check: bool = True,
) -> list[Run]:
    """Run (or continue) the sweep in ``path``; returns its runs with their final states."""
    fit_options = list(fit_options or [])
    if launcher not in ("local", "ray"):
        raise ConfigurationError(f"--launcher {launcher!r} is not allowed: expected local or ray")
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise ConfigurationError(f"--max-parallel {max_parallel!r} is not allowed: expected a positive integer")
    sweep = load_sweep(path)
    out = os.path.abspath(out or os.path.join("runs", "sweeps", sweep.name))
    ray = None
    if launcher == "ray":
        ray = _import_ray()
        check_reachable(address or os.environ.get("RAY_ADDRESS"))  # before the check: a bad address fails fast
    if check:
        validate(sweep, out, fit_options)
    if ray is not None:
        _connect_ray(ray, address, sweep.resources)
    try:
        return _run_jobs(sweep, out, fit_options, ray, max_parallel, progress_every, poll)
    finally:
        if ray is not None:
            ray.shutdown()  # a local instance stops; a cluster only loses this driver


def _run_jobs(sweep: Sweep, out: str, fit_options: list[str], ray, max_parallel: int, progress_every: float,
              poll: float) -> list[Run]:
    monitor = Monitor(sweep.runs, every=progress_every)
    jobs = []
    for run in sweep.runs:
        run.directory = os.path.join(out, run.name)
        previous = read_run_file(run.directory)
        if previous.get("state") == "done":
            run.state, run.returncode, run.wall_s = "skipped", 0, float(previous.get("wall_s") or 0)
            monitor.line(run, "done before: skipped")
            continue
        args = fit_args(sweep, run, out, fit_options)
        checkpoint = last_checkpoint(run.directory)
        if checkpoint is not None:  # the fit continues in the checkpoint's folder, appending to its metrics.csv
            args += ["--ckpt_path", checkpoint]
            run.resumed = True
        os.makedirs(run.directory, exist_ok=True)
        write_run_file(run, args)
        monitor.line(run, "queued" + (f" (resumes from {checkpoint})" if checkpoint else ""))
        jobs.append((run, args, os.path.join(run.directory, LOG_FILE)))
    start = time.monotonic()
    if jobs:
        if ray is not None:
            _launch_ray(jobs, ray, sweep.resources, monitor, poll)
        else:
            _launch_local(jobs, max_parallel, monitor, poll)
    summary(sweep.runs, time.monotonic() - start, out)
    return sweep.runs


def summary(runs: list[Run], wall: float, out: str, stream=None) -> None:
    stream = stream or sys.stdout
    counts = {s: sum(r.state == s for r in runs) for s in ("done", "skipped", "failed")}
    print(f"sweep {out}: {counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed, "
          f"{len(runs)} runs, {wall:.0f} s", file=stream)
    for run in runs:
        if run.state == "failed":
            print(f"  failed: {run.name}: {run.error} (log {os.path.join(run.directory, LOG_FILE)})", file=stream)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigurationError(message)


def main(argv: list[str]) -> int:
    argv = list(argv)
    fit_options = []
    if "--" in argv:
        i = argv.index("--")
        argv, fit_options = argv[:i], argv[i + 1:]
    parser = _Parser(prog="hyperrl sweep", description="Run a grid of hyperrl fit runs from a sweep file.",
                     epilog="Options after -- go to every hyperrl fit, e.g. -- --trainer.max_steps 200")
    parser.add_argument("sweep_file")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--launcher", default="local", choices=["local", "ray"])
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--max-parallel", type=int, default=1, help="local launcher: runs at a time")
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    runs = run_sweep(args.sweep_file, args.out, args.launcher, args.address, args.max_parallel, fit_options,
                     progress_every=args.progress_every)
    return 1 if any(r.state == "failed" for r in runs) else 0
