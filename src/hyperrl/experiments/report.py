"""``hyperrl report SWEEP_FOLDER [--out DIR]``: learning curves and final performance over seeds, via ``rliable``.

Reads every run folder under ``SWEEP_FOLDER`` (a folder with ``metrics.csv``; its ``config.yaml`` and, for runs of
``hyperrl sweep``, ``sweep_run.json``). A run's environment is ``model.init_args.env``; its variant is the sweep's
labels other than the environment and the seed (e.g. the critic), or, for runs made outside a sweep,
``<Algorithm>:<critic>`` (SAC, TD3) and ``<Algorithm>:policy=<policy>[,critic=<critic>]`` (meta-RL). The evaluation
metric is ``eval/return`` (SAC, TD3), ``eval/test_tasks_return`` (MetaSAC, PEARL) or, for MAML, two curves:
``eval/test_after_return`` (variant ``<variant> [after]``) and ``eval/test_before_return`` (``<variant> [before]``),
the test tasks' returns after and before the adaptation step.

The x-axis is environment frames at each evaluation: ``eval/frames`` when the run logs it; else, when the logged
``train/frames`` grow in proportion to the step (SAC, TD3, MAML), ``(step + 1) · frames per step``; else (MetaSAC and
PEARL collect in bursts, thousands of frames before the first update) the ``train/frames`` of the last training row
at or before the evaluation's step.

Two runs of one (environment, variant, seed) are refused (a sweep run twice into one folder, or resumed beside an
orphan, would otherwise count twice); ``--duplicates newest`` keeps the newest of each and lists the others in
``skipped.txt``.

Statistics (Agarwal et al. 2021, through ``rliable``): scores are ``(runs, 1)`` matrices per environment and variant,
the interquartile mean (IQM) and the mean with stratified-bootstrap 95% confidence intervals (``reps`` resamples).

* ``curves_<env>.png`` / ``curves.csv``: IQM over seeds at every evaluation all runs of the variant have reached
  (so a partial sweep plots up to its slowest run), with the 95% band.
* ``final.md`` / ``final.csv``: per environment and variant, each run's score is the mean of its last ``--last``
  evaluations; IQM, mean and their 95% CIs over runs.
* ``improvement.md`` / ``improvement.csv``: ``P(X > Y)`` (probability of improvement, Mann–Whitney) of every pair of
  variants per environment, with its 95% CI.

Runs that cannot be used (no ``metrics.csv`` yet, no evaluation yet, no environment in the config, pruned by a
sweep's ASHA scheduler) are listed with the reason, on stdout and in ``skipped.txt``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import itertools
import os
import re
from dataclasses import dataclass

import numpy as np

from hyperrl.errors import ConfigurationError
from hyperrl.runs import check_writable

METRICS = ("eval/return", "eval/test_tasks_return", "eval/test_after_return")
# a metric whose runs also get a companion curve: (metric, companion, label of the metric, label of the companion)
PAIRED = {"eval/test_after_return": ("eval/test_before_return", "after", "before")}
META_ALGORITHMS = ("MAML", "ContextMAML", "MetaSAC", "PEARL")
PRUNED = "pruned by the sweep's ASHA scheduler"  # the reason a pruned run is skipped


@dataclass
class RunScores:
    path: str
    name: str
    env: str
    variant: str
    seed: int | None
    frames: np.ndarray  # (E,) evaluation points
    scores: np.ndarray  # (E,)
    metric: str
    config: str = ""  # the run's model settings (JSON), to tell a duplicate from a label clash
    mtime: float = 0.0


def _float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def read_metrics(run_dir: str) -> list[dict]:
    """Rows of a run's metrics, joining the parts of a resumed run: ``metrics.resume<k>.csv`` (in order) then
    ``metrics.csv``; rows of an earlier part at or after the first step of the next part are dropped (they were
    recomputed after the resume)."""
    parts = sorted(glob.glob(os.path.join(run_dir, "metrics.resume*.csv")),
                   key=lambda p: int(re.search(r"resume(\d+)\.csv$", p).group(1)))
    if os.path.isfile(os.path.join(run_dir, "metrics.csv")):
        parts.append(os.path.join(run_dir, "metrics.csv"))
    tables = []
    for path in parts:
        with open(path, newline="") as f:
            tables.append(list(csv.DictReader(f)))
    rows = []
    for i, table in enumerate(tables):
        later = [_float(r.get("step")) for t in tables[i + 1:] for r in t]
        later = [s for s in later if s is not None]
        limit = min(later) if later else None
        rows += [r for r in table if limit is None or (_float(r.get("step")) or 0) < limit]
    return rows


def _config(run_dir: str) -> dict:
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _frames_at(rows: list[dict]):
    """``step -> frames`` of a run (module docstring: ``eval/frames``, else proportional, else the last training row
    at or before the step)."""
    logged = {}
    for r in rows:
        step = _float(r.get("step"))
        for key in ("eval/frames", "train/frames"):
            value = _float(r.get(key))
            if step is not None and value is not None:
                logged.setdefault(key, []).append((int(step), value))
    if "eval/frames" in logged:
        at = dict(logged["eval/frames"])
        return lambda step: at.get(step)
    train = sorted(logged.get("train/frames", []))
    if not train:
        return lambda step: None
    ratios = np.array([f / (s + 1) for s, f in train])
    per_step = float(np.median(ratios))
    if per_step > 0 and np.all(np.abs(ratios - per_step) <= 0.01 * per_step):
        return lambda step: int(round((step + 1) * per_step))
    steps = np.array([s for s, _ in train])
    values = np.array([f for _, f in train])

    def before(step):
        i = np.searchsorted(steps, step, side="right") - 1
        return int(values[max(i, 0)])

    return before


def network_label(value) -> str:
    """A network setting in a few characters: the preset name, or the class of ``class_path``/``init_args``."""
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    return str(value)


def _variant(model: dict, labels: dict) -> str:
    if labels:
        return "/".join(str(v) for v in labels.values())
    init = model.get("init_args") or {}
    algo = str(model.get("class_path", "?")).rsplit(".", 1)[-1]
    if algo in META_ALGORITHMS:
        parts = [f"policy={network_label(init.get('policy', '?'))}"]
        if init.get("critic") is not None:
            parts.append(f"critic={network_label(init['critic'])}")
        if algo == "MetaSAC" and init.get("context"):
            parts.append(f"context={init['context']}")
        return f"{algo}:{','.join(parts)}"
    return f"{algo}:{network_label(init.get('critic', init.get('policy', '?')))}"


def _identity(model: dict) -> str:
    import json

    init = {k: v for k, v in (model.get("init_args") or {}).items() if k != "seed"}
    return json.dumps({"class_path": model.get("class_path"), "init_args": init}, sort_keys=True, default=str)


def run_scores(run_dir: str, metric: str | None = None) -> list[RunScores]:
    """The evaluation curve(s) of one run (MAML: after and before adaptation); raises ``ValueError`` with the reason
    it cannot be used."""
    from hyperrl.experiments.sweep_file import read_run_file

    rows = read_metrics(run_dir)
    if not rows:
        if glob.glob(os.path.join(run_dir, "metrics*.csv")):
            raise ValueError("no evaluation yet (metrics.csv has no rows)")
        raise ValueError("no metrics.csv (not started, or nothing logged yet)")
    config = _config(run_dir)
    model = config.get("model") or {}
    init = model.get("init_args") or {}
    record = read_run_file(run_dir) or read_run_file(os.path.dirname(os.path.normpath(run_dir)))
    if record.get("state") == "pruned":  # stopped early: its curve ends where the scheduler stopped it
        frames = record.get("pruned_at_frames")
        raise ValueError(f"{PRUNED} at {frames:.0f} frames" if frames is not None else PRUNED)
    env = init.get("env")
    if not env:
        raise ValueError("no model.init_args.env in config.yaml")
    names = [metric] if metric else [m for m in METRICS if any(_float(r.get(m)) is not None for r in rows)][:1]
    if not names or not any(_float(r.get(names[0])) is not None for r in rows):
        raise ValueError(f"no evaluation yet ({metric or ' / '.join(METRICS)} not in metrics.csv)")
    metric = names[0]
    frames_at = _frames_at(rows)
    labels = {k: v for k, v in (record.get("labels") or {}).items() if k != "env"}
    variant = _variant(model, labels)
    seed = record.get("seed", init.get("seed"))
    name = record.get("name") or os.path.relpath(run_dir, os.path.dirname(os.path.dirname(os.path.normpath(run_dir))))
    metrics_path = os.path.join(run_dir, "metrics.csv")
    mtime = os.path.getmtime(metrics_path) if os.path.isfile(metrics_path) else 0.0
    wanted = [(metric, variant)]
    if metric in PAIRED:
        companion, mine, theirs = PAIRED[metric]
        wanted = [(metric, f"{variant} [{mine}]"), (companion, f"{variant} [{theirs}]")]
    out = []
    for name_of_metric, label in wanted:
        points = {}
        for r in rows:
            value, step = _float(r.get(name_of_metric)), _float(r.get("step"))
            if value is not None and step is not None:
                frames = frames_at(int(step))
                points[int(step) + 1 if frames is None else frames] = value
        if not points:
            continue
        frames = np.array(sorted(points), dtype=np.int64)
        out.append(RunScores(run_dir, name, str(env), label, seed, frames, np.array([points[f] for f in frames]),
                             name_of_metric, _identity(model), mtime))
    return out


def drop_duplicates(runs: list[RunScores], keep: str = "refuse") -> tuple[list[RunScores], list[tuple[str, str]]]:
    """Runs that share (environment, variant, seed): refused (``keep="refuse"``, ConfigurationError naming them),
    or all but the newest dropped (``keep="newest"``; returned as ``(folder, reason)``)."""
    groups: dict = {}
    for r in runs:
        if r.seed is not None:
            groups.setdefault((r.env, r.variant, r.seed), []).append(r)
    dropped: list[tuple[str, str]] = []
    drop_paths: set = set()
    for (env, variant, seed), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        folders = sorted({m.path for m in members})
        if len(folders) < 2:
            continue
        clash = len({m.config for m in members}) > 1
        if keep != "newest" or clash:
            what = ("they differ in their model settings: give them distinct sweep labels" if clash else
                    "a sweep run twice into one folder, or resumed beside another fit; keep one "
                    "(or pass --duplicates newest)")
            raise ConfigurationError(
                f"{len(folders)} runs of env {env}, variant {variant}, seed {seed}: {', '.join(folders)} ({what})"
            )
        newest = max(members, key=lambda m: m.mtime).path
        for folder in folders:
            if folder != newest and folder not in drop_paths:
                drop_paths.add(folder)
                dropped.append((folder, f"duplicate of {newest} (env {env}, variant {variant}, seed {seed})"))
    return [r for r in runs if r.path not in drop_paths], dropped


def check_folder(folder: str) -> None:
    """One line unless ``folder`` is a folder."""
    if not os.path.isdir(folder):
        raise ConfigurationError(f"{folder}: {'not a folder' if os.path.exists(folder) else 'no such folder'}")


def discover(folder: str, metric: str | None = None) -> tuple[list[RunScores], list[tuple[str, str]]]:
    """Usable runs under ``folder`` and ``(run folder, reason)`` for the others."""
    check_folder(folder)
    from hyperrl.experiments.sweep_file import read_run_file

    candidates, sweep_runs = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "snapshots", "report", "gradients"))
        if "config.yaml" in files or any(f.startswith("metrics") and f.endswith(".csv") for f in files):
            candidates.append(root)
        elif "sweep_run.json" in files:
            sweep_runs.append(root)
    if not candidates and not sweep_runs:
        raise ConfigurationError(f"{folder}: no runs in this folder (no metrics.csv, config.yaml or sweep_run.json)")
    runs, skipped = [], []
    for path in sweep_runs:  # a sweep run whose fit has not written its folder yet
        if not any(c.startswith(path + os.sep) for c in candidates):
            state = read_run_file(path).get("state", "unknown")
            skipped.append((path, f"no metrics.csv yet (sweep state: {state})"))
    for path in candidates:
        try:
            runs += run_scores(path, metric)
        except ValueError as exc:
            skipped.append((path, str(exc)))
    if not runs:
        reasons = "; ".join(f"{os.path.relpath(p, folder)}: {r}" for p, r in skipped[:3])
        raise ConfigurationError(f"{folder}: no run with evaluations to report ({reasons})")
    return runs, skipped


# --------------------------------------------------------------------------------------------- statistics
def interval_estimates(score_dict: dict, func, reps: int, seed: int):
    """rliable's stratified-bootstrap point estimates and 95% CIs."""
    import warnings

    from rliable import library as rly

    with warnings.catch_warnings():  # arch's notice that random_state will go (rliable passes it)
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))


