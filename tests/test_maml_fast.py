"""MAML's ``compile`` / ``cudagraphs`` options: the functional outer step (derivatives by ``torch.func``) gives the
eager autograd step, compiled or not, and CUDA graphs are refused in one line."""

from __future__ import annotations

import pytest
import torch

from hyperrl.algos import MAML, ContextMAML
from hyperrl.errors import ConfigurationError
from hyperrl.nn import POLICY

TINY = dict(env="hyperrl/Navigation2D-v0", policy=POLICY.with_settings("mlp", {"hidden": [8]}),
            sampling={"meta_batch_size": 2, "fast_batch_size": 2}, tasks={"n_train_tasks": 6, "n_test_tasks": 2},
            evaluation={"eval_episodes": 2})  # the groups the tests below change (adaptation, optim) are not set here
TINY_HYPER = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}


def _pair(cls=MAML, dtype=torch.float32, **overrides):
    """An eager and a compile=True module with the same initial parameters, and one meta-batch drawn by the first.
    The whole steps are compared with ``cg_damping`` 0.1: at these tiny sizes the Fisher matrix is near singular, and
    with the default damping (1e-5) conjugate gradient turns float64 rounding (1e-16 in the products) into 1e-3 in
    the step. The pieces themselves are compared at the default damping."""
    eager = cls(**{**TINY, **overrides})
    eager.data = eager.make_data()
    fast = cls(**{**TINY, **overrides, "compile": True})
    batch = [b.to(dtype) for b in eager.sample_meta_batch(eager.data.collect())]
    for m in (eager, fast):
        m.policy.to(dtype)
    fast.load_state_dict(eager.state_dict())
    eager._initial = [p.detach().clone() for p in eager.parameters()]
    return eager, fast, batch


def _assert_same_step(eager, fast, batch, rtol, atol):
    result, loss = eager.outer_step(*batch)
    fast_result, fast_loss = fast.outer_step(*batch)
    assert result.accepted and fast_result.accepted  # a real step, not a rejected one
    assert (fast_result.tries, fast_result.fraction) == (result.tries, result.fraction)
    torch.testing.assert_close(fast_loss, loss, rtol=rtol, atol=atol)
    assert fast_result.loss == pytest.approx(result.loss, rel=rtol, abs=atol)
    assert fast_result.kl == pytest.approx(result.kl, rel=rtol, abs=atol)
    moved = False
    for p, q, p0 in zip(eager.parameters(), fast.parameters(), eager._initial):
        torch.testing.assert_close(q, p, rtol=rtol, atol=atol)
        moved |= not torch.equal(p, p0)
    assert moved


@pytest.mark.parametrize("cls, overrides", [(MAML, {}), (MAML, {"adaptation": {"first_order": True}}),
                                            (MAML, {"adaptation": {"adaptation_steps": 2}}),
                                            (MAML, {"policy": POLICY.with_settings("hyper", TINY_HYPER),
                                                    "adaptation": {"fast_lr": 0.1}}),
                                            (ContextMAML, {"policy": "context_mlp"})],
                         ids=["second_order", "first_order", "two_inner_steps", "hyper", "context_maml"])
def test_the_functional_outer_step_gives_the_eager_autograd_step(cls, overrides, monkeypatch):
    """``compile=True`` with the compiler replaced by the identity: the torch.func gradient, Fisher-vector product
    and line-search evaluation take the same TRPO step as autograd on :meth:`MAML.outer_terms`."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    eager, fast, batch = _pair(cls, torch.float64, optim={"cg_damping": 0.1}, **overrides)
    _assert_same_step(eager, fast, batch, rtol=1e-7, atol=1e-10)
    assert set(fast._fast_updates) == {"gradient", "fvp", "evaluate"} and not eager._fast_updates


@pytest.mark.parametrize("overrides", [{}, {"policy": POLICY.with_settings("hyper", TINY_HYPER),
                                          "adaptation": {"fast_lr": 0.1}}],
                         ids=["mlp", "hyper"])
def test_the_functional_pieces_equal_autograd_at_the_default_damping(overrides):
    """Uncompiled :meth:`MAML.outer_functions` (torch.func, vmapped over tasks) against autograd on
    :meth:`MAML.outer_terms` (task by task): the meta-gradient, the old distributions, the damped Fisher-vector product
    and a line-search evaluation at a moved θ, in float64."""
    from hyperrl.algos.trpo import fisher_vector_product, flat

    m, _, batch = _pair(dtype=torch.float64, **overrides)
    fns, data = m.outer_functions(), m.task_tensors(*batch)
    theta = m._detached(m.meta_params())
    params = list(m.meta_params().values())
    with torch.enable_grad():
        loss, kl, old = m.outer_terms(*batch)
        grad = flat(torch.autograd.grad(loss, params, retain_graph=True))
        fvp = fisher_vector_product(kl, params, m.optim.cg_damping)
    f_grad, f_loss, f_kl, f_old = fns["gradient"](theta, data)
    torch.testing.assert_close(f_grad, grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close((f_loss, f_kl), (loss.detach(), kl.detach()), rtol=1e-9, atol=1e-12)
    for a, b in zip(f_old, old):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    v = torch.randn(grad.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fns["fvp"](theta, data, old, v), fvp(v), rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
        moved = m.outer_terms(*batch, old, create_graph=False)[:2]
    torch.testing.assert_close(fns["evaluate"](theta, data, old), moved, rtol=1e-9, atol=1e-12)
    assert float(moved[1]) > 0


@pytest.mark.slow
def test_the_compiled_meta_update_gives_the_eager_result():
    """The real ``torch.compile`` (inductor, CPU): the same TRPO step as eager, in float64 tightly and in float32 to
    rounding (see :func:`_pair`)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        _assert_same_step(*_pair(dtype=torch.float64, optim={"cg_damping": 0.1}), rtol=1e-7, atol=1e-10)
        _assert_same_step(*_pair(dtype=torch.float32, optim={"cg_damping": 0.1}), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cls", [MAML, ContextMAML])
def test_cudagraphs_are_refused_in_one_line_naming_why(cls):
    with pytest.raises(ConfigurationError) as info:
        cls(**{**TINY, "cudagraphs": True})
    message = str(info.value)
    assert f"cudagraphs=True is not allowed for {cls.__name__}" in message and "\n" not in message
    assert "line search" in message and "compile true" in message
