"""Speed of the paper-size SAC update and of whole fits, per speed option, on any device (GPU or CPU).

Part 1, the update. One SAC update with twin paper-size SA-Hyper critics on HalfCheetah sizes (obs 17, act 6,
B=256 by default), exactly as training runs it (:meth:`hyperrl.algos.SAC.run_update`: losses, backward, fused Adam
step, Polyak update), timed per variant:

* ``eager_fp32``, ``eager_bf16`` (bf16 autocast, as ``--trainer.precision bf16-mixed`` runs it);
* ``compiled_fp32`` (``compile=True``: ``torch.compile`` of the whole update);
* ``cudagraphs_fp32`` / ``cudagraphs_bf16`` (``cudagraphs=True``: the whole update captured once by tensordict's
  ``CudaGraphModule`` and replayed), ``compiled_cudagraphs_fp32`` / ``_bf16`` (both), CUDA only;
* ``reference``: the authors' formulation (the plain-PyTorch reference of ``update_speed.py``: separate twin critics,
  three Adams, the full critic forward again in the policy loss).

Variants are timed round-robin (the order rotates every repeat) after their warm-up (which includes compilation and
graph capture); each timing synchronises the device. The JSON reports median ms per variant, the speedup of each
over ``eager_fp32``, and the achieved TFLOP/s (FLOPs of one update from ``FlopCounterMode``). On a CPU it also checks
that the compiled update computes the same losses as the eager one on the same batch and weights
(``torch._inductor.config.fallback_random`` makes compiled random draws equal eager ones).

Part 2, whole fits (``--fits``): environment steps per second of short ``hyperrl fit`` runs, one per option set, as a
user runs them (a subprocess each; ``train/fps`` from ``metrics.csv``, median over the logged rows after the first
half of the run: compilation, capture and warm-up excluded).

    python benchmarks/gpu_speed.py --device cuda             # 20 repeats, and the fits
    python benchmarks/gpu_speed.py --device cpu --quick      # 5 repeats, no fits
    python benchmarks/gpu_speed.py --only --fits sac_mlp_cudagraphs_fp32   # one fit, no update timing
"""

from __future__ import annotations

import argparse
import copy
import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402
from update_speed import ACT_DIM, OBS_DIM, ReferenceSAC, count_flops, make_batch, reference_inputs  # noqa: E402

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (name, compile, cudagraphs, precision, needs CUDA, timed unless named in --only); precision "tf32" is fp32
#: weights and data with TensorFloat-32 matrix multiplies (``torch.set_float32_matmul_precision("high")``)
VARIANTS = (
    ("eager_fp32", False, False, "fp32", False, True),
    ("eager_bf16", False, False, "bf16", False, True),
    ("compiled_fp32", True, False, "fp32", False, True),
    ("cudagraphs_fp32", False, True, "fp32", True, True),
    ("cudagraphs_bf16", False, True, "bf16", True, True),
    ("cudagraphs_tf32", False, True, "tf32", True, True),
    ("compiled_cudagraphs_fp32", True, True, "fp32", True, True),
    ("compiled_cudagraphs_bf16", True, True, "bf16", True, False),
)

