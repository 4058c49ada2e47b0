"""Framework overhead: environment steps per second of a full MLP-critic SAC training loop, hyperrl vs plain PyTorch.

What is compared
----------------
* **hyperrl**: ``lightning.Trainer(max_steps=W+N+1, logger=False, enable_checkpointing=False,
  enable_progress_bar=False, val_check_interval=10**9, check_val_every_n_epoch=None, num_sanity_val_steps=0)``
  fitting ``SAC(env="HalfCheetah-v5", critic="mlp", replay={"warmup_frames": W, "learning_starts": W})``: TorchRL
  collector (one frame per training step), TorchRL replay buffer, one SAC update per step (one fused Adam with param
  groups).
* **plain**: a CleanRL-style loop written here with the same networks (``hyperrl.nn.TanhGaussianPolicy``, twin
  ``make_critic("mlp", ...)`` + target copies): raw gymnasium ``HalfCheetah-v5``, uniformly random actions for the
  first W steps, then policy samples; a numpy replay buffer; once the buffer holds W transitions, every step does
  one SAC update (twin critics, target critics, entropy auto-tuning, three default ``torch.optim.Adam``, Polyak
  update by a per-parameter loop).

Both start updating at the same step (buffer size W), use batch 256 and HalfCheetah-v5. Only the N steps after the
warm-up are timed: from the start of step W to the start of step W+N (for hyperrl a Callback records
``time.perf_counter()`` at ``on_train_batch_start`` of those global steps). Runs alternate (plain, hyperrl, plain,
hyperrl, ...: 3 pairs, 1 with ``--quick``) in one process; the JSON reports medians and
``ratio_vs_plain_loop = hyperrl steps/s / plain steps/s`` (and the per-pair ratios, which are less sensitive to
load drifting during the run). A secondary hyperrl run with the user-facing defaults (progress bar on, a CSV
logger, ``log_every_n_steps=50``; Lightning's bar writes to stdout, sent to stderr here) is reported as
``hyperrl_default_steps_per_s`` (not in the full run with ``--quick``, to stay under a minute). ``OMP_WAIT_POLICY``
defaults to PASSIVE (see the comment at the imports: shared machines).

``--profile`` adds a per-step cost breakdown of both loops (collector vs raw env step, buffer sampling, the update)
and a cProfile of hyperrl's timed window.

    python benchmarks/overhead.py            # W=1000, N=2000, 3 pairs
    python benchmarks/overhead.py --quick    # W=300, N=300, 1 pair, < 1 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings

# On a shared machine (more runnable threads than cores) OpenMP's default spin-waiting turns every parallel
# region into a wait for a descheduled thread: a 2x256 MLP update went from 2.5 ms to 210 ms with 2 torch threads
# under load. Passive waiting removes that (at load ~1 it was as fast or faster: 2.4 vs 2.8 ms); both sides of the
# comparison get it. It must be set before torch loads OpenMP; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

ENV_ID = "HalfCheetah-v5"
BATCH, GAMMA, TAU, LR = 256, 0.99, 0.005, 3e-4


# ============================================================================ plain PyTorch + gymnasium loop
class PlainSAC:
    """Twin MLP critics + targets, tanh-Gaussian policy, auto-tuned α, three default Adams (CleanRL style)."""

    def __init__(self, obs_dim: int, act_dim: int, low, high) -> None:
        from hyperrl.nn import TanhGaussianPolicy, make_critic

        self.actor = TanhGaussianPolicy(obs_dim, act_dim, low, high)
        self.q1, self.q2 = make_critic("mlp", obs_dim, act_dim), make_critic("mlp", obs_dim, act_dim)
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.q_opt = torch.optim.Adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=LR)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=LR)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=LR)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.actor.sample(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0][0].numpy()

    def update(self, s, a, r, s2, term) -> None:
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            a2, logp2 = self.actor.sample(s2)
            q_next = torch.min(self.q1_t(s2, a2), self.q2_t(s2, a2)) - alpha * logp2
            y = r + GAMMA * (1.0 - term) * q_next
        q_loss = F.mse_loss(self.q1(s, a), y) + F.mse_loss(self.q2(s, a), y)
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()

        pi, logp = self.actor.sample(s)
        actor_loss = (alpha * logp - torch.min(self.q1(s, pi), self.q2(s, pi))).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()  # also writes critic grads; the next critic step zeroes them (as CleanRL)
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for net, target in ((self.q1, self.q1_t), (self.q2, self.q2_t)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.data.copy_(TAU * p.data + (1 - TAU) * tp.data)


class NumpyReplay:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros((capacity, 1), np.float32)
        self.term = np.zeros((capacity, 1), np.float32)
        self.capacity, self.pos, self.size = capacity, 0, 0

    def add(self, o, a, r, o2, term) -> None:
        i = self.pos
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.term[i] = o, a, r, o2, term
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int):
        idx = rng.integers(0, self.size, n)
        return tuple(torch.from_numpy(x[idx]) for x in (self.obs, self.act, self.rew, self.next_obs, self.term))


def plain_run(warmup: int, steps: int, seed: int = 0, phases: dict | None = None) -> float:
    """Steps/s of the N steps after the W warm-up steps. ``phases`` (optional) collects per-step seconds."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = PlainSAC(obs_dim, act_dim, env.action_space.low, env.action_space.high)
    buffer = NumpyReplay(1_000_000, obs_dim, act_dim)
    obs, _ = env.reset(seed=seed)
    clock = time.perf_counter
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = clock()
        t0 = clock()
        action = env.action_space.sample() if step < warmup else agent.act(obs)
        t1 = clock()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, float(terminated))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        t2 = clock()
        if buffer.size >= warmup:
            batch = buffer.sample(rng, BATCH)
            t3 = clock()
            agent.update(*batch)
            t4 = clock()
            if phases is not None and step >= warmup:
                for name, dt in (("policy act", t1 - t0), ("env step + store", t2 - t1),
                                 ("buffer sample", t3 - t2), ("SAC update", t4 - t3)):  # fmt: skip
                    phases.setdefault(name, []).append(dt)
    elapsed = clock() - start
    env.close()
    return steps / elapsed


