"""End-to-end fits with tiny widths: step counting, metrics, determinism, checkpoints, resume, NaN handling."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import make_trainer, tiny_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from hyperrl.algos import SAC, TD3
from hyperrl.errors import NonFiniteLossError


def read_metrics(tmp_path):
    with open(tmp_path / "run" / "v" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.state_dict().values() if p.is_floating_point()])


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_global_step_counts_training_steps_not_optimizer_calls(algo, tmp_path):
    """max_steps=N stops after N collector batches; updates start once the buffer holds learning_starts frames."""
    module = algo(**tiny_kwargs())
    trainer = make_trainer(tmp_path, max_steps=90)
    trainer.fit(module)
    assert trainer.global_step == 90
    assert int(module.update_count) == 90 - 40 + 1
    frames = [float(r["train/frames"]) for r in read_metrics(tmp_path) if r.get("train/frames")]
    assert frames[-1] == 90


def test_metrics_are_logged_with_their_names(tmp_path):
    """train/frames, train/episode_return, eval/return and the loss terms reach the CSV log."""
    module = SAC(**tiny_kwargs())
    make_trainer(tmp_path, max_steps=80, val_check_interval=40).fit(module)
    columns = set().union(*(k for r in read_metrics(tmp_path) for k, v in r.items() if v))
    rows = read_metrics(tmp_path)
    logged = {k for r in rows for k, v in r.items() if v}
    for name in ("train/frames", "train/episode_return", "eval/return", "train/critic_loss", "train/actor_loss",
                 "train/alpha_loss", "train/alpha"):
        assert name in logged, (name, sorted(columns))
    evals = [r for r in rows if r.get("eval/return")]
    assert [int(r["step"]) for r in evals] == [39, 79]


def test_td3_updates_actor_and_targets_every_second_update(tmp_path):
    """With policy_delay=2 the actor changes only on every second update."""
    module = TD3(**tiny_kwargs(replay={"warmup_frames": 10, "learning_starts": 10}))
    actor_before = flat_params(module.actor).clone()
    make_trainer(tmp_path, max_steps=10).fit(module)  # exactly one update: update index 0 -> no actor step
    assert int(module.update_count) == 1
    assert torch.equal(flat_params(module.actor), actor_before)
    assert torch.equal(flat_params(module.target_actor), actor_before)
    module2 = TD3(**tiny_kwargs(replay={"warmup_frames": 10, "learning_starts": 10}))
    make_trainer(tmp_path, max_steps=11).fit(module2)  # two updates -> one actor step
    assert not torch.equal(flat_params(module2.actor), actor_before)
    assert not torch.equal(flat_params(module2.target_actor), actor_before)


def test_seeded_runs_are_reproducible(tmp_path):
    """The same seed gives the same losses and parameters; another seed does not."""
    results = []
    for seed in (3, 3, 4):
        module = SAC(**tiny_kwargs(seed=seed))
        make_trainer(tmp_path / str(len(results)), max_steps=70).fit(module)
        losses = [r["train/critic_loss"] for r in read_metrics(tmp_path / str(len(results))) if r.get("train/critic_loss")]
        results.append((losses, flat_params(module)))
    assert results[0][0] == results[1][0] and len(results[0][0]) > 5
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][0] != results[2][0]


class _Snapshot(Callback):
    """Records what the module holds when fitting starts (after a checkpoint is restored)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if hasattr(self, "step"):
            return
        self.buffer = len(module.data)
        self.frames = module.data.collector._frames
        self.updates = int(module.update_count)
        self.step = trainer.global_step
        self.params = flat_params(module).clone()
        self.opt_state = {k: v.clone() for k, v in trainer.optimizers[0].state_dict()["state"][0].items()}


