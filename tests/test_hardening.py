"""What a new user runs into: signals, unwritable or misplaced run folders, odd config files and numbers, the progress
bar and its noise, and a fast ``hyperrl --help`` (issue 6)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import CONF, TINY, error_lines, run_cli

from hyperrl.callbacks import RunProgressBar

SIGNAL_RUN = [*TINY, "--model.replay.buffer_size", "1000", "--trainer.callbacks.every_n_train_steps", "20"]


@pytest.fixture(autouse=True)
def _no_stale_log_streams(monkeypatch):
    import logging

    monkeypatch.setattr(logging, "raiseExceptions", False)


def _start(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    cwd = tmp_path / name
    cwd.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperrl.cli", "fit", *SIGNAL_RUN, "--trainer.max_steps", "100000"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    return proc, cwd / "runs" / "quickstart" / "version_0"


def _wait_for_training(proc: subprocess.Popen, run: Path, timeout: float = 120) -> None:
    """Until the first periodic checkpoint exists: training has started (and with it the signal handlers)."""
    deadline = time.monotonic() + timeout
    while not (run / "checkpoints" / "step=20.ckpt").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run did not reach step 20"
        time.sleep(0.2)


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.mark.slow  # two real processes (~5 s start each when alone) and two in-process runs: ~25 s, more under load
def test_sigterm_and_sigint_save_last_and_resume_exactly(tmp_path, capsys, monkeypatch):
    """SIGTERM / SIGINT to a real ``hyperrl fit``: the step in progress finishes, last.ckpt is written, exit 143 / 130
    with one line naming the checkpoint and the resume command. Resuming it continues the same metrics.csv and ends
    exactly where an uninterrupted run ends (every weight, optimizer moment and buffer entry equal)."""
    runs = {}
    for name, sig in (("term", signal.SIGTERM), ("int", signal.SIGINT)):
        runs[name] = (*_start(tmp_path, name), sig)
    for name, (proc, run, sig) in runs.items():
        _wait_for_training(proc, run)
        proc.send_signal(sig)
    stops = {}
    for name, (proc, run, sig) in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err[-3000:]
        assert "Traceback" not in err
        lines = error_lines(err)
        last = run / "checkpoints" / "last.ckpt"
        assert len(lines) == 1 and f"stopped by {signal.Signals(sig).name} after step" in lines[0], err[-2000:]
        assert f"checkpoint {last}" in lines[0] and lines[0].endswith(f"--ckpt_path {last}"), lines[0]
        step = int(lines[0].split("after step ")[1].split(":")[0])
        assert _state(last)["global_step"] == step > 20
        stops[name] = (run, step)

    run, step = stops["term"]
    # a multiple of log_every_n_steps (the last row is at step target - 1), not of the checkpoint interval: last.ckpt
    # is still written at the end of the run
    target = (step // 20 + 2) * 20 + 10
    with open(run / "metrics.csv") as f:
        before = [int(r["step"]) for r in csv.DictReader(f)]
    monkeypatch.chdir(tmp_path / "term")
    # the resume command the line printed (in-process, the rest of it is SIGNAL_RUN)
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", str(target),
                            "--ckpt_path", str(run / "checkpoints" / "last.ckpt")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    with open(run / "metrics.csv") as f:
        after = [int(r["step"]) for r in csv.DictReader(f)]
    assert after[: len(before)] == before and max(after) == target - 1, "appended to the same metrics.csv"

    straight = tmp_path / "straight"
    straight.mkdir()
    monkeypatch.chdir(straight)
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", str(target)], capsys)
    assert code == 0, err
    resumed = _state(run / "checkpoints" / "last.ckpt")
    uninterrupted = _state(straight / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == uninterrupted["global_step"] == target
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for a, b in zip(resumed["optimizer_states"][0]["state"].values(),
                    uninterrupted["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    buffer_a = resumed["hyperrl"]["data"]["transitions"]
    buffer_b = uninterrupted["hyperrl"]["data"]["transitions"]
    assert torch.equal(buffer_a["observation"], buffer_b["observation"])


def _unwritable_case(tmp_path: Path, kind: str) -> Path:
    if kind == "under_a_file":
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder\n")
        return blocker / "runs"
    folder = tmp_path / "immutable"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    return folder / "runs"


@pytest.mark.parametrize("kind", ["under_a_file", "immutable"])
def test_unwritable_run_folder_one_line_before_anything_is_created(kind, tmp_path, capsys, monkeypatch):
    """A run folder under a regular file, or in an immutable folder (chattr +i: unwritable for root too): one line,
    exit 2, and no folder (TensorBoard's or any other) left behind."""
    monkeypatch.chdir(tmp_path)
    root = _unwritable_case(tmp_path, kind)
    try:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root)],
                               capsys)
        after = sorted(str(p) for p in tmp_path.rglob("*"))
    finally:
        if kind == "immutable":
            subprocess.run(["chattr", "-i", str(root.parent)], check=False)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = error_lines(err)
    assert len(lines) == 1 and str(root) in lines[0], err
    assert ("is a file, not a folder" if kind == "under_a_file" else "is not writable") in lines[0]
    assert after == before, "nothing was created"