def iqm(scores: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(scores))


def curves(runs: list[RunScores], reps: int, seed: int) -> list[dict]:
    """IQM learning curve per (env, variant), at the evaluation points every run of that group has."""
    from rliable import metrics

    rows = []
    groups = itertools.groupby(sorted(runs, key=lambda r: (r.env, r.variant)), key=lambda r: (r.env, r.variant))
    for (env, variant), members in groups:
        members = list(members)
        common = sorted(set.intersection(*[set(r.frames.tolist()) for r in members]))
        if not common:
            continue
        matrix = np.stack([[dict(zip(r.frames.tolist(), r.scores))[f] for f in common] for r in members])  # (R, T)
        func = lambda s: np.array([metrics.aggregate_iqm(s[:, t]) for t in range(s.shape[1])])  # noqa: E731
        point, ci = interval_estimates({variant: matrix}, func, reps, seed)
        for t, frames in enumerate(common):
            rows.append({"env": env, "variant": variant, "frames": frames, "runs": len(members),
                         "iqm": float(point[variant][t]), "ci_low": float(ci[variant][0, t]),
                         "ci_high": float(ci[variant][1, t]), "mean": float(matrix[:, t].mean())})
    return rows


def final_scores(runs: list[RunScores], last: int) -> dict:
    """``{env: {variant: (R, 1) scores}}``: each run's mean over its last ``last`` evaluations."""
    table: dict = {}
    for r in runs:
        table.setdefault(r.env, {}).setdefault(r.variant, []).append(float(np.mean(r.scores[-last:])))
    return {env: {v: np.array(s)[:, None] for v, s in variants.items()} for env, variants in table.items()}