_GRAPHS = ["--model.init_args.cudagraphs", "true"]
_COMPILE = ["--model.init_args.compile", "true"]
_BF16 = ["--trainer.precision", "bf16-mixed"]
_BATCH10 = ["--model.init_args.replay.frames_per_batch", "10", "--model.init_args.replay.updates_per_batch", "10"]
#: (name, config, extra fit options, environment frames): the fits of part 2, most informative first
FITS = (
    ("sac_hyper_cudagraphs_fp32", "conf/sac_hyper.yaml", _GRAPHS, 3000),
    ("sac_mlp_cudagraphs_fp32", "conf/sac_mlp.yaml", _GRAPHS, 3000),
    ("sac_hyper_eager_fp32", "conf/sac_hyper.yaml", [], 1500),
    ("td3_hyper_cudagraphs_fp32", "conf/td3_hyper.yaml", _GRAPHS, 3000),
    ("sac_hyper_cudagraphs_bf16", "conf/sac_hyper.yaml", _GRAPHS + _BF16, 3000),
    ("sac_mlp_eager_fp32", "conf/sac_mlp.yaml", [], 1500),
    ("sac_mlp_compiled_cudagraphs_fp32", "conf/sac_mlp.yaml", _COMPILE + _GRAPHS, 3000),
    ("sac_hyper_compiled_cudagraphs_fp32", "conf/sac_hyper.yaml", _COMPILE + _GRAPHS, 3000),
    ("td3_mlp_cudagraphs_fp32", "conf/td3_mlp.yaml", _GRAPHS, 3000),
    # ten frames per collector batch and ten updates after it: the same update-to-data ratio, the collector's and
    # Lightning's per-step work paid once per ten frames
    ("sac_mlp_cudagraphs_fp32_batch10", "conf/sac_mlp.yaml", _GRAPHS + _BATCH10, 3000),
    ("sac_hyper_cudagraphs_fp32_batch10", "conf/sac_hyper.yaml", _GRAPHS + _BATCH10, 3000),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """A SAC module (paper-size SA-Hyper twin) set up for one speed option, updating on a fixed batch."""

    def __init__(self, base, name: str, compile_: bool, cudagraphs: bool, precision: str, batch, device) -> None:
        self.name, self.batch, self.device = name, batch, device
        self.module = copy.deepcopy(base)
        self.module.hparams.compile, self.module.hparams.cudagraphs = compile_, cudagraphs
        # as Lightning's bf16-mixed runs it: no autocast weight cache (a cache would outlive a CUDA-graph capture)
        bf16_autocast = torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
        self.autocast = bf16_autocast if precision == "bf16" else nullcontext()
        self.matmul = "high" if precision == "tf32" else "highest"
        self.k = 0

    def step(self) -> None:
        torch.set_float32_matmul_precision(self.matmul)  # a CUDA graph keeps the kernels chosen at its capture
        with self.autocast:
            self.module.run_update(self.batch, self.k)
        torch.set_float32_matmul_precision("highest")
        self.k += 1


def losses_match(base, batch) -> float:
    """Largest relative |compiled − eager| over the loss terms of two updates on the same batches and weights. Run
    before anything else is compiled: compiled code made without ``fallback_random`` must not be reused here."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    out = {}
    with inductor_config.patch(fallback_random=True):
        for compiled in (False, True):
            module = copy.deepcopy(base)
            module.hparams.compile = compiled
            torch.manual_seed(1)
            out[compiled] = [module.run_update(batch, k) for k in range(2)]
    torch._dynamo.reset()
    return max(float((c[k] - e[k]).abs() / e[k].abs().clamp_min(1e-6))
               for e, c in zip(out[False], out[True]) for k in e.keys())


def time_updates(args, device) -> dict:
    from hyperrl.algos import SAC

    torch.manual_seed(0)
    base = SAC(env="HalfCheetah-v5", critic="sa_hyper", replay={"batch_size": args.batch_size}).to(device)
    batch = make_batch(args.batch_size).to(device)
    result = {}
    if device.type == "cpu" and (not args.only or "compiled_fp32" in args.only):
        result["compiled_vs_eager_max_rel_loss_difference"] = float(f"{losses_match(base, batch):.3g}")
    chosen = [v for v in VARIANTS if (device.type == "cuda" or not v[4]) and (v[0] in args.only if args.only else v[5])]
    variants, errors = [], {}
    for name, compile_, graphs, precision, *_ in chosen:
        variant = Variant(base, name, compile_, graphs, precision, batch, device)
        t0 = time.perf_counter()
        try:
            for _ in range(args.warmup + (8 if compile_ or graphs else 0)):
                variant.step()
            sync(device)
        except Exception as exc:  # a failing option is a result to report, not a reason to lose the others
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            print(f"{name}: FAILED {errors[name]}", file=sys.stderr, flush=True)
            continue
        print(f"{name}: ready after {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        variants.append(variant)
    ref = ReferenceSAC(OBS_DIM, ACT_DIM, foreach=True)
    for module in (ref.critic, ref.critic_target, ref.policy):
        module.to(device)
    ref.log_alpha = ref.log_alpha.detach().to(device).requires_grad_(True)
    ref.alpha = ref.log_alpha.detach().exp()
    ref.alpha_optim = torch.optim.Adam([ref.log_alpha], lr=3e-4, foreach=True)
    ref_in = reference_inputs(batch)
    runners = [(v.name, v.step) for v in variants] + [("reference", lambda: ref.update(*ref_in))]
    for _ in range(args.warmup):
        runners[-1][1]()
    times: dict[str, list[float]] = {name: [] for name, _ in runners}
    for i in range(args.repeats):
        shift = i % len(runners)
        for name, step in runners[shift:] + runners[:shift]:
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    flop = count_flops(lambda: copy.deepcopy(base).run_update(batch, 0))
    ref_flop = count_flops(lambda: ref.update(*ref_in))
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    eager = ms.get("eager_fp32")
    result.update({
        "update_ms": {k: round(v, 3) for k, v in ms.items()},
        "speedup_vs_eager_fp32": {k: round(eager / v, 2) for k, v in ms.items()} if eager else None,
        "achieved_tflops": {k: round((ref_flop if k == "reference" else flop) / (v / 1e3) / 1e12, 2)
                            for k, v in ms.items()},
        "update_gflop": round(flop / 1e9, 2),
        "reference_update_gflop": round(ref_flop / 1e9, 2),
        "failed": errors,
    })
    return result


def fit_fps(name: str, config: str, extra: list[str], steps: int, args, device) -> dict:
    """Median ``train/fps`` of the second half of a short ``hyperrl fit`` (a subprocess, as a user runs it)."""
    root = tempfile.mkdtemp(prefix=f"gpu_speed_{name}_")
    frames = int(steps * args.fit_scale)  # environment frames; a training step collects frames_per_batch of them
    per_batch = int(extra[extra.index("--model.init_args.replay.frames_per_batch") + 1]) \
        if "--model.init_args.replay.frames_per_batch" in extra else 1
    steps = frames // per_batch
    cmd = [sys.executable, "-c", "import sys; from hyperrl.commands import main; sys.exit(main())", "fit",
           "--config", config, "--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu",
           "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(10 * steps),
           "--trainer.default_root_dir", root,
           "--model.init_args.replay.warmup_frames", str(min(1000, frames // 4)), *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.fit_timeout)
    except subprocess.TimeoutExpired:
        return {"steps_per_s": None, "timed_out_after_s": args.fit_timeout}
    wall = time.perf_counter() - t0
    rows = []
    for path in glob.glob(os.path.join(root, "**", "metrics.csv"), recursive=True):
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r.get("train/fps")]
    late = [float(r["train/fps"]) for r in rows if int(r["step"]) >= steps // 2]
    out = {"steps_per_s": round(statistics.median(late), 1) if late else None, "wall_s": round(wall, 1),
           "exit": proc.returncode}
    if proc.returncode != 0 or not late:
        out["stderr_tail"] = proc.stderr.strip().splitlines()[-3:]
    print(f"fit {name}: {out}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="5 repeats (20 otherwise), 2 warm-ups; small fits")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="update variants to time (default: all that fit)")
    parser.add_argument("--fits", nargs="*", default=None,
                        help="fits to run (names from FITS; 'all' for every one; default: none on CPU, all on CUDA)")
    parser.add_argument("--fit-scale", type=float, default=None, help="scales each fit's steps (1, quick 0.4)")
    parser.add_argument("--fit-timeout", type=int, default=300)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no further fit once this many seconds have passed (the results so far are kept)")
    parser.add_argument("--out", default=None, help="also write the JSON line to this file (rewritten after each "
                        "part, so a run stopped from outside keeps what it measured)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    device = torch.device(args.device)
    args.repeats = args.repeats or (5 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else 2
    args.fit_scale = args.fit_scale or (0.4 if args.quick else 1.0)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    result = {"benchmark": "gpu_speed", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "batch_size": args.batch_size, "repeats": args.repeats}

    def save(final: bool = False) -> None:
        line = json.dumps({**result, **run_info(load_start, args.quick), "complete": final})
        if final:
            print(line)
        if args.out:
            with open(args.out, "w") as f:
                f.write(line + "\n")

    if args.only != []:
        try:
            result.update(time_updates(args, device))
        except Exception as exc:  # keep going: the fits are worth having on their own
            result["update_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        save()
    fits = args.fits if args.fits is not None else (["all"] if device.type == "cuda" else [])
    chosen = [f for f in FITS if "all" in fits or f[0] in fits]
    result["fit_env_steps_per_s"] = {}
    for name, cfg, extra, steps in chosen:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            result["fit_env_steps_per_s"][name] = {"skipped": "--budget-s reached"}
            continue
        result["fit_env_steps_per_s"][name] = fit_fps(name, cfg, extra, steps, args, device)
        save()
    save(final=True)
    return result


if __name__ == "__main__":
    main()
