"""Experiments over many runs: ``hyperrl sweep`` (a grid of ``hyperrl fit`` runs, locally or on Ray) and
``hyperrl report`` (IQM learning curves, final-performance tables, probability of improvement, via rliable)."""
