"""MAML's ``compile`` / ``cudagraphs`` options: the functional outer step (derivatives by ``torch.func``) gives the
eager autograd step, compiled or not, and CUDA graphs are refused in one line."""

from __future__ import annotations

import pytest
import torch

from hyperrl.algos import MAML, ContextMAML
from hyperrl.errors import ConfigurationError

TINY = dict(env="hyperrl/Navigation2D-v0", policy="mlp", policy_kwargs={"hidden": [8]}, meta_batch_size=2,
            fast_batch_size=2, n_train_tasks=6, n_test_tasks=2, eval_episodes=2)
TINY_HYPER = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}


def _pair(cls=MAML, **overrides):
    """An eager and a compile=True module with the same initial parameters, and one meta-batch drawn by the first."""
    eager = cls(**{**TINY, **overrides})
    eager.data = eager.make_data()
    fast = cls(**{**TINY, **overrides, "compile": True})
    fast.load_state_dict(eager.state_dict())
    batch = eager.sample_meta_batch(eager.data.collect())
    return eager, fast, batch


def _assert_same_step(eager, fast, batch, rtol, atol):
    result, loss = eager.outer_step(*batch)
    fast_result, fast_loss = fast.outer_step(*batch)
    assert result.accepted and fast_result.accepted  # a real step, not a rejected one
    assert (fast_result.tries, fast_result.fraction) == (result.tries, result.fraction)
    torch.testing.assert_close(fast_loss, loss, rtol=rtol, atol=atol)
    assert fast_result.loss == pytest.approx(result.loss, rel=rtol, abs=atol)
    assert fast_result.kl == pytest.approx(result.kl, rel=1e-3, abs=1e-7)
    moved = False
    for p, q, p0 in zip(eager.parameters(), fast.parameters(), eager._initial):
        torch.testing.assert_close(q, p, rtol=rtol, atol=atol)
        moved |= not torch.equal(p, p0)
    assert moved


@pytest.mark.parametrize("cls, overrides", [(MAML, {}), (MAML, {"first_order": True}),
                                            (MAML, {"adaptation_steps": 2}),
                                            (MAML, {"policy": "hyper", "policy_kwargs": TINY_HYPER, "fast_lr": 0.1}),
                                            (ContextMAML, {"policy": "context_mlp"})],
                         ids=["second_order", "first_order", "two_inner_steps", "hyper", "context_maml"])
def test_the_functional_outer_step_gives_the_eager_autograd_step(cls, overrides, monkeypatch):
    """``compile=True`` with the compiler replaced by the identity: the torch.func gradient, Fisher-vector product
    and line-search evaluation take the same TRPO step as autograd on :meth:`MAML.outer_terms`."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    eager, fast, batch = _pair(cls, **overrides)
    eager._initial = [p.detach().clone() for p in eager.parameters()]
    _assert_same_step(eager, fast, batch, rtol=1e-4, atol=1e-6)
    assert set(fast._fast_updates) == {"gradient", "fvp", "evaluate"} and not eager._fast_updates


@pytest.mark.slow
def test_the_compiled_meta_update_gives_the_eager_result():
    """The real ``torch.compile`` (inductor, CPU): the same TRPO step as eager, in float32 (to rounding, which
    conjugate gradient amplifies) and in float64 (tightly) on another meta-batch."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        eager, fast, batch = _pair()
        eager._initial = [p.detach().clone() for p in eager.parameters()]
        _assert_same_step(eager, fast, batch, rtol=1e-4, atol=1e-5)
        batch = [b.to(torch.float64) for b in eager.sample_meta_batch(eager.data.collect())]
        eager.policy.double()
        fast.policy.double()
        fast.load_state_dict(eager.state_dict())
        eager._initial = [p.detach().clone() for p in eager.parameters()]
        _assert_same_step(eager, fast, batch, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [MAML, ContextMAML])
def test_cudagraphs_are_refused_in_one_line_naming_why(cls):
    with pytest.raises(ConfigurationError) as info:
        cls(**{**TINY, "cudagraphs": True})
    message = str(info.value)
    assert f"cudagraphs=True is not allowed for {cls.__name__}" in message and "\n" not in message
    assert "line search" in message and "compile true" in message
