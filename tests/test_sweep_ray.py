"""hyperrl sweep on Ray Tune (a local instance): runs in their folders, skip and resume, failures, and faults:
Ctrl-C / SIGTERM to a running sweep, a re-run after SIGKILL, a second sweep into the same folder.

These tests skip when Ray Tune is not installed (pip install 'hyperrl[ray]'); ``nox -s tests`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from hyperrl.errors import ConfigurationError
from hyperrl.experiments.sweep import run_sweep
from hyperrl.experiments.sweep_file import progress, read_run_file, update_run_file

from conftest import run_entry
from test_sweep import sweep_file


@pytest.fixture
def tune():
    return pytest.importorskip("ray.tune", reason="Ray Tune is not installed: pip install 'hyperrl[ray]'")


def metric_steps(run_dir) -> list[int]:
    from hyperrl.experiments.report import read_metrics

    return [int(r["step"]) for r in read_metrics(str(run_dir)) if r.get("eval/return")]


def start_sweep(path: str, out, *args: str) -> tuple[subprocess.Popen, str]:
    log = os.path.join(os.path.dirname(path), f"sweep-{time.monotonic_ns()}.log")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hyperrl.commands", "sweep", path, "--out", str(out), *args],
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def wait_until_training(proc: subprocess.Popen, run_dir, log: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "train/frames" not in progress(str(run_dir)):  # a metrics row: the fit is past its start
        assert proc.poll() is None and time.monotonic() < deadline, open(log).read()[-2000:]
        time.sleep(0.5)


def test_an_unreachable_address_is_one_line_exit_2_at_once(tune, tmp_path, capsys):
    from hyperrl.commands import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code, _, err = run_entry(main, ["sweep", sweep_file(tmp_path), "--address", f"127.0.0.1:{port}", "--out",
                                    str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot reach the Ray cluster" in err
    assert time.monotonic() - start < 5  # before the sweep check, without Ray's minutes of retries
    code, _, err = run_entry(main, ["sweep", sweep_file(tmp_path), "--address", "no-such-host.invalid:6379"], capsys)
    assert code == 2 and "cannot reach the Ray cluster at 'no-such-host.invalid:6379'" in err
    assert not (tmp_path / "o").exists()


def test_resources_no_local_node_has_are_refused_not_left_pending(tune, tmp_path, no_stale_log_streams):
    import ray

    path = sweep_file(tmp_path, "grid: {}\nseeds: [0]\nresources: {cpus: 1, gpus: 1000}")
    with pytest.raises(ConfigurationError, match=r"no node of the local Ray instance .*gpus: 1000"):
        run_sweep(path, str(tmp_path / "o"), check=False)
    assert not ray.is_initialized()
    assert read_run_file(str(tmp_path / "o" / "seed0")).get("state") == "queued"  # nothing started


def test_a_sweep_runs_each_fit_in_its_folder_and_skips_it_next_time(tune, tmp_path, capsys, no_stale_log_streams):
    import ray

    out = tmp_path / "out"
    states = run_sweep(sweep_file(tmp_path), str(out), fit_options=["--trainer.max_steps", "40"])
    assert states == {"seed0": "done"} and not ray.is_initialized()
    assert read_run_file(str(out / "seed0"))["state"] == "done"
    config = (out / "seed0" / "version_0" / "config.yaml").read_text()
    assert "max_steps: 40" in config and "critic: mlp" in config  # the full resolved config of the fit
    assert (out / "seed0" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert "\n$ OMP_NUM_THREADS=1 hyperrl fit " in (out / "seed0" / "fit.log").read_text()
    record = read_run_file(str(out / "seed0"))
    (out / "seed0" / "sweep_run.json").write_text(json.dumps({k: v for k, v in record.items() if k != "seed"}))
    assert run_sweep(sweep_file(tmp_path), str(out), fit_options=["--trainer.max_steps", "40"]) == {
        "seed0": "skipped"}
    assert read_run_file(str(out / "seed0"))["seed"] == 0  # a record without it (an older sweep's) gets it
    text = capsys.readouterr().out
    assert "[1/1] seed0: running on " in text and "seed0: done in" in text and "1 done, 0 skipped" in text
    assert "seed0: done before: skipped" in text and "0 done, 1 skipped (done before), 0 failed, 1 runs" in text
    assert "0 frames" not in text, "40 steps log no training row (log_every_n_steps 50): no frame count, not 0"
    assert "Configuration for experiment" not in text and "Trial" not in text  # Tune's own tables stay quiet


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_others_and_an_interrupted_run_resumes(tune, tmp_path, capsys,
                                                                             no_stale_log_streams):
    path = sweep_file(tmp_path, """
        grid:
          variant:
            ok: {}
            bad: {trainer.val_check_interval: 0}
        seeds: [0]
        """)
    out = tmp_path / "out"
    states = run_sweep(path, str(out), fit_options=["--trainer.max_steps", "30"], check=False)
    assert states == {"ok-seed0": "done", "bad-seed0": "failed"}
    record = read_run_file(str(out / "bad-seed0"))
    assert "val_check_interval=0 is not allowed" in record["error"]
    assert record["labels"] == {"variant": "bad"} and record["seed"] == 0  # what hyperrl report groups runs by
    text = capsys.readouterr().out
    assert "bad-seed0: failed (exit 2): hyperrl: error: trainer.val_check_interval=0" in text
    assert "1 done, 0 skipped (done before), 1 failed, 2 runs" in text
    # the done run marked as interrupted: the next sweep resumes it from last.ckpt in its own folder, and retries
    # the failed one
    record = read_run_file(str(out / "ok-seed0"))
    (out / "ok-seed0" / "sweep_run.json").write_text(json.dumps({**record, "state": "running"}))
    states = run_sweep(path, str(out), fit_options=["--trainer.max_steps", "60"], check=False)
    assert states == {"ok-seed0": "done", "bad-seed0": "failed"}
    record = read_run_file(str(out / "ok-seed0"))
    assert record["resumed"] and "--ckpt_path" in record["command"]
    assert sorted(os.listdir(out / "ok-seed0")) == [".run.lock", "fit.log", "sweep_run.json", "version_0"]
    assert metric_steps(out / "ok-seed0" / "version_0") == [29, 59]  # the first fit's evaluation, then the resumed
    assert (out / "bad-seed0" / "fit.log").read_text().count("\n$ ") == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_sweep_its_fits_checkpoint_and_queued_runs_never_start(tune, tmp_path, capsys, sig, code):
    from hyperrl.commands import main

    path, out = sweep_file(tmp_path, "grid: {}\nseeds: [0, 1]"), tmp_path / "out"
    proc, log = start_sweep(path, out, "--max-parallel", "1", "--", "--trainer.max_steps", "20000")
    wait_until_training(proc, out / "seed0", log)
    if sig == signal.SIGTERM:  # a second sweep into the folder is refused while this one runs
        second, _, err = run_entry(main, ["sweep", path, "--out", str(out)], capsys)
        assert second == 2 and f"another sweep (pid {proc.pid} on " in err and len(err.strip().splitlines()) == 1
    proc.send_signal(sig)
    assert proc.wait(timeout=90) == code
    text = open(log).read()
    summary = [line for line in text.splitlines() if line.startswith("sweep ")]
    assert len(summary) == 1 and "1 stopped, 1 not started (the same command continues), 2 runs" in summary[0], text
    assert "Traceback" not in text and "Trial" not in text
    record = read_run_file(str(out / "seed0"))
    assert record["state"] == "stopped" and record["returncode"] == 143  # the fit's own clean stop
    stopped = re.search(r"hyperrl: stopped by SIGTERM after step (\d+): checkpoint (\S+);",
                        (out / "seed0" / "fit.log").read_text())
    assert stopped and os.path.isfile(stopped.group(2))
    assert read_run_file(str(out / "seed1"))["state"] == "queued" and not (out / "seed1" / "fit.log").exists()
    if sig == signal.SIGTERM:
        return
    # the same command continues: seed0 from its checkpoint in its own folder, seed1 from the start
    step = int(stopped.group(1))
    target = (step // 30 + 2) * 30  # at least one evaluation (every 30 steps) after the stop, wherever it fell
    proc, log = start_sweep(path, out, "--max-parallel", "1", "--", "--trainer.max_steps", str(target))
    assert proc.wait(timeout=180) == 0, open(log).read()[-2000:]
    assert "2 done, 0 skipped (done before), 0 failed, 2 runs" in open(log).read()
    assert read_run_file(str(out / "seed0"))["resumed"]
    for run in ("seed0", "seed1"):
        assert [d for d in os.listdir(out / run) if d.startswith("version_")] == ["version_0"]
        steps = metric_steps(out / run / "version_0")
        assert steps == sorted(set(steps)) and steps[-1] > step  # to the end, no evaluation logged twice


@pytest.mark.slow
def test_a_rerun_after_the_sweep_was_killed_runs_nothing_twice(tune, tmp_path):
    path, out = sweep_file(tmp_path, "grid: {}\nseeds: [0, 1]"), tmp_path / "out"
    proc, log = start_sweep(path, out, "--max-parallel", "1", "--", "--trainer.max_steps", "20000")
    wait_until_training(proc, out / "seed0", log)
    proc.kill()  # SIGKILL: no clean-up at all; the fit goes with Ray's worker, before its first checkpoint
    proc.wait()
    proc, log = start_sweep(path, out, "--", "--trainer.max_steps", "60")  # at once: Ray's old workers may linger
    assert proc.wait(timeout=180) == 0, open(log).read()[-2000:]
    assert "2 done, 0 skipped (done before), 0 failed, 2 runs" in open(log).read()
    for run in ("seed0", "seed1"):
        assert [d for d in os.listdir(out / run) if d.startswith("version_")] == ["version_0"]
        assert metric_steps(out / run / "version_0") == [29, 59]  # one fit's metrics, not two side by side


def test_each_environment_gets_its_own_asha(tune, tmp_path):
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from hyperrl.experiments.asha import per_environment_asha
    from hyperrl.experiments.sweep_file import load_sweep

    sweep = load_sweep(sweep_file(tmp_path, """
        grid:
          model.init_args.env: [Reacher-v5, Pendulum-v1]
        seeds: [0, 1]
        scheduler: {type: asha, max_t: 40, grace_period: 10, reduction_factor: 2}
        """))
    scheduler = per_environment_asha(sweep)
    trials = {run.name: SimpleNamespace(trial_id=run.name, config={"run": run.name}) for run in sweep.runs}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)

    def decide(run: str, score: float) -> str:
        return scheduler.on_trial_result(None, trials[run], {"score_frames": 12, "score": score})

    # the first run at a rung goes on; a later one below the best half of its environment's stops; Pendulum's
    # scores are never compared with Reacher's
    assert decide("Reacher-v5-seed0", -5.0) == TrialScheduler.CONTINUE
    assert decide("Pendulum-v1-seed0", -900.0) == TrialScheduler.CONTINUE
    assert decide("Reacher-v5-seed1", -9.0) == TrialScheduler.STOP
    assert decide("Pendulum-v1-seed1", -800.0) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials["Pendulum-v1-seed1"], {"score": float("nan")}) == "CONTINUE"


@pytest.mark.slow
def test_asha_prunes_the_worse_run_which_stays_pruned_and_out_of_the_report(tune, tmp_path, capsys,
                                                                            no_stale_log_streams):
    from hyperrl.experiments.report import discover

    # Reacher-v5 with both reward weights 0 scores 0 whatever the policy; with the default weights every step costs
    # its distance to the target (> 0): below 0 at every rung. One run at a time, in grid order: the zero-reward run
    # reports at the rungs first (nothing to compare with: it goes on), then the other is compared with it.
    path = sweep_file(tmp_path, """
        grid:
          reward:
            zero: {model.init_args.env: Reacher-v5,
                   model.init_args.env_kwargs: {reward_dist_weight: 0, reward_control_weight: 0}}
            paid: {model.init_args.env: Reacher-v5}
        seeds: [0]
        scheduler: {type: asha, max_t: 400, grace_period: 100, reduction_factor: 2}
        """)
    out = tmp_path / "out"
    states = run_sweep(path, str(out), max_parallel=1, fit_options=["--trainer.max_steps", "1500"], check=False)
    text = capsys.readouterr().out
    assert text.index("zero-seed0: running") < text.index("paid-seed0: running"), text
    assert states == {"zero-seed0": "done", "paid-seed0": "pruned"}, text
    record = read_run_file(str(out / "paid-seed0"))
    assert record["state"] == "pruned" and record["metric"] == "eval/return" and record["score"] < 0
    assert 100 <= record["score_frames"] <= record["pruned_at_frames"] < 1500 and record["returncode"] == 143
    stopped = re.search(r"hyperrl: stopped by SIGTERM after step (\d+): checkpoint (\S+);",
                        (out / "paid-seed0" / "fit.log").read_text())
    assert stopped and os.path.isfile(stopped.group(2)) and int(stopped.group(1)) < 1499  # its fit stopped cleanly
    assert re.search(r"\] paid-seed0: pruned by ASHA at \d+ frames \(eval/return -\d+\.\d at \d+ frames\)", text)
    assert "1 done, 1 pruned, 0 skipped (done or pruned before), 0 failed, 2 runs" in text
    assert read_run_file(str(out / "zero-seed0"))["score"] is None  # only a pruned run's record has one
    # the same command: both final, nothing runs again
    assert run_sweep(path, str(out), fit_options=["--trainer.max_steps", "1500"], check=False) == {
        "zero-seed0": "skipped", "paid-seed0": "skipped"}
    assert "paid-seed0: pruned before: skipped" in capsys.readouterr().out
    runs, skipped = discover(str(out))
    assert {r.name for r in runs} == {"zero-seed0"}
    assert [reason for _, reason in skipped] == [f"pruned by the sweep's ASHA scheduler at "
                                                 f"{record['pruned_at_frames']:.0f} frames"]


@pytest.mark.parametrize("child, state, code", [
    ("import sys; sys.stdin.read(); sys.exit(143)", "pruned", 143),  # still running: stopped, last.ckpt written
    ("pass", "done", 0),  # ran to its end while the scheduler decided: the prune is void
    ("import sys; sys.exit(1)", "failed", 1),  # failed meanwhile: a failure, not a prune
    # still starting (no SIGTERM handler yet): killed by the signal, which is the stop asked for
    ("import os, signal, sys; sys.stdin.read(); os.kill(os.getpid(), signal.SIGTERM)", "pruned", -15),
])
def test_a_prune_is_recorded_only_for_a_fit_it_stopped(tune, tmp_path, child, state, code):
    from types import SimpleNamespace

    from hyperrl.experiments.sweep import _tune_classes

    run_dir = tmp_path / "r-seed0"
    run_dir.mkdir()
    trainable, lines = _tune_classes({"r-seed0": []}, str(tmp_path), 1, 30.0, ("done", "pruned"))
    trial = object.__new__(trainable)  # the trial's state as setup() leaves it, around a stand-in fit
    trial.dir, trial.start, trial.before = str(run_dir), time.monotonic(), "running"
    trial.log, trial.lock = open(run_dir / "fit.log", "ab"), open(run_dir / ".run.lock", "w")  # noqa: SIM115
    update_run_file(str(run_dir), name="r-seed0", state="running")
    trial.proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE)
    if code not in (143, -15):
        trial.proc.wait()  # it ended between step()'s last look and the scheduler's stop
    result = {"state": "running", "score": -5.0, "metric": "eval/return", "score_frames": 200.0,
              "train/frames": 210.0, "node": "n", "resumed": False, "done": True}  # Tune: done = stopped
    lines().on_trial_result(0, [], SimpleNamespace(config={"run": "r-seed0"}, trial_id="x"), result)
    assert read_run_file(str(run_dir))["state"] == "pruned"
    trial.cleanup()
    record = read_run_file(str(run_dir))
    assert record["state"] == state and record["returncode"] == code
    assert (record["pruned_at_frames"] is None) == (state == "done")
    trial.proc = None
    assert trial.step()["score"] != trial.step()["score"]  # a skipped result has a (NaN) score: ASHA's metric


def test_a_changed_sweep_file_into_the_same_folder_and_the_sweeps_own_fit_options_are_refused(tune, tmp_path):
    out = tmp_path / "out"
    path = sweep_file(tmp_path)
    (out / "seed0").mkdir(parents=True)
    update_run_file(str(out / "seed0"), name="seed0", state="done",
                    settings={"configs": ["/elsewhere.yaml"], "settings": [["model.init_args.seed", 0]]})
    with pytest.raises(ConfigurationError, match=r"seed0 holds a run of other settings \(.*\): give another --out, "
                                                 r"or remove that folder to run it anew$"):
        run_sweep(path, str(out), check=False)
    for option in (["--trainer.default_root_dir", "/tmp/x"], ["--ckpt_path=/tmp/last.ckpt"]):
        name = option[0].split("=")[0]
        with pytest.raises(ConfigurationError, match=rf"^-- {name} is not allowed: the sweep gives each run its own"):
            run_sweep(path, str(out), fit_options=option, check=False)
