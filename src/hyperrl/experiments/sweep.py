"""``hyperrl sweep``: a grid of ``hyperrl fit`` runs as one Ray Tune experiment, on this machine or a Ray cluster
(docs/sweeps.md has the sweep file's format, what a sweep writes and how it meets faults).

    hyperrl sweep conf/sweeps/cpu_demo.yaml [--out DIR] [--address ADDR] [--max-parallel N] [--retries N]
                  [--progress-every S] [-- FIT OPTIONS]

The sweep file expands to runs ``<labels>-seed<N>`` (:mod:`hyperrl.experiments.sweep_file`); every distinct setting
is checked before anything starts. ``<out>/<run>/sweep_run.json`` is a run's one record (queued, running, done,
failed, stopped, pruned): a run done there (or pruned, under a scheduler) is skipped, the others are the trials of
one ``tune.grid_search``, under Ray Tune's ASHA scheduler when the sweep file asks for it. A trial runs the fit in
a child process (its own threads, signal handlers and crash) that resumes from the run's ``last.ckpt``. Ctrl-C /
SIGTERM stop the experiment through Tune (running fits checkpoint, queued runs never start): one summary line, exit
130 / 143. A lock on ``<out>`` refuses a second sweep into it; a lock on each run, held by its fit, makes a re-run
wait for a fit still stopping.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from hyperrl.errors import ConfigurationError
from hyperrl.experiments.sweep_file import (
    Sweep,
    check_same_settings,
    error_line,
    fit_args,
    last_checkpoint,
    load_sweep,
    progress,
    read_run_file,
    run_settings,
    update_run_file,
    validate,
)
from hyperrl.experiments.ray_cluster import check_reachable, connect_ray
from hyperrl.runs import take_lock

LOG_FILE, RUN_LOCK, SWEEP_LOCK, TUNE_DIR = "fit.log", ".run.lock", ".sweep.lock", ".tune"
PRUNED_FIELDS = ("pruned_at_frames", "score", "metric", "score_frames")  # what a pruned run's record adds
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
INSTALL = "hyperrl sweep needs Ray Tune, which is not installed: pip install 'hyperrl[ray]'"


def fit_log_header(threads: int, args: list[str]) -> str:
    """The line a run's ``fit.log`` gets before each fit: the command, quoted so that it can be pasted into a
    shell (a sweep value with spaces or brackets stays one argument)."""
    return f"\n$ OMP_NUM_THREADS={threads} hyperrl {shlex.join(args)}\n"


def final_states(sweep: Sweep) -> tuple[str, ...]:
    """The states a (re-)run skips: ``pruned`` too when the sweep has a scheduler (without one, a run pruned by an
    earlier sweep resumes from its ``last.ckpt`` and runs to its end)."""
    return ("done", "pruned") if sweep.scheduler else ("done",)


def _fit_child(args: list[str]) -> None:
    """A trial's fit process (``python -m hyperrl.experiments.sweep ARGS``): ``hyperrl.cli.main(ARGS)``, stopped
    once with SIGTERM (``last.ckpt`` written) when its stdin closes: the trial stops it or the trial's process died."""
    import threading

    def watch():
        while os.read(0, 4096):  # the raw descriptor: a reader of sys.stdin would block the interpreter's exit
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    from hyperrl.cli import main

    main(args)


