"""Data-parallel training on CPU (gloo): 2 processes, own environment seeds, identical parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_trainer, tiny_kwargs

from hyperrl.algos import TD3
from hyperrl.errors import ConfigurationError

SCRIPT = Path(__file__).with_name("ddp_check.py")


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "strategy"), [("sac", "ddp"), ("td3", "ddp_find_unused_parameters_true")])
def test_two_process_ddp_keeps_replicas_identical(algo, strategy, tmp_path):
    """Each rank collects with its own env seed, gradients are all-reduced, parameters stay identical."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), algo, strategy, str(out)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["params_equal"]
    assert result["first_obs"][0] != result["first_obs"][1], "ranks must not share an environment seed"
    assert result["updates"] == [21.0, 21.0] and result["global_step"] == [40.0, 40.0]


@pytest.mark.slow
def test_two_process_ddp_meta_sac_ranks_see_different_tasks(tmp_path):
    """MetaSAC under DDP: identical replicas, and each rank draws its own tasks to collect for."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "meta_sac", "ddp", str(out)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["params_equal"]
    sizes = result["first_obs"]  # per rank: transitions in each train task's buffer
    assert sum(sizes[0]) == sum(sizes[1]) and sizes[0] != sizes[1], "ranks must draw different tasks"
    assert result["updates"] == [40.0, 40.0] and result["global_step"] == [40.0, 40.0]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    """A loss that turns NaN on rank 1 only stops BOTH ranks at the same update with the non-finite-loss error
    (rank 0 must not be left waiting in the gradient all-reduce)."""
    out = tmp_path / "nan.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "sac_nan_on_rank_1", "ddp", str(out)], cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )
    assert proc.returncode != 0
    ranks = [json.loads((tmp_path / f"nan.json.rank{r}").read_text()) for r in range(2)]
    assert "on another rank" in ranks[0]["stopped"] and "loss=nan" in ranks[1]["stopped"]
    assert ranks[0]["update_count"] == ranks[1]["update_count"] == 5


def test_td3_with_plain_ddp_is_a_clear_error(tmp_path):
    """TD3's delayed actor needs find_unused_parameters: plain 'ddp' is refused up front."""
    trainer = make_trainer(tmp_path, max_steps=2, strategy="ddp", devices=1)
    with pytest.raises(ConfigurationError, match="ddp_find_unused_parameters_true"):
        trainer.fit(TD3(**tiny_kwargs()))