# ============================================================================ hyperrl (Lightning + TorchRL)
def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def hyperrl_run(warmup: int, steps: int, seed: int = 0, defaults: bool = False, profiler=None,
                log: bool = True) -> float:
    """Steps/s of hyperrl's SAC between the starts of global steps W and W+N.

    ``defaults=True``: progress bar on, a CSV logger (what a user gets), instead of the bare Trainer.
    ``profiler``: a ``cProfile.Profile`` enabled over the timed window.
    ``log=False``: the module's ``log``/``log_dict`` become no-ops (diagnostic: the cost of metric logging).
    """
    import contextlib

    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger

    from hyperrl.algos import SAC

    class StepClock(Callback):
        def __init__(self) -> None:
            self.marks: dict[int, float] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            step = trainer.global_step
            if step in (warmup, warmup + steps) and step not in self.marks:
                self.marks[step] = time.perf_counter()
                if profiler is not None:
                    profiler.enable() if step == warmup else profiler.disable()

    clock = StepClock()
    replay = {"warmup_frames": warmup, "learning_starts": warmup, "batch_size": BATCH}
    module = SAC(env=ENV_ID, critic="mlp", replay=replay, seed=seed)
    if not log:
        module.log = module.log_dict = lambda *a, **k: None
    with tempfile.TemporaryDirectory() as logdir:
        common = dict(
            max_steps=warmup + steps + 1, enable_checkpointing=False, val_check_interval=10**9,
            check_val_every_n_epoch=None, num_sanity_val_steps=0, callbacks=[clock], enable_model_summary=False,
        )  # fmt: skip
        if defaults:
            trainer = L.Trainer(logger=CSVLogger(logdir), enable_progress_bar=True, default_root_dir=logdir, **common)
        else:
            trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=logdir, **common)
        # Lightning's progress bar writes to stdout: keep stdout for results (the bar still renders, on stderr)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.fit(module)
    return steps / (clock.marks[warmup + steps] - clock.marks[warmup])