def _tune_classes(jobs: dict[str, list[str]], out: str, threads: int, every: float, final: tuple[str, ...]):
    """The trial (a Tune class trainable around one fit process) and the driver's lines (a Tune callback)."""
    import fcntl

    from ray import tune

    names, cwd = list(jobs), os.getcwd()  # cwd: the driver's, so that relative paths mean the same in every fit

    class SweepFit(tune.Trainable):
        def setup(self, config):
            self.dir, self.proc = os.path.join(out, config["run"]), None
            os.makedirs(self.dir, exist_ok=True)
            self.log = open(os.path.join(self.dir, LOG_FILE), "ab")  # noqa: SIM115 - open while the fit runs
            self.lock = open(os.path.join(self.dir, RUN_LOCK), "w")  # noqa: SIM115 - held by this trial and its fit
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a fit of this run from an earlier sweep is still writing its checkpoint
                self.log.write(b"\nhyperrl sweep: waiting for the previous fit of this run to stop\n")
                self.log.flush()
                fcntl.flock(self.lock, fcntl.LOCK_EX)
            self.before = read_run_file(self.dir).get("state")
            if self.before in final:  # done (or pruned) by that fit: nothing to run
                return
            args, checkpoint = list(jobs[config["run"]]), last_checkpoint(self.dir, tidy=True)
            if checkpoint and "--ckpt_path" not in args:  # the fit continues in the checkpoint's folder
                args += ["--ckpt_path", checkpoint]
            self.resumed = bool(checkpoint)
            env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(threads))}
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            self.log.write(fit_log_header(threads, args).encode())
            self.log.flush()
            update_run_file(self.dir, state="running", command=["hyperrl", *args], resumed=self.resumed,
                             node=socket.gethostname(), threads=threads, error="", **dict.fromkeys(PRUNED_FIELDS))
            self.start = time.monotonic()
            self.proc = subprocess.Popen(  # its own session: a terminal's Ctrl-C reaches the sweep, not the fit
                [sys.executable, "-m", "hyperrl.experiments.sweep", *args], stdin=subprocess.PIPE, stdout=self.log,
                stderr=subprocess.STDOUT, env=env, cwd=cwd if os.path.isdir(cwd) else None,
                pass_fds=(self.lock.fileno(),), start_new_session=True)

        def step(self):  # short steps: Tune's stop request waits for the step to return
            if self.proc is None:  # (a score: a scheduler's metric must be in every result)
                return {"state": "skipped", "before": self.before, "done": True, "score": float("nan")}
            try:
                code = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                return {"state": "running", "node": socket.gethostname(), "resumed": self.resumed,
                        **progress(self.dir)}
            wall, error = self.record_end(code)
            if code:
                raise RuntimeError(f"exit {code}: {error}")
            return {"state": "done", "wall_s": wall, "done": True, **progress(self.dir)}

        def record_end(self, code: int) -> tuple[float, str]:
            """Record the fit's end: done (it ran to its end) or failed."""
            self.proc, wall = None, round(time.monotonic() - self.start, 1)
            error = error_line(self.log.name) if code else ""
            fields = {} if code else dict.fromkeys(PRUNED_FIELDS)  # a prune that came as the fit ended is void
            update_run_file(self.dir, state="failed" if code else "done", returncode=code, wall_s=wall, error=error,
                            **fields)
            return wall, error

        def cleanup(self):
            code = None if self.proc is None else self.proc.poll()
            if self.proc is not None and code is None:
                self.proc.stdin.close()  # the fit stops after its current step, with last.ckpt written
                code = self.proc.wait()
                if code in (128 + signal.SIGTERM, -signal.SIGTERM):  # (killed: still starting, no handler yet)
                    # a scheduler's stop was recorded by the driver before the trial was stopped: it stays "pruned"
                    pruned = read_run_file(self.dir).get("state") == "pruned"
                    update_run_file(self.dir, state="pruned" if pruned else "stopped", returncode=code, error="")
                    self.proc = None
            if self.proc is not None:  # the fit ended on its own meanwhile (its last step) or failed
                self.record_end(code)
            self.log.close()
            self.lock.close()

    class Lines(tune.Callback):
        """One line per run event: started, progress every ``every`` s (frames, eval/return), done, failed."""

        def __init__(self):
            self.shown = {}  # trial id -> time of its last progress line

        def on_trial_result(self, iteration, trials, trial, result, **info):
            now, state, frames = time.monotonic(), result["state"], result.get("train/frames")
            directory = os.path.join(out, trial.config["run"])
            if state == "running" and result.get("done") and read_run_file(directory).get("state") == "running":
                # a running fit the scheduler stops (Tune marks its result done before the trial is stopped)
                update_run_file(directory, state="pruned", pruned_at_frames=frames, score=result["score"],
                                metric=result["metric"], score_frames=result["score_frames"])
                _say(names, trial.config["run"], f"pruned by ASHA at {int(frames)} frames ({result['metric']} "
                                                 f"{result['score']:.1f} at {int(result['score_frames'])} frames)")
                return
            if state == "running" and trial.trial_id not in self.shown:
                self.shown[trial.trial_id] = now
                resumed = ", resumed from its last.ckpt" if result["resumed"] else ""
                _say(names, trial.config["run"],
                     f"running on {result['node']} ({threads} thread{'s' * (threads != 1)}){resumed}")
                return
            if state == "running" and (now - self.shown[trial.trial_id] < every or frames is None):
                return
            self.shown[trial.trial_id] = now
            parts = [f"{int(frames)} frames"] if frames is not None else []
            if result.get("metric"):
                parts.append(f"{result['metric']} {result['score']:.1f}")
            text = {"skipped": f"{result.get('before')} before: skipped",
                    "done": f"done in {result.get('wall_s', 0):.0f} s"}.get(
                state, "running")
            _say(names, trial.config["run"], text + (f" ({', '.join(parts)})" if parts else ""))

        def on_trial_error(self, iteration, trials, trial, **info):
            directory = os.path.join(out, trial.config["run"])
            record = read_run_file(directory)
            _say(names, trial.config["run"], f"failed (exit {record.get('returncode')}): {record.get('error')}  "
                                             f"[log: {os.path.join(directory, LOG_FILE)}]")

    return SweepFit, Lines


