"""The whole-update path of SAC/TD3 (``run_update``): eager, ``compile`` and ``cudagraphs``; the device replay buffer;
the refusals of speed options where they cannot run."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer, tiny_kwargs

from hyperrl.algos import SAC, TD3
from hyperrl.errors import ConfigurationError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SMALL_REPLAY = {"warmup_frames": 10, "learning_starts": 10, "batch_size": 8}


def recorded_fit(tmp_path, algo, steps=16, **overrides):
    """Fit ``algo`` for ``steps`` steps; return the module and the loss terms of every update."""
    module = algo(**tiny_kwargs(replay=SMALL_REPLAY, seed=0, **overrides))
    seen = []
    run_update = module.run_update

    def recording(batch, update):
        out = run_update(batch, update)
        seen.append({k: float(v) for k, v in out.items()})
        return out

    module.run_update = recording
    torch.manual_seed(0)
    make_trainer(tmp_path, max_steps=steps, accelerator=overrides.get("accelerator", "cpu")).fit(module)
    return module, seen


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_update_returns_detached_losses_and_steps_every_network(algo):
    """``update`` outside a Trainer (a user's own loop): one Adam step moves the critics, the actor (SAC: every
    update; TD3: on actor updates) and the targets, and returns detached scalars."""
    from test_losses import make_batch

    module = algo(**tiny_kwargs(replay={"batch_size": 8}))
    batch = make_batch(module)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    target_before = [p.detach().clone() for p in module.target_critics.parameters()]
    update = 1  # SAC: any update; TD3 (policy_delay 2): update 1 also steps the actor and the targets
    out = module.update(batch, update)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.values())
    changed = {n.split(".")[0] for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert {"critics", "actor"} <= changed
    assert any(not torch.equal(a, b) for a, b in zip(target_before, module.target_critics.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("algo", [SAC, TD3])
def test_compiled_update_gives_the_eager_losses(tmp_path, algo):
    """``compile=True`` computes what the eager update computes: same loss terms at every update of a fit (random
    draws made equal with inductor's ``fallback_random``), same final weights."""
    import torch._inductor.config as inductor_config

    eager, eager_losses = recorded_fit(tmp_path / "eager", algo)
    with inductor_config.patch(fallback_random=True):
        compiled, compiled_losses = recorded_fit(tmp_path / "compiled", algo, compile=True)
    assert len(eager_losses) == len(compiled_losses) == 7
    for a, b in zip(eager_losses, compiled_losses):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_td3_phases_are_critic_only_and_actor_updates():
    module = TD3(**tiny_kwargs(policy_delay=3))
    assert [module.update_phase(u) for u in range(6)] == [0, 0, 2, 0, 0, 2]
    assert [module.updates_actor(module.update_phase(u)) for u in range(6)] == [module.updates_actor(u) for u in range(6)]
    assert SAC(**tiny_kwargs()).update_phase(7) == 0


def test_cudagraphs_on_a_cpu_is_refused_in_one_line(tmp_path):
    module = SAC(**tiny_kwargs(cudagraphs=True))
    with pytest.raises(ConfigurationError, match=r"cudagraphs=True is not allowed on device 'cpu'.*CUDA"):
        make_trainer(tmp_path, max_steps=2).fit(module)


def test_cudagraphs_on_a_cpu_exits_2_from_the_command_line(tmp_path, capsys):
    from hyperrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "conf/quickstart.yaml", "--model.init_args.cudagraphs", "true",
              "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cudagraphs=True is not allowed on device 'cpu'" in err[0], err


def test_compile_with_two_devices_is_refused(tmp_path):
    module = SAC(**tiny_kwargs(compile=True))
    with pytest.raises(ConfigurationError, match="compile/cudagraphs are not allowed with 2 devices"):
        make_trainer(tmp_path, max_steps=2, devices=2, strategy="ddp_find_unused_parameters_true").fit(module)


def test_replay_buffer_lives_on_the_training_device(tmp_path):
    module, _ = recorded_fit(tmp_path, SAC, steps=12)
    # the data source is gone after fit: rebuild it as setup does and check where its storage lives
    data = module.make_data()
    try:
        assert data.buffer.storage.device == module.device
    finally:
        data.shutdown()


@cuda
@pytest.mark.parametrize(("algo", "options", "precision"), [
    (SAC, dict(cudagraphs=True), "32-true"),
    (SAC, dict(cudagraphs=True), "bf16-mixed"),
    (TD3, dict(cudagraphs=True), "32-true"),
    (SAC, dict(compile=True, cudagraphs=True), "32-true"),
    (TD3, dict(compile=True), "bf16-mixed"),
])
def test_cuda_fit_trains_with_fast_updates(tmp_path, algo, options, precision):
    """On a GPU, a CUDA-graphed update replays real updates: every update returns finite losses, the weights move
    after capture, and the buffer samples on the GPU."""
    module = algo(**tiny_kwargs(replay=SMALL_REPLAY, seed=0, **options))
    seen = []
    run_update = module.run_update

    def recording(batch, update):
        assert batch.device.type == "cuda"
        out = run_update(batch, update)
        seen.append((float(out["critic_loss"]), float(sum(p.detach().norm() for p in module.critics.parameters()))))
        return out

    module.run_update = recording
    make_trainer(tmp_path, max_steps=30, accelerator="gpu", precision=precision).fit(module)
    assert len(seen) == 21
    assert all(torch.isfinite(torch.tensor(loss)) for loss, _ in seen)
    norms = [n for _, n in seen[10:]]  # well after warm-up and capture
    assert len(set(norms)) == len(norms), "replayed updates must keep changing the critics"
