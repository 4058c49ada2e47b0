"""The ``hyperrl`` command: configs, overrides, runs, resume, validate, and one-line errors for user mistakes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_entry

from hyperrl.cli import main
from hyperrl.nn import CRITIC

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = [
    "--config", str(CONF / "quickstart.yaml"),
    "--model.critic", "SAHyperCritic",  # the class, so that its sizes can follow (a preset name takes none)
    "--model.critic.primary_widths", "[16, 16, 32]",
    "--model.critic.blocks_per_stage", "1",
    "--model.critic.dynamic_hidden", "[16]",
    "--model.actor_hidden", "[32, 32]",
    "--model.replay.batch_size", "32",
    "--model.replay.warmup_frames", "30",
    "--model.replay.learning_starts", "30",
    "--model.evaluation.eval_episodes", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.val_check_interval", "40",
    "--trainer.log_every_n_steps", "10",
]


@pytest.fixture(autouse=True)
def _no_stale_log_streams(no_stale_log_streams):
    pass


def run_cli(args, capsys):
    """Run ``hyperrl ARGS`` in-process; returns (exit code, stdout, stderr)."""
    return run_entry(main, args, capsys)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hyperrl:")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model.critic", "nope"], "'nope'"),
        (["--model.env", "Nope-v0"], "'Nope-v0'"),
        (["--model.env", "CartPole-v1"], "Discrete"),
        (["--model.replay.batch_size", "0"], "replay.batch_size=0"),
        (["--model.optim.actor_lr", "-1"], "optim.actor_lr=-1"),
        (["--model.optim.critic_lr", "0"], "optim.critic_lr=0"),
        (["--model.critic.dynamic_hidden", "[0]"], "dynamic_hidden"),
        (["--model.critic.depth", "3"], "depth"),
        (["--model.critic", "builtins.dict"], "builtins.dict"),
        (["--model.critic_kwargs", '{"depth": 3}'], "critic_kwargs is no longer a setting"),
        (["--model.optim.tau", "2"], "optim.tau=2"),
        (["--model.replay.learning_starts", "200000"], "replay.learning_starts=200000"),
        (["--model.replay.batch_size", "abc"], "abc"),
        (["--model.bogus", "1"], "bogus"),
        (["--trainer.bogus", "1"], "bogus"),
        (["--ckpt_path", "/nonexistent/file.ckpt"], "/nonexistent/file.ckpt"),
        (["--ckpt_path", "best"], "best"),
        # Lightning's MisconfigurationException, from the Trainer and from a callback
        (["--trainer.max_steps", "-5"], "max_steps"),
        (["--trainer.callbacks.every_n_train_steps", "-3"], "every_n_train_steps=-3"),
        # accepted by Lightning, then a ZeroDivisionError after the first step
        (["--trainer.val_check_interval", "0"], "val_check_interval=0"),
        (["--trainer.val_check_interval", "-0.5"], "val_check_interval=-0.5"),
        # a scalar or null where a list of sizes belongs
        (["--model.critic.dynamic_hidden", "64"], "dynamic_hidden=64"),
        (["--model.critic.dynamic_hidden", "null"], "dynamic_hidden"),
        (["--model.critic", "MLPCritic", "--model.critic.hidden", "256"], "hidden=256"),
        (["--model.critic.head_bounds", "0.05"], "head_bounds=0.05"),
        (["--model.critic", "mlp", "--model.critic.hidden", "[8]"],
         "critic.hidden: the preset critic 'mlp' takes no settings: name its class with them (--model.critic MLPCritic "
         "--model.critic.hidden ...)"),
        (["--torch_threads", "0"], "torch_threads=0 is not allowed: expected a positive integer or null"),
        (["--torch_threads", "two"], "torch_threads=two is not allowed: expected a positive integer or null"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    """A bad value, key or path: one line naming it, exit status 2, no traceback."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2", *args], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and needle in lines[0], err


