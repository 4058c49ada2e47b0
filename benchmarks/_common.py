"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os


def git_revision() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes): results depend on the code measured."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def run_info(load_start: float, quick: bool) -> dict:
    """What every benchmark's JSON line records about the run besides its figures."""
    import torch

    return {
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "hyperrl_revision": git_revision(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": quick,
    }