def test_checkpoint_holds_buffer_counters_and_rng(tmp_path):
    """A checkpoint carries the replay buffer, collector frames, update counter, RNG state and optimizer."""
    module = SAC(**tiny_kwargs())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=60, save_top_k=-1, save_last=True)
    make_trainer(tmp_path, max_steps=60, callbacks=[ckpt]).fit(module)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 60
    data = state["hyperrl"]["data"]
    assert data["transitions"]["observation"].shape[0] == 60 and data["collector_frames"] == 60
    assert int(state["state_dict"]["update_count"]) == 60 - 40 + 1
    assert set(state["hyperrl"]["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert state["optimizer_states"][0]["state"], "Adam moments are saved"
    assert not any(k.startswith("_envs") or "eval_env" in k for k in state["state_dict"])


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_resume_continues_from_the_checkpoint(algo, tmp_path):
    """Resuming restores networks, optimizer, buffer and counters, and runs only the remaining steps."""
    first = algo(**tiny_kwargs())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=50, save_top_k=-1)
    make_trainer(tmp_path / "a", max_steps=100, callbacks=[ckpt]).fit(first)
    saved = torch.load(tmp_path / "ckpt" / "epoch=0-step=50.ckpt", weights_only=False)

    snapshot = _Snapshot()
    second = algo(**tiny_kwargs(seed=123))  # different init: everything must come from the checkpoint
    trainer = make_trainer(tmp_path / "b", max_steps=100, callbacks=[snapshot])
    trainer.fit(second, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=50.ckpt")

    assert snapshot.step == 50 and snapshot.buffer == 50 and snapshot.frames == 50
    assert snapshot.updates == int(saved["state_dict"]["update_count"]) == 11
    expected = torch.cat([v.reshape(-1) for v in saved["state_dict"].values() if v.is_floating_point()])
    assert torch.equal(snapshot.params, expected)
    for key, value in saved["optimizer_states"][0]["state"][0].items():
        assert torch.equal(snapshot.opt_state[key], value)
    assert trainer.global_step == 100
    assert int(second.update_count) == int(first.update_count) == 61
    assert len(second.data) == 100 if second.data is not None else True


class _NaNAfter(SAC):
    def losses(self, batch, update):
        losses = super().losses(batch, update)
        if update >= 15:
            losses["loss"] = losses["loss"] * float("nan")
        return losses


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """A NaN loss raises NonFiniteLossError before the bad update; checkpoints written before stay finite."""
    module = _NaNAfter(**tiny_kwargs())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=10, save_top_k=-1, save_last=True)
    trainer = make_trainer(tmp_path, max_steps=200, callbacks=[ckpt])
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        trainer.fit(module)
    # update 15 happens at training step 40 + 15 = 55 (index 54): the last checkpoint is step 50
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 50
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in module.parameters()), "the bad update was never applied"


def test_bf16_mixed_keeps_targets_and_log_probs_in_fp32(tmp_path):
    """bf16-mixed runs (on CPU here, slowly; it is meant for GPUs) with fp32 losses and finite parameters."""
    seen = {}

    class Probe(SAC):
        def losses(self, batch, update):
            target = self.critic_target(batch)
            seen["target"] = target.dtype
            _, log_prob = self.actor.sample(batch.get("observation"))
            seen["log_prob"] = log_prob.dtype
            out = super().losses(batch, update)
            seen["critic_loss"] = out["critic_loss"].dtype
            return out

    module = Probe(**tiny_kwargs(replay={"warmup_frames": 10, "learning_starts": 10, "batch_size": 8}))
    make_trainer(tmp_path, max_steps=14, precision="bf16-mixed").fit(module)
    assert seen == {"target": torch.float32, "log_prob": torch.float32, "critic_loss": torch.float32}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("precision", ["16-true", "bf16-true", "64-true"])