def test_torch_threads_sets_the_thread_count(capsys, tmp_path, monkeypatch):
    """``--torch_threads N`` (or ``torch_threads: N`` in a config) runs with N torch threads; null leaves them."""
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2", "--torch_threads", "1"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "2"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """Checkpoint files that cannot resume the TINY SAC run: unreadable ones, and tiny runs of another algorithm or
    critic saved through the Python API (no class path among their hyperparameters for Lightning to rebuild from)."""
    from conftest import make_trainer, tiny_kwargs

    from hyperrl.algos import SAC, TD3

    root = tmp_path_factory.mktemp("checkpoints")
    for name, module in [
        ("td3", TD3(**tiny_kwargs())),
        ("sac_mlp", SAC(**tiny_kwargs(critic=CRITIC.with_settings("mlp", hidden=[16])))),
    ]:
        trainer = make_trainer(root / name, max_steps=2)
        trainer.fit(module)
        trainer.save_checkpoint(root / f"{name}.ckpt")
    (root / "truncated.ckpt").write_bytes((root / "td3.ckpt").read_bytes()[:1000])
    (root / "garbage.ckpt").write_bytes(b"not a checkpoint\n")
    (root / "text.ckpt").write_bytes(b"hello\n")  # the legacy reader: a bare KeyError
    (root / "short.ckpt").write_bytes(b"abc")  # a bare IndexError
    (root / "empty.ckpt").write_bytes(b"")
    return root


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("truncated", "cannot be read as a checkpoint (truncated or corrupt?): it is an incomplete zip archive"),
        ("garbage", "neither a zip archive nor a pickle, as torch.save writes (byte 'n' where a pickle"),
        ("text", "neither a zip archive nor a pickle, as torch.save writes (the legacy reader stopped with KeyError)"),
        ("short", "neither a zip archive nor a pickle, as torch.save writes (the legacy reader stopped with "
                  "IndexError)"),
        ("empty", "empty"),
        ("td3", "another algorithm than SAC"),
        ("sac_mlp", "critic=MLPCritic there, SAHyperCritic here"),
    ],
)
def test_bad_checkpoint_gets_one_line_and_exit_2(
    subcommand, name, needle, bad_checkpoints, capsys, tmp_path, monkeypatch
):
    """A corrupt --ckpt_path, or one whose weights do not fit the model: one line naming the file, exit status 2."""
    monkeypatch.chdir(tmp_path)
    path = str(bad_checkpoints / f"{name}.ckpt")
    code, _, err = run_cli([subcommand, *TINY, "--trainer.max_steps", "2", "--ckpt_path", path], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and path in lines[0] and needle in lines[0], err


def test_checkpoints_of_a_config_s_own_callback_are_named_by_step_also_when_a_finished_run_is_extended(capsys,
                                                                                                     tmp_path):
    """quickstart.yaml lists its own ModelCheckpoint (no filename): its files are ``step=N.ckpt`` too, and extending
    the finished run (a new epoch for Lightning) goes on with the same names."""
    args = [*TINY, "--trainer.callbacks.every_n_train_steps", "10", "--trainer.val_check_interval", "1000",
            "--trainer.default_root_dir", str(tmp_path)]
    code, _, err = run_cli(["fit", *args, "--trainer.max_steps", "20"], capsys)
    assert code == 0, err
    folder = tmp_path / "version_0" / "checkpoints"
    code, _, err = run_cli(["fit", *args, "--trainer.max_steps", "30", "--ckpt_path", str(folder / "last.ckpt")],
                           capsys)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=10.ckpt", "step=20.ckpt", "step=30.ckpt"]


def test_checkpoints_keep_last_and_newest(capsys, tmp_path, monkeypatch):
    """The default ModelCheckpoint (the paper configs') keeps last.ckpt and the newest periodic checkpoint only;
    --trainer.callbacks.save_top_k -1 keeps them all; a resumed run leaves the old run's checkpoints alone."""
    monkeypatch.chdir(tmp_path)
    paper = ["--config", str(CONF / "sac_hyper.yaml"), *TINY[2:], "--model.env", "InvertedPendulum-v5",
             "--model.replay.buffer_size", "1000", "--trainer.val_check_interval", "1000",
             "--trainer.callbacks.every_n_train_steps", "20"]
    runs = tmp_path / "runs" / "sac_hyper"

    def checkpoints(version):
        return sorted(p.name for p in (runs / version / "checkpoints").iterdir())

    code, _, err = run_cli(["fit", *paper, "--trainer.max_steps", "60"], capsys)
    assert code == 0, err
    assert checkpoints("version_0") == ["last.ckpt", "step=60.ckpt"]

    keep_all = ["--trainer.callbacks.save_top_k", "-1"]
    code, _, err = run_cli(["fit", *paper, "--trainer.max_steps", "60", *keep_all], capsys)
    assert code == 0, err
    assert checkpoints("version_1") == ["last.ckpt"] + [f"step={n}.ckpt" for n in (20, 40, 60)]

    # a resumed run continues in its own folder: the newest periodic checkpoint replaces the old one there, and
    # the other run is left alone
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_cli(["fit", *paper, "--trainer.max_steps", "100", "--ckpt_path", str(last)], capsys)
    assert code == 0, err
    assert checkpoints("version_0") == ["last.ckpt", "step=100.ckpt"]
    assert checkpoints("version_1") == ["last.ckpt"] + [f"step={n}.ckpt" for n in (20, 40, 60)]
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]

    # resumed from an older checkpoint than its last: the steps it recomputes replace the old rows of metrics.csv
    def rows(version):
        with open(runs / version / "metrics.csv") as f:
            return list(csv.DictReader(f))

    before = rows("version_1")
    assert max(int(r["step"]) for r in before) == 59
    older = runs / "version_1" / "checkpoints" / "step=20.ckpt"
    code, _, err = run_cli(["fit", *paper, "--trainer.max_steps", "40", *keep_all, "--ckpt_path", str(older)], capsys)
    assert code == 0, err
    after = rows("version_1")
    steps = [int(r["step"]) for r in after]
    assert steps == sorted(steps) and max(steps) == 39, "one history: no rows of the abandoned steps 40-59"
    kept = [r for r in before if int(r["step"]) < 20]
    assert after[: len(kept)] == kept and len(after) > len(kept)


