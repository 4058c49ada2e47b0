"""hyperrl sweep --launcher ray with Ray itself (a local instance): tasks, progress, threads, failures, resume, errors.

The tests that need Ray skip when it is not installed (pip install 'hyperrl[ray]'); ``nox -s tests`` installs it.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from hyperrl.errors import ConfigurationError
from hyperrl.experiments import sweep as sweep_module
from hyperrl.experiments.sweep import run_sweep

from conftest import run_entry
from test_sweep import sweep_file


@pytest.fixture
def ray():
    return pytest.importorskip("ray", reason="Ray is not installed: pip install 'hyperrl[ray]'")


def test_a_ray_task_needs_the_run_folder_on_its_node_and_resumes_when_ray_retries_it(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="every node sees"):
        sweep_module.ray_task(["fit"], str(tmp_path / "elsewhere"), str(tmp_path / "fit.log"), 1, str(tmp_path))
    run = tmp_path / "run"
    (run / "version_0" / "checkpoints").mkdir(parents=True)
    (run / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"")  # written before the worker died
    calls = []
    monkeypatch.setattr(sweep_module, "_run_fit", lambda args, log, env, cwd=None: calls.append((args, env, cwd)) or 0)
    code, _, node = sweep_module.ray_task(["fit", "--x", "1"], str(run), str(run / "fit.log"), 3, str(tmp_path))
    (args, env, cwd), = calls
    assert code == 0 and node == socket.gethostname()
    assert args == ["fit", "--x", "1", "--ckpt_path", str(run / "version_0" / "checkpoints" / "last.ckpt")]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and cwd == str(tmp_path)
    record = json.loads((run / "sweep_run.json").read_text())
    assert record["state"] == "running" and record["threads"] == 3 and record["node"] == node
    calls.clear()  # a first attempt that already resumes keeps its own --ckpt_path; a missing cwd is not used
    sweep_module.ray_task(["fit", "--ckpt_path", "c"], str(run), str(run / "fit.log"), 1, str(tmp_path / "no"))
    assert calls[0][0] == ["fit", "--ckpt_path", "c"] and calls[0][2] is None


def test_ray_errors_are_one_line(tmp_path):
    exc = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                       '  File "x.py", line 1, in f\n    g()\nray.exceptions.RpcError: RPC error: 404\n')
    assert sweep_module._exception_line(exc) == (
        "Failed to connect to GCS. Last connection error: ray.exceptions.RpcError: RPC error: 404")
    with pytest.raises(ConfigurationError, match="resources.cpus='two' is not allowed"):
        sweep_module.load_sweep(sweep_file(tmp_path, "grid: {}\nseeds: [0]\nresources: {cpus: two}"))


def test_an_unreachable_address_is_one_line_exit_2_at_once(ray, tmp_path, capsys):
    from hyperrl.commands import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code, _, err = run_entry(main, ["sweep", sweep_file(tmp_path), "--launcher", "ray", "--address",
                                    f"127.0.0.1:{port}", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot reach the Ray cluster" in err
    assert time.monotonic() - start < 5  # before the sweep check, without Ray's minutes of retries
    code, _, err = run_entry(main, ["sweep", sweep_file(tmp_path), "--launcher", "ray", "--address",
                                    "no-such-host.invalid:6379"], capsys)
    assert code == 2 and "cannot reach the Ray cluster at 'no-such-host.invalid:6379'" in err
    assert not (tmp_path / "o").exists() and not ray.is_initialized()


def test_resources_no_local_node_has_are_refused_not_left_pending(ray, tmp_path, capsys, no_stale_log_streams):
    path = sweep_file(tmp_path, "grid: {}\nseeds: [0]\nresources: {cpus: 1, gpus: 1000}")
    with pytest.raises(ConfigurationError, match=r"no node of the local Ray instance .*gpus: 1000"):
        run_sweep(path, str(tmp_path / "o"), launcher="ray", check=False)
    assert not ray.is_initialized()
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_sweep_through_a_local_ray_instance(ray, tmp_path, capsys, monkeypatch, no_stale_log_streams):
    from hyperrl.experiments.report import read_metrics

    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # what the Ray workers inherit; each fit must get its CPU request
    path = sweep_file(tmp_path, """
        grid:
          variant:
            ok: {}
            bad: {trainer.val_check_interval: 0}
        seeds: [0]
        resources: {cpus: 1, gpus: 0}
        """)
    out = tmp_path / "out"
    runs = run_sweep(path, str(out), launcher="ray", fit_options=["--trainer.max_steps", "30"], progress_every=2,
                     poll=0.2, check=False)  # the check before any run is the launcher's business: test_sweep.py
    assert not ray.is_initialized()  # shut down: the local instance is gone
    assert [r.state for r in runs] == ["done", "failed"]
    assert "val_check_interval=0 is not allowed" in runs[1].error
    assert "val_check_interval=0 is not allowed" in (out / "bad-seed0" / "fit.log").read_text()  # log kept
    config = (out / "ok-seed0" / "version_0" / "config.yaml").read_text()
    assert "max_steps: 30" in config and "critic: mlp" in config
    assert "\n$ OMP_NUM_THREADS=1 hyperrl fit " in (out / "ok-seed0" / "fit.log").read_text()
    record = json.loads((out / "ok-seed0" / "sweep_run.json").read_text())
    assert record["state"] == "done" and record["threads"] == 1 and record["node"] == socket.gethostname()
    text = capsys.readouterr().out
    for line in ("Ray at ", "ok-seed0: submitted to Ray (1 CPU, 0 GPU)", "ok-seed0: running on ", "ok-seed0: done in",
                 "bad-seed0: failed (exit 2): hyperrl: error: trainer.val_check_interval=0",
                 "1 done, 0 skipped (done before), 1 failed, 2 runs"):
        assert line in text, line

    # the done run marked as interrupted: the next sweep resumes it from last.ckpt in its own folder
    (out / "ok-seed0" / "sweep_run.json").write_text(json.dumps({**record, "state": "running"}))
    runs = run_sweep(path, str(out), launcher="ray", fit_options=["--trainer.max_steps", "60"], poll=0.2,
                     check=False)
    assert [r.state for r in runs] == ["done", "failed"] and runs[0].resumed
    assert "--ckpt_path" in json.loads((out / "ok-seed0" / "sweep_run.json").read_text())["command"]
    assert not (out / "ok-seed0" / "version_1").exists()
    evals = [int(r["step"]) for r in read_metrics(str(out / "ok-seed0" / "version_0")) if r.get("eval/return")]
    assert evals == [29, 59]  # the first fit's evaluation, then the resumed one's
    assert not ray.is_initialized() and os.environ["OMP_NUM_THREADS"] == "5"