def final_table(runs: list[RunScores], last: int, reps: int, seed: int) -> list[dict]:
    from rliable import metrics

    rows = []
    frames, used = {}, {}
    for r in runs:
        frames.setdefault((r.env, r.variant), []).append(int(r.frames[-1]))
        used.setdefault((r.env, r.variant), []).append(min(last, len(r.scores)))
    for env, variants in sorted(final_scores(runs, last).items()):
        funcs = {"iqm": lambda s: np.array([metrics.aggregate_iqm(s)]),
                 "mean": lambda s: np.array([metrics.aggregate_mean(s)])}
        estimates = {name: interval_estimates(variants, f, reps, seed) for name, f in funcs.items()}
        for variant in sorted(variants):
            point = {n: float(e[0][variant][0]) for n, e in estimates.items()}
            ci = {n: (float(e[1][variant][0, 0]), float(e[1][variant][1, 0])) for n, e in estimates.items()}
            rows.append({"env": env, "variant": variant, "runs": len(variants[variant]),
                         "frames_min": min(frames[env, variant]), "frames_max": max(frames[env, variant]),
                         "evals_min": min(used[env, variant]), "evals_max": max(used[env, variant]),
                         "iqm": point["iqm"], "iqm_low": ci["iqm"][0], "iqm_high": ci["iqm"][1],
                         "mean": point["mean"], "mean_low": ci["mean"][0], "mean_high": ci["mean"][1]})
    return rows