def test_resume_refuses_model_options_it_would_ignore(capsys, tmp_path, monkeypatch):
    """Resuming keeps the checkpoint's model settings: a --model option asking for something else is refused in one
    line (it would be silently ignored), while repeating the run's own settings is fine."""
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(CONF / "sac_hyper.yaml"), *TINY[2:], "--model.env", "InvertedPendulum-v5",
            "--model.replay.buffer_size", "1000", "--trainer.val_check_interval", "1000"]
    code, _, err = run_cli(["fit", *base, "--trainer.max_steps", "20"], capsys)
    assert code == 0, err
    last = tmp_path / "runs" / "sac_hyper" / "version_0" / "checkpoints" / "last.ckpt"
    other_gamma = tmp_path / "other_gamma.yaml"
    other_gamma.write_text("model:\n  init_args:\n    optim:\n      gamma: 0.9\n")
    many = tmp_path / "many.yaml"
    many.write_text("model:\n  init_args:\n    optim: {gamma: 0.9, tau: 0.01, actor_lr: 0.001}\n"
                    "    replay: {updates_per_batch: 2}\n")
    for option, needle in [
        # a config FILE whose model settings differ is refused like the command line (every init arg compared)
        (["--config", str(other_gamma)], f"model settings optim.gamma=0.9 from the config file {other_gamma} are not "
                                         "allowed with --ckpt_path"),
        # another algorithm's config: the algorithm is all the line names (not each setting that differs with it)
        (["--config", str(CONF / "td3_mlp.yaml"), *TINY[2:]],
         f"model settings class_path='hyperrl.algos.TD3' from the config file {CONF / 'td3_mlp.yaml'} are not allowed "
         f"with --ckpt_path {last}: that checkpoint resumes with class_path='hyperrl.algos.SAC' (a resumed"),
        # many settings that differ: the first three are named, and how many more
        (["--config", str(many)], "model settings optim.actor_lr=0.001, optim.gamma=0.9, optim.tau=0.01 (and 1 "
                                  f"more) from the config file {many} are not allowed"),
        (["--model.replay.batch_size", "64"], "--model.replay.batch_size=64 is not allowed with --ckpt_path"),
        (["--model.init_args.critic=mlp"], "--model.critic='mlp' is not allowed with --ckpt_path"),
        (["--model", "hyperrl.algos.TD3"], "--model.class_path='hyperrl.algos.TD3' is not allowed"),
    ]:
        code, _, err = run_cli(["fit", *base, "--trainer.max_steps", "30", "--ckpt_path", str(last), *option], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert len(error_lines(err)) == 1 and needle in error_lines(err)[0], err
    code, _, err = run_cli(["fit", *base, "--trainer.max_steps", "30", "--ckpt_path", str(last)], capsys)
    assert code == 0, err


def test_missing_config_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", "--config", "missing.yaml"], capsys)
    assert code == 2 and "Traceback" not in err
    assert len(error_lines(err)) == 1 and "missing.yaml" in error_lines(err)[0]


def test_help_and_print_config(capsys):
    """--help works; --print_config shows every setting a user can change, with the config's values."""
    code, out, _ = run_cli(["fit", "--help"], capsys)
    assert code == 0 and "--config" in out
    code, out, _ = run_cli(["fit", "--config", str(CONF / "sac_hyper.yaml"), "--print_config"], capsys)
    assert code == 0
    config = yaml.safe_load(out)
    init = config["model"]["init_args"]
    assert config["model"]["class_path"] == "hyperrl.algos.SAC"
    assert init["critic"] == "sa_hyper" and init["env"] == "HalfCheetah-v5" and init["replay"]["batch_size"] == 256
    assert config["trainer"]["max_steps"] == 1_000_000 and config["trainer"]["val_check_interval"] == 5000
    # checkpoints go through the atomic writer (tests/test_training.py kills it midway)
    assert [p["class_path"] for p in config["trainer"]["plugins"]] == ["hyperrl.checkpoint_io.AtomicCheckpointIO"]


@pytest.mark.parametrize(
    ("name", "algo", "critic", "critic_lr", "batch"),
    [
        ("sac_hyper", "SAC", "sa_hyper", 5e-5, 256),
        ("sac_mlp", "SAC", "mlp", 3e-4, 256),
        ("td3_hyper", "TD3", "sa_hyper", 5e-5, 100),
        ("td3_mlp", "TD3", "mlp", 3e-4, 100),
    ],
)
def test_paper_configs_hold_the_paper_settings(name, algo, critic, critic_lr, batch, capsys):
    """Each paper config selects its algorithm/critic and resolves the paper's learning rates."""
    code, out, _ = run_cli(["fit", "--config", str(CONF / f"{name}.yaml"), "--print_config"], capsys)
    assert code == 0
    config = yaml.safe_load(out)
    assert config["model"]["class_path"] == f"hyperrl.algos.{algo}"
    init = config["model"]["init_args"]
    replay = init["replay"]
    assert (init["critic"], replay["batch_size"], init["env"], replay["warmup_frames"]) == (critic, batch, "HalfCheetah-v5", 1000)
    from hyperrl import algos

    small = CRITIC.with_settings("sa_hyper", primary_widths=[8], blocks_per_stage=0)
    module = getattr(algos, algo)(**{**init, "critic": small} if critic == "sa_hyper" else init)
    assert module.critic_lr == critic_lr and module.optim.actor_lr == 3e-4
    assert module.optim.gamma == 0.99 and module.optim.tau == 0.005


def test_critic_is_one_override_away(capsys):
    code, out, _ = run_cli(["fit", "--config", str(CONF / "sac_hyper.yaml"), "--model.critic", "d2rl", "--print_config"], capsys)
    assert code == 0 and yaml.safe_load(out)["model"]["init_args"]["critic"] == "d2rl"


def test_switching_a_network_drops_the_replaced_networks_settings(capsys):
    """The quickstart's critic is a small SAHyperCritic (class_path/init_args). A preset name replaces it whole; a
    class given on the command line takes its own settings and keeps only those of the old class it shares."""
    quick = ["fit", "--config", str(CONF / "quickstart.yaml")]

    def critic(*args):
        code, out, err = run_cli([*quick, *args, "--print_config"], capsys)
        assert code == 0, err
        return yaml.safe_load(out)["model"]["init_args"]["critic"]

    assert critic()["init_args"]["blocks_per_stage"] == 1
    assert critic("--model.critic", "mlp_large") == "mlp_large"
    assert critic("--model.critic", "MLPCritic", "--model.critic.hidden", "[8]") == {
        "class_path": "hyperrl.nn.MLPCritic", "init_args": {"hidden": [8]}}
    shared = critic("--model.critic", "ASHyperCritic")
    assert shared["class_path"] == "hyperrl.nn.ASHyperCritic"
    assert (shared["init_args"]["primary_widths"], shared["init_args"]["blocks_per_stage"]) == ([64, 64, 128], 1)


@pytest.mark.parametrize(
    ("critic", "needle"),
    [
        ("{class_path: MLPCritic, init_args: {hidden: 256}}", "critic.hidden=256 is not allowed: expected a Sequence"),
        ("{class_path: MLPCritic, init_args: {hiden: [8]}}", "unknown option 'hiden' for critic MLPCritic"),
        ("{class_path: HyperPolicy}", "critic class_path 'HyperPolicy' is not allowed: expected a subclass of QNetwork"),
        ("{class_path: nope.Nope}", "critic class_path 'nope.Nope' is not allowed"),
    ],
)
def test_a_bad_network_in_a_config_file_is_one_line(critic, needle, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model:\n  init_args:\n    critic: {critic}\n")
    code, _, err = run_cli(["fit", "--config", str(CONF / "quickstart.yaml"), "--config", str(bad), "--print_config"],
                           capsys)
    assert code == 2 and "Traceback" not in err, err
    [line] = error_lines(err)
    assert needle in line, line


def test_switching_the_environment_drops_the_config_files_env_kwargs(capsys, tmp_path):
    """``env_kwargs`` belong to the environment they were written for: ``--model.env`` alone drops the config file's,
    and ``env_kwargs`` given with it stay."""
    ant = tmp_path / "ant.yaml"
    ant.write_text("model:\n  init_args:\n    env: Ant-v5\n    env_kwargs: {ctrl_cost_weight: 0}\n")

    def env_kwargs(*args):
        code, out, err = run_cli(["fit", "--config", str(CONF / "quickstart.yaml"), "--config", str(ant), *args,
                                  "--print_config"], capsys)
        assert code == 0, err
        return yaml.safe_load(out)["model"]["init_args"]["env_kwargs"]

    assert env_kwargs() == {"ctrl_cost_weight": 0}
    assert env_kwargs("--model.env", "Hopper-v5") is None
    assert env_kwargs("--model.env", "Hopper-v5", "--model.env_kwargs", '{"ctrl_cost_weight": 0.5}') == {
        "ctrl_cost_weight": 0.5}


def test_a_typed_error_says_or_null_only_for_a_setting_that_takes_null(capsys):
    quick = ["fit", "--config", str(CONF / "quickstart.yaml"), "--print_config"]
    for option, expected in [("--model.replay.batch_size", "replay.batch_size=0 is not allowed: expected a positive integer"),
                             ("--model.optim.critic_lr",
                              "optim.critic_lr=0 is not allowed: expected a positive number or null")]:
        code, _, err = run_cli([*quick, option, "0"], capsys)
        [line] = error_lines(err)
        assert code == 2 and line.endswith(expected), line


@pytest.mark.parametrize("args, expected", [
    (["--model.optim.gamma", "abc"], "optim.gamma=abc is not allowed: expected a number in [0, 1]"),
    (["--model.target_entropy", "abc"], "target_entropy=abc is not allowed: expected a float or null"),
    (["--model.env_kwargs", "abc"], "env_kwargs=abc is not allowed: expected a mapping or null"),
    (["--model.actor_hidden", "256"], "actor_hidden=256 is not allowed: expected a list"),
    (["--trainer.max_steps", "abc"], "trainer.max_steps=abc is not allowed: expected an int"),
    (["--config", "BAD_YAML"], "replay.batch_size=sixty is not allowed: expected a positive integer"),
])
def test_a_value_of_the_wrong_type_is_named_with_the_type_expected(args, expected, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model:\n  init_args:\n    replay:\n      batch_size: sixty\n")
    args = [str(tmp_path / "bad.yaml") if a == "BAD_YAML" else a for a in args]
    code, _, err = run_cli(["fit", "--config", str(CONF / "quickstart.yaml"), *args, "--print_config"], capsys)
    [line] = error_lines(err)
    assert code == 2 and line.endswith(expected), line


@pytest.mark.parametrize("config", ["quickstart.yaml", "meta/maml_quickstart.yaml", "meta/quickstart.yaml"])
@pytest.mark.parametrize("seed", ["-3", "4294967296", "99999999999999999999999"])
def test_a_seed_outside_numpys_range_is_one_line_for_every_algorithm(config, seed, capsys):
    code, _, err = run_cli(["fit", "--config", str(CONF / config), "--model.seed", seed, "--print_config"], capsys)
    [line] = error_lines(err)
    assert code == 2 and line.endswith(f"seed={seed} is not allowed: expected an integer in [0, 4294967295]"), line


def test_a_seed_outside_numpys_range_is_refused_in_python():
    from hyperrl.algos import SAC
    from hyperrl.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"^seed=-1 is not allowed: expected an integer in \[0, 4294967295\]$"):
        SAC(env="Pendulum-v1", critic="mlp", seed=-1)


@pytest.mark.parametrize("args", [["--model.critic", "mlp"], ["--model.critic.help", "SAHyperCritic"]])
def test_a_model_setting_without_an_algorithm_says_to_choose_one(args, capsys):
    code, _, err = run_cli(["fit", *args], capsys)
    [line] = error_lines(err)
    assert code == 2 and f"{args[0]} needs an algorithm first: give --config FILE or --model CLASS" in line, line


def test_a_misspelled_model_option_names_the_closest_ones(capsys):
    code, _, err = run_cli(["fit", "--config", str(CONF / "quickstart.yaml"), "--model.init_args.critc", "mlp",
                            "--print_config"], capsys)
    assert code == 2
    [line] = error_lines(err)
    assert "unknown option 'critc' for hyperrl.algos.SAC: closest: critic" in line, line


# ---------------------------------------------------------------------------------------------- settings groups
#: a bare model on the command line, no config file: every setting not given is the algorithm's default
BARE = ["--model.init_args.env", "InvertedPendulum-v5", "--model.init_args.critic", "mlp"]


def built_model(args, capsys, monkeypatch):
    """The model ``hyperrl fit ARGS`` builds and would train (the fit itself left out)."""
    import lightning.pytorch as pl

    from hyperrl.cli import _cli_class

    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *args, **kwargs: None)
    code, _, err = run_cli(["fit", *args], capsys)
    assert code == 0, err
    return _cli_class.last.model


def test_a_grouped_setting_reaches_the_model_and_the_groups_others_keep_their_defaults(capsys, tmp_path, monkeypatch):
    """``--model.init_args.replay.batch_size 64`` (or ``--model.replay.batch_size``, or ``replay: {batch_size: 64}``
    in a config file) sets that one setting of the group: the group's others keep the algorithm's defaults (TD3's
    own, not SAC's), or what an earlier config file gave them."""
    import dataclasses

    from hyperrl.algos import SAC, TD3

    monkeypatch.chdir(tmp_path)
    sac = built_model(["--model", "hyperrl.algos.SAC", *BARE, "--model.init_args.replay.batch_size", "64"], capsys,
                      monkeypatch)
    default = SAC(env="InvertedPendulum-v5", critic="mlp")
    assert type(sac) is SAC and sac.replay.batch_size == 64
    assert sac.replay == dataclasses.replace(default.replay, batch_size=64)
    assert (sac.optim, sac.evaluation) == (default.optim, default.evaluation)
    assert sac.hparams["replay"] == {**default.hparams["replay"], "batch_size": 64}  # plain data, every field

    td3 = built_model(["--model", "hyperrl.algos.TD3", *BARE, "--model.replay.buffer_size", "5000"], capsys,
                      monkeypatch)
    default = TD3(env="InvertedPendulum-v5", critic="mlp")
    assert (td3.replay.batch_size, td3.replay.learning_starts, td3.replay.buffer_size) == (100, 1000, 5000)
    assert td3.replay == dataclasses.replace(default.replay, buffer_size=5000)

    # in a config file: the same, with another group alongside
    td3_file = tmp_path / "td3.yaml"
    td3_file.write_text("model:\n  class_path: hyperrl.algos.TD3\n  init_args:\n    env: InvertedPendulum-v5\n"
                        "    critic: mlp\n    replay:\n      buffer_size: 5000\n    optim:\n      gamma: 0.9\n")
    from_file = built_model(["--config", str(td3_file)], capsys, monkeypatch)
    assert from_file.replay == td3.replay
    assert from_file.optim == dataclasses.replace(default.optim, gamma=0.9)

    # over a config file that sets the group (conf/quickstart.yaml: batch_size 256, buffer_size 100000, warmup and
    # learning_starts 1000): only the setting given changes, on the command line or in a second config file
    quick = ["--config", str(CONF / "quickstart.yaml")]
    expected = dataclasses.replace(built_model(quick, capsys, monkeypatch).replay, batch_size=64)
    assert (expected.buffer_size, expected.warmup_frames) == (100_000, 1000)
    assert built_model([*quick, "--model.replay.batch_size", "64"], capsys, monkeypatch).replay == expected
    second = tmp_path / "batch.yaml"
    second.write_text("model:\n  init_args:\n    replay:\n      batch_size: 64\n")
    assert built_model([*quick, "--config", str(second)], capsys, monkeypatch).replay == expected


@pytest.mark.parametrize(
    ("config", "key", "group", "algo"),
    [
        ("quickstart.yaml", "batch_size", "replay", "hyperrl.algos.SAC"),
        ("td3_mlp.yaml", "gamma", "optim", "hyperrl.algos.TD3"),
        ("quickstart.yaml", "eval_episodes", "evaluation", "hyperrl.algos.SAC"),
        ("meta/quickstart.yaml", "n_train_tasks", "tasks", "hyperrl.algos.MetaSAC"),
        ("meta/pearl_quickstart.yaml", "embedding_batch_size", "replay", "hyperrl.algos.pearl.PEARL"),
        ("meta/maml_quickstart.yaml", "fast_lr", "adaptation", "hyperrl.algos.MAML"),
        ("meta/maml_quickstart.yaml", "meta_batch_size", "sampling", "hyperrl.algos.MAML"),
    ],
)
@pytest.mark.parametrize("where", ["init_args", "short", "config file"])
def test_a_setting_given_where_it_was_before_the_groups_is_one_line_naming_its_place(
    config, key, group, algo, where, capsys, tmp_path
):
    """A flat setting that moved into a group (``--model.init_args.batch_size``, ``--model.batch_size``, or
    ``batch_size:`` under init_args in a config file): exit 2 and one line naming where it is now."""
    if where == "config file":
        flat = tmp_path / "flat.yaml"
        flat.write_text(f"model:\n  init_args:\n    {key}: 3\n")
        option = ["--config", str(flat)]
    else:
        option = [f"--model.{'init_args.' if where == 'init_args' else ''}{key}", "3"]
    code, _, err = run_cli(["fit", "--config", str(CONF / config), *option, "--print_config"], capsys)
    assert code == 2 and "Traceback" not in err, err
    [line] = error_lines(err)
    assert f"{key} is now {group}.{key} in {algo}: give --model.init_args.{group}.{key}" in line, line


def test_print_config_shows_each_group_nested_with_all_its_settings(capsys):
    """--print_config shows a settings group as a mapping under init_args with every setting of the group (the given
    one, the config's, and the defaults), and no flat copies beside it."""
    import dataclasses

    from hyperrl.algos import MAMLEvaluation, OffPolicyOptim, Replay, Sampling, Tasks

    code, out, err = run_cli(["fit", "--config", str(CONF / "quickstart.yaml"), "--model.init_args.replay.batch_size",
                              "64", "--print_config"], capsys)
    assert code == 0, err
    init = yaml.safe_load(out)["model"]["init_args"]
    names = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (Replay, OffPolicyOptim, Tasks, Sampling,
                                                                        MAMLEvaluation)}
    assert set(init["replay"]) == names[Replay] and set(init["optim"]) == names[OffPolicyOptim]
    assert init["replay"]["batch_size"] == 64 and init["replay"]["buffer_size"] == 100_000  # given, the config's
    assert init["replay"]["frames_per_batch"] == 1 and init["optim"]["gamma"] == 0.99  # defaults
    assert init["evaluation"] == {"eval_episodes": 5}
    assert not set(init) & (names[Replay] | names[OffPolicyOptim]), "no flat copies"

    code, out, err = run_cli(["fit", "--config", str(CONF / "meta" / "maml_quickstart.yaml"),
                              "--model.init_args.sampling.meta_batch_size", "4", "--print_config"], capsys)
    assert code == 0, err
    init = yaml.safe_load(out)["model"]["init_args"]
    assert set(init["sampling"]) == names[Sampling] and init["sampling"]["meta_batch_size"] == 4
    assert set(init["tasks"]) == names[Tasks] and set(init["evaluation"]) == names[MAMLEvaluation]