def test_default_root_dir_places_the_run_and_print_config_shows_it(tmp_path, capsys, monkeypatch):
    """--trainer.default_root_dir is the one option that places a run (it was silently ignored); --print_config shows
    where the loggers and checkpoints will write, with and without it."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["fit", *TINY, "--print_config"], capsys)
    assert code == 0
    config = yaml.safe_load(out)["trainer"]
    default = str(tmp_path / "runs" / "quickstart")
    assert config["default_root_dir"] == default
    assert [(lg["init_args"]["save_dir"], lg["init_args"]["name"], lg["init_args"]["version"])
            for lg in config["logger"]] == [(default, "", "version_0")] * 2

    root = tmp_path / "elsewhere" / "exp"
    code, out, _ = run_cli(["fit", *TINY, "--trainer.default_root_dir", str(root), "--print_config"], capsys)
    assert code == 0
    config = yaml.safe_load(out)["trainer"]
    assert config["default_root_dir"] == str(root)
    assert {lg["init_args"]["save_dir"] for lg in config["logger"]} == {str(root)}

    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "20", "--trainer.default_root_dir", str(root)],
                           capsys)
    assert code == 0, err
    assert (root / "version_0" / "metrics.csv").exists() and (root / "version_0" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "runs").exists()
    # a resumed run stays in its folder: another default_root_dir is refused
    last = root / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "30", "--ckpt_path", str(last),
                            "--trainer.default_root_dir", str(tmp_path / "other")], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "continues in its own folder" in err, err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a text file"),
        (b"", "the file is empty"),
        (b"# only a comment\n", "holds no settings"),
        (b"- model\n- trainer\n", "holds a YAML list, not a mapping"),
        (b"model: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_config_file_one_line_naming_it(content, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code, _, err = run_cli(["fit", "--config", str(path)], capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], err
    assert "expected a YAML mapping of settings" in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed_everything", str(2**70)], f"seed_everything={2**70} is not allowed: expected true, false or an "
                                            "integer 0 <= seed <= 4294967295"),
        (["--seed_everything", "-1"], "0 <= seed <= 4294967295"),
        # nan / inf on the command line and in a config file: the module's own message, not jsonargparse's
        (["--model.optim.gamma", "nan"], "optim.gamma=nan is not allowed: expected a number in [0, 1]"),
        (["--model.optim.gamma", "NaN"], "optim.gamma=nan is not allowed: expected a number in [0, 1]"),
        (["--model.optim.gamma=-inf"], "optim.gamma=-inf is not allowed: expected a number in [0, 1]"),
        (["--config", "GAMMA_NAN_FILE"], "optim.gamma=nan is not allowed: expected a number in [0, 1]"),
    ],
)
def test_numbers_out_of_range_one_line(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "GAMMA_NAN_FILE").write_text("model:\n  init_args:\n    optim:\n      gamma: nan\n")
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2", *args], capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1 and needle in lines[0], err


def test_progress_bar_postfix():
    """One rate (frames/s, from the module's train/fps), the latest returns by short names, no v_num."""
    assert RunProgressBar.postfix({"train/fps": 53.72, "train/episode_return": 12.345, "eval/return": 1000.0,
                                   "train/other": 0.5}) == "54 frames/s, episode=12.35, eval=1000, train/other=0.5"
    assert RunProgressBar.postfix({}) == ""


def test_quiet_by_default_and_verbose_on_request(tmp_path, capfd, monkeypatch):
    """The bar shows steps done of the total, an ETA and frames/s, no v_num, no second it/s rate; Lightning's device
    lines and tips, TorchRL's coloured info lines and the model summary appear only with --verbose."""
    monkeypatch.chdir(tmp_path)
    bar = ["--trainer.enable_progress_bar", "true", "--trainer.log_every_n_steps", "5"]
    code, out, err = run_cli(["fit", *TINY, *bar, "--trainer.max_steps", "60"], capfd)
    assert code == 0, err
    shown = (out + err).replace("\r", "\n")
    final = [line for line in shown.splitlines() if line.startswith("train") and "60/60 steps" in line]
    assert final and "frames/s" in final[-1] and "eval=" in final[-1] and "episode=" in final[-1], shown[-2000:]
    assert "<00:00" in final[-1], "elapsed<remaining (the ETA)"
    for noise in ("v_num", "it/s", "GPU available", "TPU available", "Tip:", "[INFO]", "Total params"):
        assert noise not in shown, noise
    assert not re.search("\x1b\\[[0-9;]*m", shown), "colour codes (TorchRL's info lines)"

    import logging

    class Record(logging.Handler):  # Lightning's own handler keeps the stream of the test that imported it
        messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Record()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        code, out, err = run_cli(["fit", *TINY, *bar, "--trainer.max_steps", "20"], capfd)
        assert code == 0, err
        assert handler.messages == []
        code, out, err = run_cli(["fit", *TINY, *bar, "--trainer.max_steps", "20", "--verbose"], capfd)
        assert code == 0, err
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    shown = "\n".join(handler.messages)
    assert "GPU available" in shown and "Total params" in shown, shown[-2000:]


def test_top_level_help_imports_nothing_heavy():
    """``hyperrl --help`` answers from a static text: no torch, Lightning, TorchRL or MuJoCo import (it took 5.4 s
    and 821 MB); it lists the subcommands LightningCLI has."""
    code = ("import sys; from hyperrl.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'lightning', 'torchrl', 'mujoco', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    from hyperrl.cli import _cli_class
    from hyperrl.help_cache import SUBCOMMANDS

    assert set(SUBCOMMANDS) == set(_cli_class().subcommands()) == {"fit", "validate"}  # no test/predict steps
    assert all(f"  {name} " in proc.stdout for name in SUBCOMMANDS)


# ---------------------------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 40-step TINY run (checkpoints every 20 steps) to resume and damage; returns its run folder."""
    cwd = tmp_path_factory.mktemp("finished")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = 0
        try:
            from hyperrl.cli import main

            main(["fit", *SIGNAL_RUN, "--trainer.max_steps", "40"])
        except SystemExit as exc:
            code = exc.code
        assert code in (0, None)
    finally:
        os.chdir(old)
    return cwd / "runs" / "quickstart" / "version_0"


def _damaged(path: Path, out: Path, edit) -> Path:
    state = _state(path)
    edit(state)
    torch.save(state, out)
    return out


def _noise(state):
    obs = state["hyperrl"]["data"]["transitions"]["observation"]
    obs.add_(torch.randn_like(obs))


def _half_rows(state):
    transitions = state["hyperrl"]["data"]["transitions"]
    for key, value in list(transitions.items()):
        if isinstance(value, torch.Tensor):
            transitions[key] = value[: len(value) // 2]


def _unchecked(edit):
    """A checkpoint written before checksums existed: edited, and with no checksum to notice it."""
    def both(state):
        edit(state)
        del state["hyperrl"]["checksum"]
    return both


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_noise, "is damaged"),
        (lambda s: s["hyperrl"]["data"]["transitions"].update(observation=torch.zeros(3, 7)), "is damaged"),
        (lambda s: s["hyperrl"]["data"].pop("transitions"), "is damaged"),
        (_half_rows, "is damaged"),
        (lambda s: s["hyperrl"]["data"]["writer"].update(_cursor=10**9), "is damaged"),
        (lambda s: s.pop("hyperrl"), "holds no hyperrl training state"),
        (_unchecked(lambda s: s["hyperrl"]["data"].pop("transitions")), "does not fit this run"),
        (_unchecked(lambda s: s["hyperrl"]["data"]["transitions"].update(observation=torch.zeros(3, 7))),
         "does not fit this run"),
    ],
    ids=["noise", "wrong_shape", "removed", "half_rows", "cursor", "no_hyperrl_state", "old_removed", "old_shape"],
)
def test_unusable_checkpoint_one_line_exit_2_nothing_trained(edit, needle, finished_run, tmp_path, capsys):
    """A damaged, edited or stripped checkpoint: one line naming it and what is wrong, exit 2, nothing trained."""
    bad = _damaged(finished_run / "checkpoints" / "last.ckpt", tmp_path / "bad.ckpt", edit)
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "60", "--trainer.default_root_dir",
                            str(tmp_path / "runs"), "--ckpt_path", str(bad)], capsys)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and str(bad) in lines[0] and needle in lines[0], err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("metrics.csv")), "nothing trained"