def improvement_table(runs: list[RunScores], last: int, reps: int, seed: int) -> list[dict]:
    """``P(X > Y)`` for every ordered pair of variants of each environment."""
    from rliable import metrics

    rows = []
    for env, variants in sorted(final_scores(runs, last).items()):
        for x, y in itertools.permutations(sorted(variants), 2):
            pairs = {f"{x},{y}": (variants[x], variants[y])}
            point, ci = interval_estimates(pairs, metrics.probability_of_improvement, reps, seed)
            key = f"{x},{y}"
            rows.append({"env": env, "x": x, "y": y, "runs_x": len(variants[x]), "runs_y": len(variants[y]),
                         "p_x_better": float(np.asarray(point[key]).ravel()[0]),
                         "ci_low": float(ci[key][0].ravel()[0]), "ci_high": float(ci[key][1].ravel()[0])})
    return rows


# --------------------------------------------------------------------------------------------- output
def _write_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        open(path, "w").close()
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_curves(rows: list[dict], out: str, metrics: dict) -> list[str]:
    """One figure per environment; ``metrics``: ``{(env, variant): metric}``. The y-label names the metric when one
    metric serves every curve of the figure; otherwise each legend entry names its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env in sorted({r["env"] for r in rows}):
        variants = sorted({r["variant"] for r in rows if r["env"] == env})
        used = {metrics.get((env, v), "?") for v in variants}
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        for i, variant in enumerate(variants):
            sel = [r for r in rows if r["env"] == env and r["variant"] == variant]
            x = [r["frames"] for r in sel]
            colour = plt.get_cmap("tab10")(i % 10)
            label = f"{variant} (n={sel[0]['runs']})"
            if len(used) > 1:
                label += f": {metrics.get((env, variant), '?')}"
            ax.plot(x, [r["iqm"] for r in sel], color=colour, label=label, marker="o" if len(x) < 20 else None, ms=3)
            ax.fill_between(x, [r["ci_low"] for r in sel], [r["ci_high"] for r in sel], color=colour, alpha=0.2)
        ax.set_title(f"{env}\nIQM over seeds, 95% stratified-bootstrap CI", fontsize=10)
        ax.set_xlabel("environment frames")
        ax.set_ylabel(used.pop() if len(used) == 1 else "evaluation return (metric in the legend)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"curves_{_safe(env)}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _ci(point: float, low: float, high: float) -> str:
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def _span(low, high) -> str:
    return str(high) if low == high else f"{low}–{high}"


def markdown_final(rows: list[dict], last: int) -> str:
    fewer = any(r.get("evals_min", last) < last for r in rows)
    lines = [f"Score of a run: mean of its last {last} evaluations"
             + (" (or of all of them when it has fewer: column evals)" if fewer else "")
             + ". IQM and mean over runs, 95% stratified-bootstrap CI.", "",
             "| env | variant | runs | frames | evals | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        frames = _span(r["frames_min"], r["frames_max"])
        evals = _span(r.get("evals_min", last), r.get("evals_max", last))
        lines.append(f"| {r['env']} | {r['variant']} | {r['runs']} | {frames} | {evals} | "
                     f"{_ci(r['iqm'], r['iqm_low'], r['iqm_high'])} | {_ci(r['mean'], r['mean_low'], r['mean_high'])} |")
    return "\n".join(lines) + "\n"


def markdown_improvement(rows: list[dict]) -> str:
    lines = ["| env | X | Y | P(X > Y) [95% CI] |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['x']} | {r['y']} | {r['p_x_better']:.2f} [{r['ci_low']:.2f}, "
                     f"{r['ci_high']:.2f}] |")
    return "\n".join(lines) + "\n"


def unfinished_note(runs: list[RunScores]) -> str:
    """A line for ``final.md`` when some runs of a sweep have not finished (stopped, failed, running, queued): their
    scores are at fewer frames (the table's frames column)."""
    from hyperrl.experiments.sweep_file import read_run_file

    states = {}
    for path in {r.path for r in runs}:
        record = read_run_file(path) or read_run_file(os.path.dirname(os.path.normpath(path)))
        if record.get("state") not in (None, "done"):
            states[record["state"]] = states.get(record["state"], 0) + 1
    if not states:
        return ""
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return (f"\n{sum(states.values())} run(s) have not finished ({counts}, by their sweep records): their scores are "
            "at fewer frames (column frames).\n")


def report(folder: str, out: str | None = None, last: int = 5, reps: int = 2000, seed: int = 0,
           metric: str | None = None, stream=None, duplicates: str = "refuse") -> dict:
    """Write the report of ``folder`` into ``out`` (default ``<folder>/report``); returns the tables."""
    import sys

    stream = stream or sys.stdout
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ConfigurationError(f"--last {last!r} is not allowed: expected a positive integer")
    if duplicates not in ("refuse", "newest"):
        raise ConfigurationError(f"--duplicates {duplicates!r} is not allowed: expected refuse or newest")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigurationError(f"--reps {reps!r} is not allowed: expected a positive integer")
    check_folder(folder)
    out = out or os.path.join(folder, "report")
    check_writable(out, "report folder", flag="--out")
    runs, skipped = discover(folder, metric)
    runs, dropped = drop_duplicates(runs, duplicates)
    skipped += dropped
    os.makedirs(out, exist_ok=True)
    for path, reason in skipped:
        print(f"skipped {os.path.relpath(path, folder)}: {reason}", file=stream)
    with open(os.path.join(out, "skipped.txt"), "w") as f:
        f.writelines(f"{os.path.relpath(p, folder)}: {r}\n" for p, r in skipped)
    curve_rows = curves(runs, reps, seed)
    final_rows = final_table(runs, last, reps, seed)
    improvement_rows = improvement_table(runs, last, reps, seed)
    _write_csv(os.path.join(out, "curves.csv"), curve_rows)
    _write_csv(os.path.join(out, "final.csv"), final_rows)
    _write_csv(os.path.join(out, "improvement.csv"), improvement_rows)
    figures = plot_curves(curve_rows, out, {(r.env, r.variant): r.metric for r in runs})
    final_md = markdown_final(final_rows, last) + unfinished_note(runs)
    pruned = sum(reason.startswith(PRUNED) for _, reason in skipped)
    if pruned:  # the survivors of a scheduler are the runs that did well early: a selected sample
        final_md += (f"\n{pruned} run(s) pruned by the sweep's ASHA scheduler are left out (skipped.txt): each "
                     "variant's scores are those of its runs that survived, which favours the seeds that did well "
                     "early. Compare the settings you pick on fresh seeds in a sweep without a scheduler.\n")
    improvement_md = markdown_improvement(improvement_rows)
    with open(os.path.join(out, "final.md"), "w") as f:
        f.write(final_md)
    with open(os.path.join(out, "improvement.md"), "w") as f:
        f.write(improvement_md)
    print(f"report of {len({r.path for r in runs})} runs ({len(skipped)} skipped) in {out}", file=stream)
    print(final_md, file=stream)
    if improvement_rows:
        print(improvement_md, file=stream)
    return {"runs": runs, "skipped": skipped, "curves": curve_rows, "final": final_rows,
            "improvement": improvement_rows, "figures": figures, "out": out}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigurationError(message)


def main(argv: list[str]) -> int:
    parser = _Parser(prog="hyperrl report", description="Learning curves and final-performance tables of a sweep.")
    parser.add_argument("folder")
    parser.add_argument("--out", default=None, help="default <folder>/report")
    parser.add_argument("--last", type=int, default=5, help="evaluations averaged for the final score of a run")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--metric", default=None,
                        help="default eval/return (MetaSAC, PEARL: eval/test_tasks_return; MAML: "
                             "eval/test_after_return and eval/test_before_return)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duplicates", default="refuse", choices=["refuse", "newest"],
                        help="two runs of one (env, variant, seed): refuse (default) or keep the newest")
    args = parser.parse_args(argv)
    report(args.folder, args.out, args.last, args.reps, args.seed, args.metric, duplicates=args.duplicates)
    return 0