def _say(names: list[str], name: str, text: str) -> None:
    """``[ 3/12] name: text``: one line about a run, with its place in the sweep."""
    print(f"[{names.index(name) + 1:>{len(str(len(names)))}}/{len(names)}] {name}: {text}", flush=True)


def run_sweep(path: str, out: str | None = None, address: str | None = None, max_parallel: int | None = None,
              fit_options: list[str] | None = None, progress_every: float = 30.0, retries: int = 0,
              check: bool = True) -> dict[str, str]:
    """Run (or continue) the sweep in ``path``; returns ``{run: state}``. Raises :class:`KeyboardInterrupt` after a
    Ctrl-C or SIGTERM stopped it."""
    for flag, value, low in (("--max-parallel", max_parallel, 1), ("--retries", retries, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigurationError(f"{flag} {value!r} is not allowed: expected an integer >= {low}")
    sweep, fit_options = load_sweep(path), list(fit_options or [])
    for option in fit_options:  # the sweep's own: each run's folder and the checkpoint it resumes from
        if option.split("=")[0] in ("--trainer.default_root_dir", "--ckpt_path"):
            raise ConfigurationError(f"-- {option.split('=')[0]} is not allowed: the sweep gives each run its own "
                                     "folder (<out>/<run>) and resumes it from its last.ckpt; give --out instead")
    try:
        from ray import tune
    except ImportError:
        raise ConfigurationError(INSTALL) from None
    out = os.path.abspath(out or os.path.join("runs", "sweeps", sweep.name))
    check_reachable(address or os.environ.get("RAY_ADDRESS"))  # before the check: a wrong address fails at once
    if check:
        validate(sweep, out, fit_options)
    os.makedirs(out, exist_ok=True)
    lock = take_lock(os.path.join(out, SWEEP_LOCK), f"pid {os.getpid()} on {socket.gethostname()}",
                     f"another sweep ({{holder}}) is running into {out}: wait for it to end, or give another --out")
    with lock:  # released when this sweep returns or raises, not when the file object is collected
        names, todo, start = [r.name for r in sweep.runs], [], time.monotonic()
        settings = {r.name: run_settings(sweep, r) for r in sweep.runs}
        for run in sweep.runs:
            check_same_settings(os.path.join(out, run.name), settings[run.name])
        for run in sweep.runs:
            directory = os.path.join(out, run.name)
            os.makedirs(directory, exist_ok=True)
            # the grid's labels and seed, which hyperrl report groups runs by (written into done records too), and
            # the settings it runs with, which a later sweep into this folder must share
            state = update_run_file(directory, name=run.name, labels=run.labels, seed=run.seed,
                                    settings=settings[run.name]).get("state")
            if state in final_states(sweep):
                _say(names, run.name, f"{state} before: skipped")
            else:
                update_run_file(directory, state="queued")
                todo.append(run.name)
        if todo:
            _tune(tune, sweep, todo, out, address, max_parallel, fit_options, progress_every, retries)
        return _summary({n: read_run_file(os.path.join(out, n)).get("state", "queued") if n in todo else "skipped"
                         for n in names}, out, start, " or ".join(final_states(sweep)))


def _tune(tune, sweep: Sweep, todo: list[str], out: str, address: str | None, max_parallel: int | None,
          fit_options: list[str], progress_every: float, retries: int) -> None:
    """One Tune experiment, a trial per run of ``todo``, in ``<out>/.tune`` (a new one each time: the runs' own
    records say what is left, and Tune would restore the old callbacks and concurrency with the old trials)."""
    import shutil

    import ray

    from hyperrl.experiments.asha import per_environment_asha

    before = signal.getsignal(signal.SIGTERM)
    connect_ray(address, sweep.resources)
    _stop_on_sigterm()
    try:
        cpus = float(sweep.resources.get("cpus", 1))
        jobs = {r.name: fit_args(sweep, r, out, fit_options) for r in sweep.runs}
        trainable, lines = _tune_classes(jobs, out, max(1, int(cpus)), progress_every, final_states(sweep))
        scheduler = per_environment_asha(sweep) if sweep.scheduler else None
        os.environ["TUNE_RESULT_BUFFER_LENGTH"] = "1"  # one result per step: a stop acts on the result it judged
        shutil.rmtree(os.path.join(out, TUNE_DIR), ignore_errors=True)  # only Tune's bookkeeping
        tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus, "gpu": float(sweep.resources.get("gpus", 0))}),
            param_space={"run": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_parallel, scheduler=scheduler,
                                        trial_name_creator=lambda t: t.config["run"],
                                        trial_dirname_creator=lambda t: t.config["run"]),
            run_config=tune.RunConfig(  # no Tune checkpoints: each fit resumes from its own last.ckpt
                name=TUNE_DIR, storage_path=out, verbose=0, callbacks=[lines()],
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                failure_config=tune.FailureConfig(max_failures=retries)),
        ).fit()
        if not _SIGNALS:  # a pruned fit Tune stopped at the experiment's end may still be writing its checkpoint
            _wait_for_fits(out, [n for n in todo if read_run_file(os.path.join(out, n)).get("state") == "pruned"])
    finally:
        ray.shutdown()  # a local instance stops; a cluster only loses this driver
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _wait_for_fits(out: str, runs: list[str], timeout: float = 120.0) -> None:
    """Wait (at most ``timeout`` s in all) until no fit of ``runs`` holds its run lock."""
    import fcntl

    deadline = time.monotonic() + timeout
    for run in runs:
        with open(os.path.join(out, run, RUN_LOCK), "a") as lock:
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.2)


