"""Settings groups (``hyperrl.algos.settings``): typed fields, the mapping form, plain hyperparameters, older flat
files, and the command line's words for grouped and moved settings."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse.typing import NonNegativeInt, PositiveInt

from hyperrl.algos import (
    MAML,
    PEARL,
    SAC,
    TD3,
    Adaptation,
    ContextMAML,
    ContextSACOptim,
    MetaSAC,
    MetaSACReplay,
    MultiTaskReplay,
    OffPolicyOptim,
    PEARLReplay,
    Replay,
    Sampling,
)
from hyperrl.algos.td3 import TD3_REPLAY
from hyperrl.errors import ConfigurationError
from hyperrl.experiments.sweep import fit_log_header

SMALL = dict(env="Pendulum-v1", critic="mlp", actor_hidden=[8])


def test_fields_hold_builtin_values_whatever_jsonargparse_hands_over():
    replay = Replay(batch_size=PositiveInt(3), learning_starts=NonNegativeInt(0))
    assert type(replay.batch_size) is int and type(replay.learning_starts) is int
    plain = ContextSACOptim(lr_decay_updates=(1, 5)).plain()
    assert plain["lr_decay_updates"] == [1, 5]  # a list: what YAML and JSON hold as they are
    assert all(type(v) in (int, float, bool, str, list, type(None)) for v in plain.values())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Replay(batch_size=0), "replay.batch_size=0 is not allowed: expected a positive integer"),
        (lambda: Replay(batch_size=10, buffer_size=5, learning_starts=0),
         "replay.batch_size=10 is not allowed: it must not exceed buffer_size=5"),
        (lambda: OffPolicyOptim(gamma=1.5), "optim.gamma=1.5 is not allowed: expected a number in [0, 1]"),
        (lambda: OffPolicyOptim(tau=0.0), "optim.tau=0.0 is not allowed: expected a number in (0, 1]"),
        (lambda: ContextSACOptim(lr_decay_updates=(5, 1)), "optim.lr_decay_updates=[5, 1] is not allowed"),
        (lambda: PEARLReplay(embedding_batch_size=10, embedding_mini_batch_size=3),
         "replay.embedding_mini_batch_size=3 is not allowed: it must divide embedding_batch_size=10"),
        (lambda: Adaptation(fast_lr=float("inf")), "adaptation.fast_lr=inf is not allowed"),
        (lambda: Sampling(meta_batch_size=2.5), "sampling.meta_batch_size=2.5 is not allowed: expected a positive"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_its_group(make, message):
    with pytest.raises(ConfigurationError, match="^" + re.escape(message)):
        make()


def test_a_mapping_is_laid_over_the_defaults_it_is_given():
    assert Replay.of({"buffer_size": 5000}, TD3_REPLAY) == Replay(batch_size=100, buffer_size=5000,
                                                                   learning_starts=1000)
    assert Replay.of(None, TD3_REPLAY) is TD3_REPLAY
    assert Replay.of({"batch_size": 8}) == Replay(batch_size=8)
    # another group's dataclass counts as its mapping (a subclass's group built from its parent's)
    assert MetaSACReplay.of(MultiTaskReplay(batch_size=8)) == MetaSACReplay(batch_size=8)


@pytest.mark.parametrize(
    "value, message",
    [
        ({"batchsize": 8}, "replay.batchsize is not a replay setting: allowed batch_size, buffer_size"),
        (8, "replay=8 is not allowed: expected a mapping of replay settings"),
    ],
)
def test_a_mapping_with_an_unknown_setting_or_no_mapping_is_refused(value, message):
    with pytest.raises(ConfigurationError, match=message):
        SAC(**SMALL, replay=value)


def test_td3_keeps_its_own_replay_defaults_under_a_partial_mapping():
    model = TD3(**SMALL, replay={"buffer_size": 5000})
    assert model.replay == Replay(batch_size=100, buffer_size=5000, learning_starts=1000)
    assert ContextMAML(adaptation={"fast_lr": 0.3}).adaptation == Adaptation(adaptation_steps=0, fast_lr=0.3)
    with pytest.raises(ConfigurationError, match="adaptation.adaptation_steps=1 is not allowed for ContextMAML"):
        ContextMAML(adaptation={"adaptation_steps": 1})


def test_hyperparameters_hold_each_group_as_a_plain_dict_of_all_its_fields():
    model = SAC(**SMALL, replay={"batch_size": 8}, optim={"gamma": 0.9})
    for hparams in (model.hparams, model.hparams_initial):  # what checkpoints and the loggers' hparams.yaml get
        assert hparams["replay"] == dataclasses.asdict(Replay(batch_size=8))
        assert hparams["optim"] == dataclasses.asdict(OffPolicyOptim(gamma=0.9))
    assert SAC(**model.hparams).replay == model.replay


@pytest.mark.parametrize(
    "cls, kwargs, flat",
    [
        (SAC, SMALL, {"batch_size": 8, "buffer_size": 500, "gamma": 0.9, "tau": 0.01, "eval_episodes": 2}),
        (TD3, SMALL, {"learning_starts": 10, "actor_lr": 1e-3}),
        (MetaSAC, {"env": "hyperrl/Navigation2D-v0", "policy": "mlp", "critic": "mlp", "value": "mlp"},
         {"n_train_tasks": 3, "n_test_tasks": 2, "batch_size": 8, "steps_per_task": 7, "eval_episodes": 2,
          "reward_scale": 2.0, "meta_batch": 3}),
        (PEARL, {"env": "hyperrl/Navigation2D-v0", "policy": "mlp", "critic": "mlp", "value": "mlp",
                 "encoder_hidden": [8]},
         {"n_train_tasks": 3, "n_test_tasks": 2, "embedding_batch_size": 10, "embedding_mini_batch_size": 5,
          "num_evals": 2, "steps_per_task": 9}),
        (MAML, {"policy": "mlp"}, {"n_train_tasks": 4, "n_test_tasks": 2, "adaptation_steps": 2, "fast_batch_size": 3,
                                   "max_kl": 0.05, "eval_tasks": 2}),
    ],
)
def test_flat_hyperparameters_of_older_files_rebuild_the_same_model(cls, kwargs, flat):
    """A checkpoint or snapshot written before the settings were grouped holds them flat (MetaSAC's once named
    ``meta_batch``; PEARL's retired ``steps_per_task``): ``current_hparams`` moves each into its group."""
    old = cls(**cls.current_hparams({**kwargs, **flat}))
    for name in cls.GROUPS:
        group = getattr(old, name)
        for key, value in flat.items():
            key = cls.RENAMED_HPARAMS.get(key, key)
            if key in group.names():
                assert getattr(group, key) == value, (name, key)
    rebuilt = cls(**{k: v for k, v in old.hparams.items() if not k.startswith("_")})
    assert all(getattr(rebuilt, name) == getattr(old, name) for name in cls.GROUPS)
    torch.testing.assert_close(sum(p.numel() for p in rebuilt.parameters()), sum(p.numel() for p in old.parameters()))


def test_fit_log_header_quotes_the_command_for_a_shell():
    header = fit_log_header(1, ["fit", "--model.init_args.actor_hidden", "[64, 64]", "--trainer.max_steps", "5"])
    assert header == "\n$ OMP_NUM_THREADS=1 hyperrl fit --model.init_args.actor_hidden '[64, 64]' --trainer.max_steps 5\n"


def _hyperrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyperrl.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.init_args.batch_size", "64"],
         "batch_size is now replay.batch_size in hyperrl.algos.SAC: give --model.init_args.replay.batch_size"),
        (["--model.init_args.replay.batchsize", "64"],
         "unknown option 'batchsize' in replay of hyperrl.algos.SAC: closest: batch_size"),
        (["--trainer.max_step", "5"], "unrecognized arguments: --trainer.max_step"),  # no argparse abbreviations
    ],
)
def test_the_command_line_names_moved_unknown_and_abbreviated_options(args, message):
    result = _hyperrl("fit", "--model", "SAC", "--model.init_args.env", "Pendulum-v1", *args, "--print_config")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_command_without_a_model_says_how_to_give_one(tmp_path):
    result = _hyperrl("fit", "--ckpt_path", str(tmp_path / "last.ckpt"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hyperrl: error: no model given: give --config FILE (to resume a run, its config.yaml beside the "
        "checkpoints folder, with --ckpt_path) or --model CLASS (e.g. --model SAC)"
    )


@pytest.mark.parametrize("loader", ["SAC", "Algorithm"])
def test_load_from_checkpoint_reads_a_checkpoint_with_flat_settings(tmp_path, loader):
    """Lightning's ``load_from_checkpoint`` on a checkpoint written before the settings were grouped (and on a base
    class, which builds the algorithm the checkpoint names)."""
    import hyperrl.algos

    model = SAC(**SMALL, replay={"batch_size": 8, "buffer_size": 500}, optim={"gamma": 0.9})
    with torch.no_grad():  # weights a fresh model of the same seed does not have
        for p in model.parameters():
            p.add_(1.0)
    flat = {k: v for k, v in model.hparams.items() if k not in SAC.GROUPS}
    for name in SAC.GROUPS:
        flat.update(model.hparams[name])
    flat["_class_path"] = "hyperrl.algos.SAC"
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": flat}, path)
    loaded = getattr(hyperrl.algos, loader).load_from_checkpoint(path, evaluation={"eval_episodes": 3})
    assert type(loaded) is SAC
    assert loaded.replay == model.replay and loaded.optim == model.optim and loaded.evaluation.eval_episodes == 3
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_the_command_line_knows_every_settings_group():
    import hyperrl.algos
    from hyperrl.algos.settings import Settings
    from hyperrl.cli_input import SETTINGS_GROUPS

    groups = {cls.GROUP for cls in vars(hyperrl.algos).values()
              if isinstance(cls, type) and issubclass(cls, Settings) and cls is not Settings}
    assert groups == set(SETTINGS_GROUPS)


def test_a_null_for_one_grouped_setting_becomes_a_mapping_jsonargparse_takes():
    from hyperrl.cli_input import null_group_settings_as_mappings

    args = ["--model.init_args.optim.critic_lr", "null", "--model.tasks.n_train_tasks=None", "--model.init_args.seed",
            "null", "--model.init_args.critic.init_args.hidden", "null", "--model.init_args.replay.batch_size", "8"]
    assert null_group_settings_as_mappings(args) == [
        "--model.init_args.optim", "{critic_lr: null}", "--model.tasks", "{n_train_tasks: null}",
        "--model.init_args.seed", "null", "--model.init_args.critic.init_args.hidden", "null",
        "--model.init_args.replay.batch_size", "8"]
    config_file = str(Path(__file__).resolve().parents[1] / "conf" / "meta" / "pearl_quickstart.yaml")
    result = _hyperrl("fit", "--config", config_file, "--model.init_args.optim.critic_lr",
                      "null", "--model.init_args.tasks.n_train_tasks=null", "--print_config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)["model"]["init_args"]
    assert config["optim"]["critic_lr"] is None and config["tasks"]["n_train_tasks"] is None
    assert config["optim"]["policy_lr"] == 3e-4 and config["tasks"]["n_test_tasks"] is not None  # the rest kept


def test_the_options_given_name_a_grouped_setting_by_its_dotted_name():
    """What a resume compares against: a grouped setting given on the command line is that setting, not its whole
    group (a config file's other setting of the group that differs is the file's, not the option's)."""
    from hyperrl.cli_input import model_options_given

    assert model_options_given(["--model.init_args.replay.batch_size", "8", "--model.optim={gamma: 0.9}",
                                "--model.critic.dynamic_hidden", "[8]", "--model", "TD3", "--model.env=X"]) == [
        "replay.batch_size", "optim", "critic", "class_path", "env"]
