"""Experiments over many runs: ``hyperrl sweep`` (a grid of ``hyperrl fit`` runs as a Ray Tune experiment, on this
machine or a Ray cluster) and ``hyperrl report`` (IQM learning curves, final-performance tables, probability of
improvement, via rliable)."""
