"""Start-up cost of the ``hyperrl`` command: wall time and peak memory of ``hyperrl --help`` (answered without
importing torch or Lightning; target <= 1.5 s) and ``hyperrl fit --help`` (builds the full parser: torch, Lightning and
the algorithm modules), each in a fresh process, medians over repeats.

    python benchmarks/cli_startup.py [--repeats 5] [--quick]

Prints one line per command, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "help": ["--help"],
    "fit_help": ["fit", "--help"],
}


def measure(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of ``python -m hyperrl.cli ARGS`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hyperrl.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"hyperrl {' '.join(args)} exited with {proc.returncode}: {proc.stderr.read()[-500:]!r}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    opts = parser.parse_args()
    repeats = 3 if opts.quick else opts.repeats
    load_start = os.getloadavg()[0]
    results = {}
    for name, args in COMMANDS.items():
        measure(args)  # warm the file cache: later runs measure imports, not the disk
        runs = [measure(args) for _ in range(repeats)]
        seconds = [s for s, _ in runs]
        results[name] = {
            "median_s": round(statistics.median(seconds), 3),
            "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3),
            "peak_rss_mib": round(statistics.median(m for _, m in runs), 1),
        }
        print(f"hyperrl {' '.join(args):<12} median {results[name]['median_s']:.2f} s "
              f"(min {results[name]['min_s']:.2f}, max {results[name]['max_s']:.2f}), "
              f"{results[name]['peak_rss_mib']:.0f} MiB", flush=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import git_revision

    print(json.dumps({
        "benchmark": "cli_startup",
        "repeats": repeats,
        **results,
        "help_target_s": 1.5,
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "hyperrl_revision": git_revision(),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