def test_unsupported_precisions_are_rejected(tmp_path, precision):
    """fp16 needs loss scaling that these updates do not use, and "-true" precisions would cast the fp32 replay data
    and targets: a clear error before any step, not a crash or a silently wrong run."""
    from hyperrl.errors import ConfigurationError

    # (on CPU Lightning itself turns 16-mixed into bf16-mixed; 16-true reaches the module unchanged)
    with pytest.raises(ConfigurationError, match=f"precision '{precision}' is not supported: allowed 32-true"):
        make_trainer(tmp_path, max_steps=5, precision=precision).fit(SAC(**tiny_kwargs()))


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(algo, tmp_path):
    """Stop at step 60 (mid-episode), resume from the checkpoint: the final parameters are bit-identical to a run
    that never stopped (networks, optimizer, buffer, RNG and the MuJoCo episode in progress all restored)."""
    # 1000-step episodes: step 60 is mid-episode
    kwargs = tiny_kwargs(env="HalfCheetah-v5", evaluation={"eval_episodes": 1})
    straight = algo(**kwargs)
    make_trainer(tmp_path / "straight", max_steps=120, val_check_interval=50).fit(straight)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=60, save_top_k=-1)
    make_trainer(tmp_path / "a", max_steps=60, callbacks=[ckpt], val_check_interval=50).fit(algo(**kwargs))
    saved = torch.load(tmp_path / "ckpt" / "epoch=0-step=60.ckpt", weights_only=True)
    assert saved["hyperrl"]["data"]["env"]["elapsed_steps"] > 0, "the checkpoint is taken mid-episode"
    resumed = algo(**{**kwargs, "seed": 99})
    make_trainer(tmp_path / "b", max_steps=120, val_check_interval=50).fit(
        resumed, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=60.ckpt"
    )
    assert torch.equal(flat_params(resumed), flat_params(straight))


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    """The checkpoint writer (hyperrl.checkpoint_io.AtomicCheckpointIO, the CLI's default) dies after half the new
    checkpoint's bytes reached the disk: last.ckpt is unchanged and loadable, the partial file (written beside the
    destination, so that the final rename is atomic even when /tmp is another filesystem) is removed, and the next
    save works."""
    import io
    import os

    import hyperrl.checkpoint_io as checkpoint_io

    module = SAC(**tiny_kwargs())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=30, save_last=True, save_top_k=-1)
    trainer = make_trainer(tmp_path, max_steps=30, callbacks=[ckpt])
    assert isinstance(trainer.strategy.checkpoint_io, checkpoint_io.AtomicCheckpointIO)
    trainer.fit(module)
    last = tmp_path / "ckpt" / "last.ckpt"
    before = last.read_bytes()
    files_before = sorted(os.listdir(tmp_path / "ckpt"))

    real_save = torch.save
    written = []  # (file written to, bytes on disk when the write died, total bytes)

    def dying_save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        partials = [last.parent / n for n in os.listdir(last.parent) if n.endswith(".partial")]
        assert len(partials) == 1, "the temporary file lies beside the checkpoint (an atomic rename)"
        written.append((str(partials[0]), os.path.getsize(partials[0]), len(data)))
        raise KeyboardInterrupt("killed while writing the checkpoint file")

    with torch.no_grad():
        next(module.parameters()).add_(1.0)  # the new checkpoint differs from the one on disk
    monkeypatch.setattr(checkpoint_io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(last)
    monkeypatch.undo()

    assert len(written) == 1
    partial, size_on_disk, total = written[0]
    assert 0 < size_on_disk < total, "half of the new checkpoint really reached a file"
    assert not partial.endswith(".ckpt") and not os.path.exists(partial)
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["global_step"] == 30
    assert sorted(os.listdir(tmp_path / "ckpt")) == files_before, "the partial file was removed"

    trainer.save_checkpoint(last)  # a later save goes through
    assert last.read_bytes() != before and torch.load(last, weights_only=True)["global_step"] == 30
    assert sorted(os.listdir(tmp_path / "ckpt")) == files_before


def test_resume_from_an_end_of_run_checkpoint_keeps_frames_steps_and_the_episode(tmp_path):
    """A checkpoint written when a fit ends (after its last evaluation) resumes like a mid-run one: the logged
    ``train/frames`` equals the step count of an uninterrupted run's row, and the episode in progress continues."""
    from hyperrl.envs.factory import _gym_env, _time_limit

    class Episode(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if not hasattr(self, "elapsed"):
                self.elapsed = _time_limit(_gym_env(module.data.collector.env))._elapsed_steps

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=10**6)
    module = SAC(**tiny_kwargs())
    make_trainer(tmp_path / "a", max_steps=63, callbacks=[ckpt], val_check_interval=21, log_every_n_steps=7).fit(module)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["hyperrl"]["frames"] == 63
    elapsed = saved["hyperrl"]["data"]["env"]["elapsed_steps"]
    assert elapsed > 0, "the first fit must end mid-episode for this test to mean anything"

    episode = Episode()
    make_trainer(tmp_path / "b", max_steps=84, callbacks=[episode], val_check_interval=21, log_every_n_steps=7).fit(
        SAC(**tiny_kwargs()), ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert episode.elapsed == elapsed
    rows = [r for r in read_metrics(tmp_path / "b") if r.get("train/frames")]
    assert rows and all(float(r["train/frames"]) == int(r["step"]) + 1 for r in rows)
    assert [int(r["step"]) for r in rows] == [69, 76, 83]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"frames_per_batch": 5000, "buffer_size": 1000},
         "replay.frames_per_batch=5000 is not allowed: it must not exceed buffer_size=1000"),
        ({"learning_starts": 2000, "buffer_size": 1000},
         "replay.learning_starts=2000 is not allowed: it must not exceed buffer_size=1000"),
        ({"batch_size": 2000, "buffer_size": 1000}, "replay.batch_size=2000 is not allowed: it must not exceed buffer_size=1000"),
        ({"warmup_frames": -1}, "replay.warmup_frames=-1 is not allowed: expected an integer >= 0"),
    ],
)
def test_replay_settings_that_crawl_or_never_train_are_refused(overrides, message):
    from hyperrl.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        SAC(**tiny_kwargs(replay=overrides))