def test_checkpoint_write_failure_one_line_exit_1_previous_kept(finished_run, tmp_path, capsys, monkeypatch):
    """Disk full while checkpointing: one line with the folder, exit 1; the previous checkpoint is kept whole."""
    import errno

    import hyperrl.checkpoint_io as checkpoint_io

    run = tmp_path / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes())
    before = last.read_bytes()

    def full(obj, f):
        f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full)
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "60", "--ckpt_path", str(last)], capsys)
    assert code == 1, err
    lines = error_lines(err)
    assert len(lines) == 1 and str(run / "checkpoints") in lines[0] and "No space left" in lines[0], err
    assert last.read_bytes() == before
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"], "no partial file left"


# ---------------------------------------------------------------------------------------------- resumes
def _copy_run(finished_run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(finished_run, to)
    for lock in to.rglob(".hyperrl.lock"):
        lock.unlink()
    return to


def test_a_run_folder_in_use_is_refused_and_a_dead_holder_does_not_block(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "runs" / "version_0")
    last = str(run / "checkpoints" / "last.ckpt")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hyperrl.runs import lock_run_folder; "
         f"held = lock_run_folder({str(run)!r}); print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "60", "--ckpt_path", last], capsys)
        assert code == 2, err
        lines = error_lines(err)
        assert len(lines) == 1 and f"{run} is in use by another hyperrl process (pid {holder.pid})" in lines[0], err
    finally:
        holder.kill()
        holder.wait()
    # killed: the kernel released its lock
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "60", "--ckpt_path", last], capsys)
    assert code == 0, err
    assert _state(run / "checkpoints" / "last.ckpt")["global_step"] == 60