def test_an_interpolated_config_resolves_and_resumes(capsys, tmp_path, monkeypatch):
    """Configs interpolate their own values (OmegaConf): the run uses the resolved ones, and resumes with them."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "interpolated.yaml"
    config.write_text(
        "model:\n  class_path: hyperrl.algos.SAC\n  init_args:\n    env: InvertedPendulum-v5\n    seed: 3\n"
        "    critic: {class_path: hyperrl.nn.MLPCritic, init_args: {hidden: [16]}}\n    actor_hidden: [16]\n"
        "    replay:\n      batch_size: 16\n      buffer_size: 1000\n      warmup_frames: 20\n"
        "      learning_starts: ${model.init_args.replay.warmup_frames}\n"
        "    evaluation:\n      eval_episodes: 1\n"
        "trainer:\n  max_steps: 30\n  val_check_interval: 30\n  enable_progress_bar: false\n"
        "  default_root_dir: runs/seed${model.init_args.seed}\n"
    )
    code, out, err = run_cli(["fit", "--config", str(config), "--print_config"], capsys)
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["model"]["init_args"]["replay"]["learning_starts"] == 20
    assert printed["trainer"]["default_root_dir"] == str(tmp_path / "runs" / "seed3")
    code, _, err = run_cli(["fit", "--config", str(config)], capsys)
    assert code == 0, err
    last = tmp_path / "runs" / "seed3" / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_cli(["fit", "--config", str(config), "--trainer.max_steps", "40", "--ckpt_path", str(last)],
                           capsys)
    assert code == 0, err
    assert torch.load(last, weights_only=True)["global_step"] == 40


def test_fit_resume_and_validate(capsys, tmp_path, monkeypatch):
    """A run writes TensorBoard + CSV + checkpoints into runs/<config>/version_0; --ckpt_path resumes it in that
    same folder (metrics.csv appended, the same TensorBoard run, no "dirpath has changed" warning); validate writes
    its result beside the checkpoint's run, not as a new run."""
    import warnings

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "80"], capsys)
    assert code == 0, err
    runs = tmp_path / "runs" / "quickstart"
    run = runs / "version_0"
    assert (run / "metrics.csv").exists() and (run / "config.yaml").exists()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1, "TensorBoard events next to the CSV"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 80
    with open(run / "metrics.csv") as f:
        first_rows = list(csv.DictReader(f))

    # from another working directory, with a relative path: still the same folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(["fit", *TINY, "--trainer.max_steps", "120", "--ckpt_path",
                                "../runs/quickstart/version_0/checkpoints/last.ckpt"], capsys)
    assert code == 0, err
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"] and not (elsewhere / "runs").exists()
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[: len(first_rows)] == [{**r, **{k: "" for k in set(rows[0]) - set(r)}} for r in first_rows]
    steps = [int(r["step"]) for r in rows[len(first_rows):] if r.get("train/frames")]
    assert min(steps) >= 80 and max(steps) == 119, "the resumed run continues at step 80, in the same metrics.csv"
    assert len(list(run.glob("events.out.tfevents.*"))) == 2, "the same TensorBoard run (its folder)"
    assert torch.load(last, weights_only=True)["global_step"] == 120

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(["validate", *TINY, "--ckpt_path", str(last)], capsys)
    assert code == 0, err
    assert not [w for w in caught if "dirpath has changed" in str(w.message)], "validate saves no checkpoints"
    assert "eval/return" in out
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    with open(run / "validate-last" / "metrics.csv") as f:
        assert [r["eval/return"] != "" for r in csv.DictReader(f)] == [True]


