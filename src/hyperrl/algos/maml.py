"""MAML with a TRPO outer step and a true meta-gradient (Finn et al. 2017; hyperrl-paper.md §5.4), and context-MAML
(multi-task TRPO with the oracle context and no inner step, §5.5).

One Lightning training step = one meta-update (``trainer.global_step`` counts meta-updates):

1. draw ``meta_batch_size`` train tasks ``i`` (with replacement); collect ``fast_batch_size`` episodes ``D_i`` of
   each with the meta-policy ``π_θ`` (all tasks at once, :class:`~hyperrl.data.onpolicy.OnPolicyData`);
2. per task: linear feature baseline fitted on ``D_i``, normalised GAE(γ, λ) advantages ``A``; inner REINFORCE loss
   ``L_i(θ) = −mean_t[log π_θ(a_t|s_t,c_i) A_t]`` (mask-weighted), and ``adaptation_steps`` functional SGD steps
   ``φ_i = θ − α ∇_θ L_i(θ)``: ``φ_i`` is a tensor expression of ``θ`` (:func:`torch.func.functional_call`, no
   parameter is overwritten), so derivatives w.r.t. ``θ`` go through the inner step (second order);
   ``first_order=True`` detaches ``∇L_i``, giving first-order MAML (``∂φ_i/∂θ = I``);
3. collect ``fast_batch_size`` validation episodes ``D'_i`` with ``π_{φ_i}``; normalised GAE advantages ``A'`` on
   them, valued by the baseline fitted on ``D_i`` in 2 (the authors' ``MetaLearner``; ``post_adaptation_baseline:
   refit`` fits another on ``D'_i``, as pytorch-maml-rl's later sampler does);
4. TRPO on ``θ``: surrogate ``S(θ) = mean_i −mean_t[exp(log π_{φ_i(θ)} − log π_{φ_i(θ₀)}) A'_t]``, mean KL
   ``mean_i mean_t KL(π_{φ_i(θ)} ‖ π_{φ_i(θ₀)})`` (new ‖ old, the authors' ``kl_divergence(pi, old_pi)``; also
   through the inner step), CG + line search (:mod:`hyperrl.algos.trpo`); a rejected line search leaves ``θ``
   bit-identical.

Actions reach the environment clipped to its bounds and are stored unclipped (:mod:`hyperrl.data.onpolicy`).
Task pools: the authors' 100 train and 20 test tasks for every family (20 OOD tasks on the ``medium`` split),
except the direction families, whose pool is the fixed ``[-1, +1]``.

``adaptation_steps=0`` (:class:`ContextMAML`): no inner step, ``D'_i = D_i`` and the surrogate is multi-task TRPO
(the authors' ``Multi_MetaLearner``). Evaluation always reports returns before and after ``eval_adaptation_steps``
(default ``max(adaptation_steps, 1)``) inner steps at ``fast_lr``, on train, test and OOD tasks:
``eval/{train,test,ood}_{before,after}_return``.

Inner step sizes by default (§5.4): 0.1 for the MLP policies, 5e-5 for the hypernetwork policy.

Per-task terms are one function of a task's tensors (:meth:`MAML.task_outer_terms`, inner step by
:func:`torch.func.grad`): eagerly called task by task under autograd, batched over the meta-batch with
:func:`torch.func.vmap` in the functional outer step (:meth:`MAML.outer_functions`). ``compile=True`` runs the outer
step's three functions of θ (the meta-gradient with the surrogate and KL, the Fisher-vector product, the surrogate
and KL of a line-search candidate) through ``torch.compile``, all derivatives taken with :mod:`torch.func` inside
them (a compiled graph's backward cannot be differentiated again, which the second-order meta-gradient and the
Fisher-vector product need); conjugate gradient and the line search stay in Python. ``cudagraphs`` is refused: the
outer step is no fixed sequence of kernels (CG stops on a residual, the line search on its result) and every
meta-update steps CPU environments between its phases.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn
from torch.func import functional_call

from hyperrl.algos.arguments import Seed, check_arguments
from hyperrl.algos.base import Algorithm
from hyperrl.algos.settings import Adaptation, MAMLEvaluation, MAMLOptim, Sampling, Tasks
from hyperrl.algos.returns import advantages, masked_mean
from hyperrl.algos.trpo import flat, natural_gradient_step, trpo_step
from hyperrl.data.onpolicy import OnPolicyData
from hyperrl.envs import check_task_env_id, make_task_pools
from hyperrl.envs.tasks import task_family
from hyperrl.errors import ConfigurationError
from hyperrl.nn import make_policy
from hyperrl.nn.policies import POLICY, PolicyChoice

#: default inner learning rates (§5.4): the authors' ``fast_lr`` (MLP) and ``fast_hyper_lr`` (hypernetwork)
MLP_FAST_LR = 0.1
HYPER_FAST_LR = 5e-5
#: the authors' MAML task pools for every family (``--num-of-tasks``, ``--test_tasks``; on HalfCheetah-Vel-Medium
#: their 20 test tasks are the OOD velocities)
MAML_TRAIN_TASKS, MAML_TEST_TASKS, MAML_OOD_TASKS = 100, 20, 20


def maml_pool_sizes(env: str, split: str, n_train: int | None, n_test: int | None, n_ood: int | None) -> dict:
    """``make_task_pools`` sizes: the given ones, ``None`` replaced by the authors' MAML pools where the family draws
    its tasks (a direction family's fixed pool and an unknown split are left to ``make_task_pools``)."""
    sizes = {"n_train": n_train, "n_test": n_test, "n_ood": n_ood}
    family = task_family(env)
    if family.fixed_tasks is not None or split not in family.splits:
        return sizes
    defaults = {"n_train": MAML_TRAIN_TASKS, "n_test": MAML_TEST_TASKS,
                "n_ood": MAML_OOD_TASKS if family.splits[split].ood else None}
    return {k: defaults[k] if v is None else v for k, v in sizes.items()}

Params = dict[str, Tensor]


class _Dispatch(nn.Module):
    """Calls one method of the policy, so that :func:`functional_call` can run ``condition`` as well as ``forward``
    with substituted parameters (the names get a ``policy.`` prefix)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.policy, method)(*args)


def normal_log_prob(action: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """``Σ_a log N(a; μ, σ)``: ``(..., A) -> (...)``."""
    return (-0.5 * ((action - loc) / scale).square() - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def normal_kl(loc0: Tensor, scale0: Tensor, loc1: Tensor, scale1: Tensor) -> Tensor:
    """``KL(N(μ₀, σ₀) ‖ N(μ₁, σ₁))`` summed over action dims: ``(..., A) -> (...)``."""
    var0, var1 = scale0.square(), scale1.square()
    return (torch.log(scale1 / scale0) + (var0 + (loc0 - loc1).square()) / (2 * var1) - 0.5).sum(-1)


class MAML(Algorithm):
    """MAML-TRPO over a task family (module docstring). Settings default to the authors' (§5.4).

    Args:
        env: a task family id (``hyperrl/Navigation2D-v0``, ``hyperrl/HalfCheetahVel-v0``, ...).
        policy: ``mlp`` (2×100), ``context_mlp`` or ``hyper``, or ``class_path``/``init_args`` of a policy class
            with its settings (``hidden``, ``primary_widths``, ...; :mod:`hyperrl.nn.registry`); built by
            ``make_policy`` with ``distribution="normal"``.
        tasks: the task pools (:class:`~hyperrl.algos.settings.Tasks`; sizes None: the authors' MAML pools, 100 train
            / 20 test / 20 OOD where the split has OOD tasks; the direction families have the fixed pool ``[-1, +1]``).
        adaptation: the inner loop (:class:`~hyperrl.algos.settings.Adaptation`: steps, step size, first order).
        sampling: tasks per meta-update and episodes per task (:class:`~hyperrl.algos.settings.Sampling`).
        optim: returns, GAE, the linear baseline and the TRPO outer step (:class:`~hyperrl.algos.settings.MAMLOptim`).
        evaluation: :class:`~hyperrl.algos.settings.MAMLEvaluation`.
        cpu_threads: torch intra-op threads during a meta-update and an evaluation when the module is on the CPU
            (None: leave torch's setting). Default 1: these are many small ops, which extra threads slow down.
        compile: run the outer step's functions of θ through ``torch.compile`` (module docstring).
        cudagraphs: refused (module docstring); the option exists so that every algorithm takes the same flags.
        seed: network initialisation and sampling.
    """

    NETWORKS = {"policy": POLICY}
    GROUPS = {"tasks": Tasks, "adaptation": Adaptation, "sampling": Sampling, "optim": MAMLOptim,
              "evaluation": MAMLEvaluation}

    @classmethod
    def network_settings_of_old(cls, name, settings, hparams):
        settings.pop("distribution", None)  # older checkpoints could only hold "normal", which MAML now passes
        return settings

    def __init__(
        self,
        env: str = "hyperrl/Navigation2D-v0",
        policy: PolicyChoice = "mlp",
        tasks: Tasks = Tasks(),
        adaptation: Adaptation = Adaptation(),
        sampling: Sampling = Sampling(),
        optim: MAMLOptim = MAMLOptim(),
        evaluation: MAMLEvaluation = MAMLEvaluation(),
        cpu_threads: PositiveInt | None = 1,
        compile: bool = False,
        cudagraphs: bool = False,
        seed: Seed = 0,
    ) -> None:
        super().__init__()
        self.set_groups(tasks=tasks, adaptation=adaptation, sampling=sampling, optim=optim, evaluation=evaluation)
        self.save_hyperparameters()
        self.hparams_as_data()
        check_arguments(MAML.__init__, locals())
        if cudagraphs:
            raise ConfigurationError(
                f"cudagraphs=True is not allowed for {type(self).__name__}: its TRPO step is no fixed sequence of "
                "kernels (conjugate gradient and the line search stop on data) and each meta-update steps CPU "
                "environments; use --model.init_args.compile true"
            )
        self.env_spec = check_task_env_id(env)
        t = self.tasks
        self.pools = make_task_pools(env, t.task_seed, t.split, **maml_pool_sizes(env, t.split, t.n_train_tasks,
                                                                                  t.n_test_tasks, t.n_ood_tasks))
        torch.manual_seed(seed)
        spec = self.env_spec
        self.policy = make_policy(self.hparams.policy, spec.observation_dim, spec.action_dim, spec.context_dim,
                                  distribution="normal")  # TRPO's Gaussian with a state-independent scale
        self._call = _Dispatch(self.policy)
        fast_lr = self.adaptation.fast_lr
        self.fast_lr = float(fast_lr) if fast_lr is not None else (
            HYPER_FAST_LR if getattr(self.policy, "is_hypernetwork", False) else MLP_FAST_LR
        )
        steps = self.evaluation.eval_adaptation_steps
        self.eval_adaptation_steps = max(self.adaptation.adaptation_steps, 1) if steps is None else int(steps)

    # ------------------------------------------------------------------ functional policy
    def meta_params(self) -> Params:
        """The meta-parameters θ (the module's own tensors, by name)."""
        return dict(self.policy.named_parameters())

    def _run(self, params: Params, method: str, *args: Any) -> Any:
        return functional_call(self._call, {f"policy.{k}": v for k, v in params.items()}, (method, *args))

    def distribution(self, params: Params, observation: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of ``π_params(·|s, c)`` for one task: observations ``(..., S)``, context ``(c,)``."""
        ctx = context.reshape(*([1] * (observation.dim() - 1)), -1)
        return self._run(params, "forward", observation, ctx)

    def inner_loss(self, params: Params, batch, adv: Tensor) -> Tensor:
        """REINFORCE ``−mean_t[log π(a|s) A]`` (mask-weighted) on one task's episodes ``batch (E, T)``."""
        return self._inner_loss(params, batch["observation"], batch["action"], batch["mask"], adv,
                                batch["context"][0, 0])

    def _inner_loss(self, params: Params, observation: Tensor, action: Tensor, mask: Tensor, adv: Tensor,
                    context: Tensor) -> Tensor:
        loc, scale = self.distribution(params, observation, context)
        return -masked_mean(normal_log_prob(action, loc, scale) * adv, mask)

    def adapt(self, params: Params, batch, adv: Tensor, steps: int | None = None, lr: float | None = None,
              create_graph: bool | None = None) -> Params:
        """``steps`` functional SGD steps ``φ ← φ − α ∇_φ L(φ)`` from ``params`` on one task's episodes.

        ``create_graph`` (default: ``not first_order``) keeps ``∇L`` a function of ``params``, so that ``φ`` is
        differentiable to second order in ``params``; without it ``∇L`` is a constant and ``∂φ/∂params = I``.
        """
        return self._adapt(params, batch["observation"], batch["action"], batch["mask"], adv, batch["context"][0, 0],
                           steps, lr, create_graph)

    def _adapt(self, params: Params, observation: Tensor, action: Tensor, mask: Tensor, adv: Tensor,
               context: Tensor, steps: int | None = None, lr: float | None = None,
               create_graph: bool | None = None) -> Params:
        steps = self.adaptation.adaptation_steps if steps is None else steps
        lr = self.fast_lr if lr is None else lr
        create_graph = (not self.adaptation.first_order) if create_graph is None else create_graph
        for _ in range(steps):
            grads = torch.func.grad(self._inner_loss)(params, observation, action, mask, adv, context)
            params = {k: v - lr * (grads[k] if create_graph else grads[k].detach()) for k, v in params.items()}
        return params

    def task_advantages(self, episodes, fit_on=None) -> Tensor:
        """Normalised GAE advantages ``(M, E, T)``, the baseline fitted per task on its own episodes, or on task
        ``i``'s episodes ``fit_on[i]``."""
        hp = self.optim

        def fit(i):
            if fit_on is None:
                return None
            return fit_on[i]["observation"], fit_on[i]["reward"], fit_on[i]["mask"]

        return torch.stack([
            advantages(episodes[i]["observation"], episodes[i]["reward"], episodes[i]["mask"], hp.gamma,
                       hp.gae_lambda, hp.baseline_reg, fit_on=fit(i))
            for i in range(episodes.shape[0])
        ])

    def actor_factory(self, params: list[Params], episodes: int):
        """Rollout actor with task ``i``'s parameters on rows ``i·E .. (i+1)·E − 1``: one call per env step for all
        tasks (shared parameters: the policy's own broadcasting; per-task parameters: :func:`torch.func.vmap` over
        the stacked parameter sets), the task-only part (``condition``) computed once per rollout."""
        from hyperrl.nn.policies import TaskCondition

        m, e = len(params), episodes
        shared = all(p is params[0] for p in params)
        uses_context = self.policy.uses_context

        def make_actor(context: Tensor):
            ctx = context.reshape(m, e, -1)[:, :1]  # (M, 1, c): one context row per task
            if shared:
                cond = self._run(params[0], "condition", ctx if uses_context else None)

                def actor(observation: Tensor) -> tuple[Tensor, Tensor]:
                    loc, scale = self._run(params[0], "forward", observation.reshape(m, e, -1), cond)
                    return loc.reshape(m * e, -1), scale.reshape(m * e, -1)

                return actor
            stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
            values = (torch.func.vmap(lambda p, c: self._run(p, "condition", c).value)(stacked, ctx)
                      if uses_context else None)

            def one_task(p: Params, obs: Tensor, value: Any) -> tuple[Tensor, Tensor]:
                return self._run(p, "forward", obs, TaskCondition(value))

            def actor(observation: Tensor) -> tuple[Tensor, Tensor]:
                obs = observation.reshape(m, e, -1)
                if uses_context:
                    loc, scale = torch.func.vmap(one_task)(stacked, obs, values)
                else:
                    loc, scale = torch.func.vmap(lambda p, o: one_task(p, o, None))(stacked, obs)
                return loc.reshape(m * e, -1), scale.reshape(m * e, -1)

            return actor

        return make_actor

    def _detached(self, params: Params) -> Params:
        return {k: v.detach() for k, v in params.items()}

    # ------------------------------------------------------------------ data
    def make_data(self) -> OnPolicyData:
        return OnPolicyData(self.hparams.env, self.pools, self.sampling.meta_batch_size,
                            seed=self.hparams.seed + 1000 * self.global_rank, device=self.device)

    # ------------------------------------------------------------------ the meta-update
    def sample_meta_batch(self, tasks: list[dict]):
        """Train episodes, their advantages, (detached) adapted params and validation episodes with advantages."""
        meta = self.meta_params()
        e = self.sampling.fast_batch_size
        train = self.data.rollout(tasks, e, self.actor_factory([self._detached(meta)] * len(tasks), e))
        train_adv = self.task_advantages(train)
        if self.adaptation.adaptation_steps == 0:
            return train, train_adv, train, train_adv
        adapted = [self._detached(self.adapt(meta, train[i], train_adv[i], create_graph=False))
                   for i in range(len(tasks))]
        valid = self.data.rollout(tasks, e, self.actor_factory(adapted, e))
        fit_on = train if self.optim.post_adaptation_baseline == "pre" else None
        return train, train_adv, valid, self.task_advantages(valid, fit_on=fit_on)

    @staticmethod
    def task_tensors(train, train_adv: Tensor, valid, valid_adv: Tensor) -> tuple[Tensor, ...]:
        """A meta-batch as plain tensors, the task first: the inputs of :meth:`task_outer_terms`."""
        return (train["observation"], train["action"], train["mask"], train_adv, train["context"][:, 0, 0],
                valid["observation"], valid["action"], valid["mask"], valid_adv)

    def task_outer_terms(self, params: Params, train_obs: Tensor, train_action: Tensor, train_mask: Tensor,
                         train_adv: Tensor, context: Tensor, valid_obs: Tensor, valid_action: Tensor,
                         valid_mask: Tensor, valid_adv: Tensor, old: tuple[Tensor, Tensor, Tensor] | None = None,
                         create_graph: bool = True) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        """One task's surrogate and KL at ``params`` (module docstring), through the inner step; ``old``: the
        task's ``(loc, scale, log_prob)`` at θ₀ (None: ``params`` is θ₀, and they are returned detached)."""
        if self.adaptation.adaptation_steps:
            params = self._adapt(params, train_obs, train_action, train_mask, train_adv, context,
                                 create_graph=create_graph)
        loc, scale = self.distribution(params, valid_obs, context)
        log_prob = normal_log_prob(valid_action, loc, scale)
        if old is None:
            old = (loc.detach(), scale.detach(), log_prob.detach())
        loss = -masked_mean(torch.exp(log_prob - old[2]) * valid_adv, valid_mask)
        kl = masked_mean(normal_kl(loc, scale, old[0], old[1]), valid_mask)  # KL(new ‖ old)
        return loss, kl, old

    def batched_outer_terms(self, params: Params, data: tuple[Tensor, ...], old: tuple | None = None,
                            create_graph: bool = True) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        """:meth:`task_outer_terms` of every task of ``data`` (:meth:`task_tensors`) at once; mean surrogate, mean
        KL and the stacked ``old``."""
        in_dims = (None,) + (0,) * len(data) + (None if old is None else 0,)
        losses, kls, old = torch.func.vmap(partial(self.task_outer_terms, create_graph=create_graph),
                                           in_dims=in_dims)(params, *data, old)
        return losses.mean(), kls.mean(), old

    def outer_terms(self, train, train_adv, valid, valid_adv, old: tuple | None = None,
                    create_graph: bool | None = None) -> tuple[Tensor, Tensor, tuple]:
        """Surrogate ``S(θ)`` and mean KL at the current θ, with autograd graphs to the module's parameters through
        the inner step (module docstring); ``old``: the stacked ``(loc, scale, log_prob)`` of every task at θ₀
        (None: this call is at θ₀ and returns them)."""
        create_graph = (not self.adaptation.first_order) if create_graph is None else create_graph
        data, meta = self.task_tensors(train, train_adv, valid, valid_adv), self.meta_params()
        # task by task: under autograd on the CPU this is a little faster than the vmapped terms
        terms = [self.task_outer_terms(meta, *(x[i] for x in data), None if old is None else tuple(o[i] for o in old),
                                       create_graph=create_graph) for i in range(len(data[0]))]
        losses, kls, olds = zip(*terms)
        return (torch.stack(losses).mean(), torch.stack(kls).mean(),
                tuple(torch.stack(o) for o in zip(*olds)) if old is None else old)

    def outer_functions(self) -> dict:
        """The outer step's functions of θ (a dict of detached parameter tensors), derivatives by :mod:`torch.func`,
        through ``torch.compile`` when ``compile`` is on (built once; the data keep their shapes):

        * ``gradient(θ, data) -> (∇S, S, KL, old)`` at θ₀;
        * ``fvp(θ, data, old, v) -> F v + damping·v`` (flat ``v``), ``F`` the Hessian of the mean KL at θ₀;
        * ``evaluate(θ, data, old) -> (S, KL)`` at a line-search candidate (first order in the inner step).
        """
        hp = self.optim
        second = not self.adaptation.first_order

        def gradient(params, data):
            def surrogate(p):
                loss, kl, old = self.batched_outer_terms(p, data, None, second)
                return loss, (kl, old)

            grads, (loss, (kl, old)) = torch.func.grad_and_value(surrogate, has_aux=True)(params)
            return flat(list(grads.values())), loss, kl, old

        def fvp(params, data, old, v):
            def kl(p):
                return self.batched_outer_terms(p, data, old, second)[1]

            def directional(p):
                grads = flat(list(torch.func.grad(kl)(p).values()))
                return grads.dot(v)

            return flat(list(torch.func.grad(directional)(params).values())) + hp.cg_damping * v

        def evaluate(params, data, old):
            loss, kl, _ = self.batched_outer_terms(params, data, old, False)
            return loss, kl

        return {name: self.fast_update(name, fn) for name, fn in
                (("gradient", gradient), ("fvp", fvp), ("evaluate", evaluate))}

    @contextmanager
    def _threads(self):
        threads = self.hparams.cpu_threads
        previous = torch.get_num_threads()
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def train_step(self) -> dict[str, Tensor]:
        with self._threads():
            return self._meta_update()

    def _meta_update(self) -> dict[str, Tensor]:
        adapts = bool(self.adaptation.adaptation_steps)
        start = time.perf_counter()
        tasks = self.data.collect()
        train, train_adv, valid, valid_adv = self.sample_meta_batch(tasks)
        sample_time = time.perf_counter() - start
        steps = int(train["mask"].sum()) + (int(valid["mask"].sum()) if adapts else 0)
        self.count_frames(steps)
        returns = valid["return"].reshape(-1).tolist()
        self._episode_returns = (self._episode_returns + returns)[-100:]
        self._new_returns.extend(returns)

        result, loss = self.outer_step(train, train_adv, valid, valid_adv)
        elapsed = time.perf_counter() - start
        return {
            "loss": loss.detach(),
            "surrogate_before": loss.detach(),
            "surrogate_after": torch.tensor(result.loss),
            "kl": torch.tensor(result.kl),
            "ls_accepted": torch.tensor(float(result.accepted)),
            "ls_fraction": torch.tensor(result.fraction),
            "before_return": train["return"].mean(),
            "after_return": valid["return"].mean(),
            "episodes_per_s": torch.tensor(
                (train.shape[0] * train.shape[1] * (2 if adapts else 1)) / max(sample_time, 1e-9)),
            "update_s": torch.tensor(elapsed),
        }

    def outer_step(self, train, train_adv, valid, valid_adv):
        """The TRPO step on θ (in place) for one meta-batch; returns the line search's result and ``S(θ₀)``.
        Eagerly: autograd graphs of :meth:`outer_terms` (built once at θ₀; the Fisher-vector products reuse it);
        with ``compile``: the compiled :meth:`outer_functions`. A non-finite surrogate stops the run first."""
        hp = self.optim
        params = list(self.meta_params().values())
        trpo = dict(max_kl=hp.max_kl, cg_iterations=hp.cg_iterations, ratio=hp.ls_ratio, max_steps=hp.ls_max_steps)
        if self.is_fast:
            fns = self.outer_functions()
            theta = self._detached(self.meta_params())  # shares storage: the line search's steps are seen
            data = self.task_tensors(train, train_adv, valid, valid_adv)
            grad, loss, _, old = fns["gradient"](theta, data)
            self.stop_if_not_finite({"loss": loss})

            def evaluate() -> tuple[float, float]:
                new_loss, new_kl = fns["evaluate"](theta, data, old)
                return new_loss.item(), new_kl.item()

            return natural_gradient_step(params, grad, lambda v: fns["fvp"](theta, data, old, v), loss.item(),
                                         evaluate, **trpo), loss.detach()
        with torch.enable_grad():
            loss, kl, old = self.outer_terms(train, train_adv, valid, valid_adv)
            self.stop_if_not_finite({"loss": loss})

            def evaluate() -> tuple[float, float]:
                new_loss, new_kl, _ = self.outer_terms(train, train_adv, valid, valid_adv, old, create_graph=False)
                return new_loss.item(), new_kl.item()

            return trpo_step(params, loss, kl, evaluate, damping=hp.cg_damping, **trpo), loss.detach()

    # ------------------------------------------------------------------ evaluation
    def eval_pools(self) -> dict[str, list[dict]]:
        """The tasks evaluated per pool: test and OOD (if any) in full, as many train tasks as test tasks (each
        capped at ``eval_tasks``)."""
        cap = self.evaluation.eval_tasks
        pools = {"train": self.pools.train[:len(self.pools.test)], "test": self.pools.test}
        if self.pools.ood:
            pools["ood"] = self.pools.ood
        return {k: (v[:cap] if cap else v) for k, v in pools.items()}

    def evaluate_tasks(self, tasks: list[dict], episodes: int | None = None, stream: str = "eval",
                       reseed: int | None = None) -> tuple[float, float]:
        """Mean episode return on ``tasks`` before and after ``eval_adaptation_steps`` inner steps."""
        e = episodes or self.evaluation.eval_episodes or self.sampling.fast_batch_size
        if reseed is not None:
            self.data.reseed(stream, reseed)
        with torch.inference_mode(False):
            meta = self._detached(self.meta_params())
            before = self.data.rollout(tasks, e, self.actor_factory([meta] * len(tasks), e), stream=stream)
            if self.eval_adaptation_steps == 0:
                value = float(before["return"].mean())
                return value, value
            adv = self.task_advantages(before)
            params = [self._detached(self.adapt(self.meta_params(), before[i], adv[i],
                                                steps=self.eval_adaptation_steps, create_graph=False))
                      for i in range(len(tasks))]
            after = self.data.rollout(tasks, e, self.actor_factory(params, e), stream=stream)
        return float(before["return"].mean()), float(after["return"].mean())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self._threads():
            metrics = self.evaluate()
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("eval/test_after_return", "eval/test_improvement"), sync_dist=True,
                     batch_size=1)

    def evaluate(self) -> dict[str, float]:
        """``eval/{pool}_{before,after}_return`` for every pool of :meth:`eval_pools`, and
        ``eval/test_improvement`` (after − before on the test tasks). Same episodes noise at every call."""
        if self.data is None:  # outside a fit (``hyperrl validate``, analyses)
            self.data = self.make_data()
        metrics = {}
        for i, (name, tasks) in enumerate(self.eval_pools().items()):
            before, after = self.evaluate_tasks(tasks, reseed=self.hparams.seed + 100 + 10 * i)
            metrics[f"eval/{name}_before_return"] = before
            metrics[f"eval/{name}_after_return"] = after
        metrics["eval/test_improvement"] = metrics["eval/test_after_return"] - metrics["eval/test_before_return"]
        return metrics


#: context-MAML's inner loop: none in training
CONTEXT_MAML_ADAPTATION = Adaptation(adaptation_steps=0)


class ContextMAML(MAML):
    """Context-MAML: multi-task TRPO with the oracle context and no inner step (``adaptation_steps`` 0; §5.5).

    The policy defaults to ``hyper``; evaluation still reports returns before and after one adaptation step."""

    def __init__(self, env: str = "hyperrl/Navigation2D-v0", policy: PolicyChoice = "hyper",
                 adaptation: Adaptation = CONTEXT_MAML_ADAPTATION, **kwargs: Any) -> None:
        adaptation = Adaptation.of(adaptation, CONTEXT_MAML_ADAPTATION)
        if adaptation.adaptation_steps != 0:
            raise ConfigurationError(
                f"adaptation.adaptation_steps={adaptation.adaptation_steps!r} is not allowed for ContextMAML: it has "
                "no inner step (0); use MAML for adaptation during training"
            )
        super().__init__(env=env, policy=policy, adaptation=adaptation, **kwargs)


__all__ = ["MAML", "ContextMAML", "MLP_FAST_LR", "HYPER_FAST_LR"]