def lightning_floor_ms(steps: int, log_calls: int = 0) -> float:
    """Per-step ms of Lightning's manual-optimization loop around a training step that does nothing but step an
    optimizer over one scalar parameter (same Trainer settings as the hyperrl run, same endless step loader), and
    ``log_calls`` calls of ``self.log`` of a scalar tensor (``on_step=True, batch_size=1``, as hyperrl logs)."""
    import lightning as L

    from hyperrl.data import training_steps_loader

    class Empty(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.t: dict[int, float] = {}

        def configure_optimizers(self):
            return torch.optim.Adam([self.w])

        def train_dataloader(self):
            return training_steps_loader()

        def training_step(self, step, batch_idx):
            if self.global_step in (10, 10 + steps):
                self.t[self.global_step] = time.perf_counter()
            for k in range(log_calls):
                self.log(f"train/m{k}", self.w.detach(), on_step=True, batch_size=1)
            self.optimizers().step()

    module = Empty()
    trainer = L.Trainer(
        max_steps=steps + 11, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        val_check_interval=10**9, check_val_every_n_epoch=None, num_sanity_val_steps=0, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module)
    return (module.t[10 + steps] - module.t[10]) / steps * 1e3


def hyperrl_phases(warmup: int, steps: int, seed: int = 0) -> dict[str, list[float]]:
    """Per-step seconds of hyperrl's parts called directly, outside Lightning: the collector's next batch, the
    buffer extend, the buffer sample and the update (what ``OffPolicyAlgorithm.training_step`` does, minus logging)."""
    from hyperrl.algos import SAC
    from hyperrl.data import OffPolicyData
    from hyperrl.data.offpolicy import TRANSITION_KEYS
    from hyperrl.envs import make_env

    module = SAC(env=ENV_ID, critic="mlp", replay={"warmup_frames": warmup, "learning_starts": warmup}, seed=seed)
    data = OffPolicyData(lambda: make_env(ENV_ID, seed=seed), module.acting_policy(), 1_000_000, BATCH, 1, warmup)
    batches = iter(data.collector)  # what OffPolicyData.collect() does, split in two
    optimizer = module.configure_optimizers()
    phases: dict[str, list[float]] = {}
    clock = time.perf_counter
    for step in range(warmup + steps):
        t0 = clock()
        batch = next(batches).reshape(-1)
        t1 = clock()
        data.buffer.extend(batch.select(*TRANSITION_KEYS))
        t2 = clock()
        if len(data) >= warmup:
            sample = data.sample()
            t3 = clock()
            losses = module.losses(sample, step)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            module.after_update(step)
            t4 = clock()
            if step >= warmup:
                for name, dt in (("collector next() (policy act + TorchRL env step)", t1 - t0),
                                 ("buffer extend (1 transition)", t2 - t1), ("buffer sample", t3 - t2),
                                 ("SAC update", t4 - t3)):  # fmt: skip
                    phases.setdefault(name, []).append(dt)
    data.shutdown()
    return phases


def torchrl_env_step_ms(steps: int) -> float:
    """Per-step ms of the bare TorchRL env (``make_env``: GymEnv + DoubleToFloat + RewardSum), random actions,
    ``step_and_maybe_reset``: the env wrapper's share of the collector's time."""
    from hyperrl.envs import make_env

    env = make_env(ENV_ID, seed=0)
    td = env.reset()
    for _ in range(20):
        _, td = env.step_and_maybe_reset(env.rand_action(td))
    t0 = time.perf_counter()
    for _ in range(steps):
        _, td = env.step_and_maybe_reset(env.rand_action(td))
    ms = (time.perf_counter() - t0) / steps * 1e3
    env.close()
    return ms


def print_phases(title: str, phases: dict[str, list[float]]) -> float:
    """Prints median / mean ms per step of each phase; returns the sum of the means (ms)."""
    print(f"{title} (per step, median / mean ms):")
    for name, values in phases.items():
        print(f"  {name:52s} {statistics.median(values) * 1e3:7.3f} / {statistics.fmean(values) * 1e3:7.3f}")
    total = sum(statistics.fmean(v) for v in phases.values()) * 1e3
    print(f"  {'sum of means':52s} {'':7s}   {total:7.3f}")
    return total


def profile(warmup: int, steps: int, plain_sps: float, hyper_sps: float) -> None:
    """Where each loop's per-step time goes (each item is its own run, so small differences are noise)."""
    plain_phases: dict[str, list[float]] = {}
    plain_run(warmup, steps, phases=plain_phases)
    plain_sum = print_phases("plain loop", plain_phases)
    hyper_sum = print_phases("hyperrl's parts, called directly (no Lightning)", hyperrl_phases(warmup, steps))
    nolog_sps = hyperrl_run(warmup, steps, log=False)
    floor, floor_log = lightning_floor_ms(steps), lightning_floor_ms(steps, log_calls=5)
    print("hyperrl full-loop per-step time (ms):")
    rows = (
        ("measured (median of the timed runs)", 1e3 / hyper_sps),
        ("  of which the parts above", hyper_sum),
        ("  => Lightning loop + logging + callbacks", 1e3 / hyper_sps - hyper_sum),
        ("same run with module.log/log_dict as no-ops", 1e3 / nolog_sps),
        ("  => difference: the module's metric logging", 1e3 / hyper_sps - 1e3 / nolog_sps),
        ("bare Lightning manual-optimization step (empty)", floor),
        ("  the same + 5 self.log calls of a scalar tensor", floor_log),
        ("bare TorchRL env step_and_maybe_reset (random)", torchrl_env_step_ms(steps)),
        ("plain loop: measured (median of the timed runs)", 1e3 / plain_sps),
        ("  sum of its parts", plain_sum),
    )
    for name, ms in rows:
        print(f"  {name:52s} {ms:8.3f}")
    prof = cProfile.Profile()
    hyperrl_run(warmup, steps, profiler=prof)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
    print("cProfile of hyperrl's timed window (cumulative; cProfile inflates Python-heavy code such as logging):")
    print(out.getvalue())


# ============================================================================ main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="W=300, N=300, 1 pair (< 1 min on 2 cores)")
    parser.add_argument("--warmup", type=int, default=None, help="random warm-up steps W (1000, quick 300)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps N after the warm-up (2000, quick 300)")
    parser.add_argument("--pairs", type=int, default=None, help="alternating plain/hyperrl run pairs (3, quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--defaults-run", action=argparse.BooleanOptionalAction, default=None,
                        help="also time hyperrl with progress bar + CSV logger (default: on, off with --quick)")
    parser.add_argument("--profile", action="store_true", help="print per-step breakdowns and a cProfile of hyperrl")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    warmup = args.warmup if args.warmup is not None else (300 if args.quick else 1000)
    steps = args.steps or (300 if args.quick else 2000)
    pairs = args.pairs or (1 if args.quick else 3)
    if warmup < 1:
        parser.error("--warmup must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    _quiet_lightning()

    plain, hyper = [], []
    for i in range(pairs):
        plain.append(plain_run(warmup, steps, seed=i))
        hyper.append(hyperrl_run(warmup, steps, seed=i))
        print(f"pair {i}: plain {plain[-1]:7.1f} steps/s, hyperrl {hyper[-1]:7.1f} steps/s", flush=True)
    defaults_sps = None
    if args.defaults_run if args.defaults_run is not None else not args.quick:
        defaults_sps = hyperrl_run(warmup, steps, seed=0, defaults=True)
        print(f"hyperrl with progress bar + CSV logger: {defaults_sps:7.1f} steps/s", flush=True)

    plain_sps, hyper_sps = statistics.median(plain), statistics.median(hyper)
    print(f"median: plain {plain_sps:.1f} steps/s ({1e3 / plain_sps:.2f} ms/step), hyperrl {hyper_sps:.1f} "
          f"steps/s ({1e3 / hyper_sps:.2f} ms/step), ratio {hyper_sps / plain_sps:.3f}")

    if args.profile:
        profile(warmup, steps, plain_sps, hyper_sps)

    result = {
        "benchmark": "overhead",
        "ratio_vs_plain_loop": round(hyper_sps / plain_sps, 3),
        "hyperrl_steps_per_s": round(hyper_sps, 1),
        "plain_steps_per_s": round(plain_sps, 1),
        "hyperrl_default_steps_per_s": None if defaults_sps is None else round(defaults_sps, 1),
        "hyperrl_default_ratio_vs_plain_loop": None if defaults_sps is None else round(defaults_sps / plain_sps, 3),
        "pair_ratios": [round(h / p, 3) for h, p in zip(hyper, plain)],
        "hyperrl_runs": [round(x, 1) for x in hyper],
        "plain_runs": [round(x, 1) for x in plain],
        "warmup_steps": warmup,
        "timed_steps": steps,
        "pairs": pairs,
        **run_info(load_start, args.quick),
    }
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