def _summary(states: dict[str, str], out: str, start: float, final: str = "done") -> dict[str, str]:
    """One line; raises :class:`KeyboardInterrupt` when runs were left stopped or not started (Ctrl-C, SIGTERM)."""
    count = {s: sum(v == s for v in states.values()) for s in ("done", "pruned", "skipped", "failed", "queued")}
    stopped = len(states) - sum(count.values())  # stopped, or still "running" when Tune gave up waiting for it
    interrupted = _SIGNALS or stopped or count["queued"]
    tail = (f", {stopped} stopped, {count['queued']} not started (the same command continues)" if interrupted else "")
    pruned = f", {count['pruned']} pruned" if count["pruned"] else ""
    print(f"sweep {out}: {count['done']} done{pruned}, {count['skipped']} skipped ({final} before), "
          f"{count['failed']} failed{tail}, {len(states)} runs, {time.monotonic() - start:.0f} s", flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return states


_SIGNALS: list[int] = []  # SIGTERM once received: Tune stops on SIGINT, which the handler raises


def _stop_on_sigterm() -> None:
    """SIGTERM -> SIGINT (Tune's interrupt: stop the trials, keep the experiment state); installed again after
    ``ray.init``, whose own handler would end the process at once."""
    signal.signal(signal.SIGTERM, lambda *_: (_SIGNALS.append(signal.SIGTERM), signal.raise_signal(signal.SIGINT)))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigurationError(message)


def main(argv: list[str]) -> int:
    argv, fit_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = _Parser(prog="hyperrl sweep", description="Run a grid of hyperrl fit runs from a sweep file on Ray Tune.",
                     epilog="Options after -- go to every hyperrl fit, e.g. -- --trainer.max_steps 200")
    parser.add_argument("sweep_file")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    parser.add_argument("--max-parallel", type=int, default=None, help="runs at a time (default: as resources allow)")
    parser.add_argument("--retries", type=int, default=0, help="times a failed run is restarted from its last.ckpt")
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    _stop_on_sigterm()
    try:
        states = run_sweep(args.sweep_file, args.out, args.address, args.max_parallel, fit_options,
                           args.progress_every, args.retries)
    except KeyboardInterrupt:
        return 128 + int(_SIGNALS[0] if _SIGNALS else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 1 if "failed" in states.values() else 0


if __name__ == "__main__":
    _fit_child(sys.argv[1:])