NAN_SCRIPT = """
import sys
from hyperrl.algos import SAC
from hyperrl.cli import main

original = SAC.losses

def nan_losses(self, batch, update):
    losses = original(self, batch, update)
    losses["loss"] = losses["loss"] * float("nan")
    return losses

SAC.losses = nan_losses
main(sys.argv[1:])
"""


def test_non_finite_loss_exits_1_with_a_message(tmp_path):
    """A NaN loss stops the run: one line on stderr, exit status 1, no traceback (in a real process)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", NAN_SCRIPT, "fit", *TINY, "--trainer.max_steps", "50"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert any("non-finite loss" in line for line in error_lines(proc.stderr))


@pytest.mark.slow
def test_quickstart_learns_inverted_pendulum(capsys, tmp_path, monkeypatch):
    """The README demo learns: SAC + small SA-Hyper reaches an evaluation return >= 900 on InvertedPendulum-v5
    (seeded; 16k steps leave room for the spread between CPUs, whose float rounding differs: docs/benchmarks.md)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(
        ["fit", "--config", str(CONF / "quickstart.yaml"), "--trainer.max_steps", "16000",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
        capsys,
    )
    assert code == 0, err
    with open(tmp_path / "runs" / "quickstart" / "version_0" / "metrics.csv") as f:
        returns = [float(r["eval/return"]) for r in csv.DictReader(f) if r.get("eval/return")]
    assert len(returns) == 8 and max(returns) >= 900, returns
