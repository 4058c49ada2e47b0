"""Analyses of trained runs: light weight snapshots taken during a fit, and the critic action-gradient study.

``AnalysisSnapshots`` is the Lightning callback (``--trainer.callbacks+=hyperrl.analysis.AnalysisSnapshots``);
``hyperrl.analysis.gradients`` is ``hyperrl analyze gradients``. Imports are lazy so that naming the callback
does not import the rollout code.
"""

from hyperrl.analysis.snapshots import AnalysisSnapshots, find_snapshots, load_snapshot, read_snapshot

__all__ = ["AnalysisSnapshots", "find_snapshots", "load_snapshot", "read_snapshot"]