def test_ckpt_path_last_resumes_the_newest_run_or_is_refused(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--ckpt_path", "last"], capsys)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "--ckpt_path last: there is no" in lines[0], err
    assert not (tmp_path / "runs").exists()
    run = _copy_run(finished_run, tmp_path / "runs" / "quickstart" / "version_3")
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "60", "--ckpt_path", "last"], capsys)
    assert code == 0, err
    assert _state(run / "checkpoints" / "last.ckpt")["global_step"] == 60
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_3"]


def test_max_steps_below_the_checkpoint_is_one_line(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "version_0")
    last = run / "checkpoints" / "last.ckpt"
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "30", "--ckpt_path", str(last)], capsys)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "--trainer.max_steps 30 is below the step of" in lines[0] and "(40)" in lines[0], err


def test_last_ckpt_is_the_newest_after_a_resume_with_another_interval(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "version_0")
    last = run / "checkpoints" / "last.ckpt"
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.callbacks.every_n_train_steps", "30",
                            "--trainer.max_steps", "70", "--ckpt_path", str(last)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and not [n for n in names if n.startswith("last-")], names
    assert _state(last)["global_step"] == 70


def test_precision_16_is_refused_not_remapped(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2", "--trainer.precision", "16-mixed"], capsys)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "--trainer.precision 16-mixed is not allowed" in lines[0], err


@pytest.mark.parametrize("args", [["--trainer.precision", "bf16"],  # the alias docs/cli.md accepts
                                  ["--config", str(CONF / "meta" / "maml_quickstart.yaml")]])  # vector envs
def test_fits_print_no_library_warnings(args, tmp_path):
    """In a fresh process (a warning is shown once per process, TorchRL's once per import)."""
    base = TINY if args[0] != "--config" else []
    done = subprocess.run([sys.executable, "-m", "hyperrl.commands", "fit", *base, *args, "--trainer.max_steps", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    shown = done.stdout + done.stderr
    # a warning's line: "<file>.py:<line>: [Category:] message" (Lightning's drop the category)
    assert done.returncode == 0 and not re.search(r"\.py:\d+: ", shown), shown[-2000:]


# ---------------------------------------------------------------------------------------------- logs off a terminal
def test_progress_off_a_terminal_is_a_few_plain_lines(tmp_path, capfd, monkeypatch):
    """Under a batch scheduler (output to a file): a plain line at the start, at each evaluation, every
    LOG_INTERVAL_S and at the end; no carriage returns, no validation bar, no JsonargparseDeprecationWarning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONWARNINGS", "always")
    code, out, err = run_cli(["fit", *TINY, "--trainer.enable_progress_bar", "true", "--trainer.max_steps", "60"], capfd)
    assert code == 0, err
    shown = out + err
    assert "\r" not in shown and "Validation" not in shown and "Jsonargparse" not in shown, shown[-2000:]
    lines = [line for line in shown.splitlines() if line.startswith("train ")]
    assert len(lines) == 3, lines  # step 1, the evaluation at 40, the end
    assert "40/60 steps" in lines[1] and "eval=" in lines[1]
    assert "60/60 steps" in lines[2] and "frames/s" in lines[2] and "<00:00" in lines[2]


def test_mujoco_model_warnings_are_dropped(capfd):
    import mujoco

    from hyperrl.console import quiet_mujoco_model_warnings

    previous = mujoco.get_mju_user_warning()
    try:
        quiet_mujoco_model_warnings()
        mujoco.MjModel.from_xml_string(
            '<mujoco><compiler settotalmass="3"/><worldbody><body><geom size=".1"/></body></worldbody></mujoco>'
        )
        out, err = capfd.readouterr()
        assert "settotalmass" not in out + err
    finally:
        mujoco.set_mju_user_warning(previous)


def test_subcommand_help_is_cached_and_then_imports_nothing_heavy(tmp_path, capsys, monkeypatch):
    """``hyperrl fit --help``: the first call builds the text (it needs the algorithm classes), later ones print the
    stored text without importing torch or Lightning."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    code, first, err = run_cli(["fit", "--help"], capsys)
    assert code == 0 and "--model.help" in first and "--trainer.max_steps" in first, err
    script = ("import sys; from hyperrl.commands import main; main(['fit', '--help']); "
              "print(sorted(m for m in ('torch', 'lightning', 'torchrl', 'jsonargparse') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    text, imported = proc.stdout.rsplit("\n", 2)[0] + "\n", proc.stdout.strip().splitlines()[-1]
    assert imported == "[]" and text == first


def test_resuming_an_older_checkpoint_drops_the_rows_logged_after_it(finished_run, tmp_path, capsys):
    """Even when the resumed run logs nothing before it ends: metrics.csv keeps one history."""
    run = _copy_run(finished_run, tmp_path / "version_0")

    def steps():
        with open(run / "metrics.csv") as f:
            return sorted({int(float(row["step"])) for row in csv.DictReader(f)})

    assert max(steps()) >= 30
    older = run / "checkpoints" / "step=20.ckpt"
    code, _, err = run_cli(["fit", *SIGNAL_RUN, "--trainer.max_steps", "25", "--ckpt_path", str(older)], capsys)
    assert code == 0, err
    assert steps() == [s for s in steps() if s < 20] and steps(), steps()


def test_a_signal_after_the_last_training_step_stops_nothing(capsys):
    """SIGTERM during the run's last evaluation (after its last training step): the run ends on its own with its final
    checkpoint, so the fit reports no stop and exits normally (not 143 with "nothing to resume from")."""
    from types import SimpleNamespace

    from hyperrl.callbacks import StopOnSignal
    from hyperrl.console import report_signal_stop

    stop = StopOnSignal()
    stop.received = signal.SIGTERM  # what its handler records
    stop.on_train_end(SimpleNamespace(), None)
    report_signal_stop(stop, ["fit"])  # returns: no exit
    assert stop.received is None and capsys.readouterr().err == ""
    stopped = StopOnSignal()
    stopped.received, stopped.step, stopped.checkpoint = signal.SIGTERM, 7, "/r/last.ckpt"  # stopped after step 7
    stopped.on_train_end(SimpleNamespace(), None)
    with pytest.raises(SystemExit) as exc:
        report_signal_stop(stopped, ["fit"])
    assert exc.value.code == 143 and "stopped by SIGTERM after step 7" in capsys.readouterr().err


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_test_and_predict_are_not_offered(subcommand, capsys):
    code, _, err = run_cli([subcommand, *TINY], capsys)
    assert code == 2 and "Traceback" not in err and f"'{subcommand}'" in err, err


@pytest.mark.parametrize("where", ["building the model", "setting up the fit"])
def test_ctrl_c_before_training_is_one_line_exit_130(where, tmp_path, capsys, monkeypatch):
    """Ctrl-C before the training loop (where the clean stop is installed): outside Lightning it is a bare
    KeyboardInterrupt, inside Lightning's fit an exit(1) after Lightning caught it; both end in one line and 130."""
    from hyperrl.algos import Algorithm, SAC

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SAC if where == "building the model" else Algorithm,
                        "__init__" if where == "building the model" else "setup", interrupt)
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2"], capsys)
    assert code == 130 and "Traceback" not in err, err
    assert error_lines(err) == ["hyperrl: interrupted: stopped at once, nothing saved since the last checkpoint"], err
