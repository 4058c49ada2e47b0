"""``hyperrl.jsonio``: strict JSON result files (non-finite numbers as ``null``, numpy scalars as numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperrl.jsonio import dumps, strict, write_json


def _reject(constant):
    raise ValueError(f"not JSON: {constant}")


def test_non_finite_numbers_become_null_and_numpy_scalars_numbers(tmp_path):
    value = {"ci": (1.5, float("inf")), "nan": np.float64("nan"), "x": np.float32(2.5), "n": np.int64(3),
             "flag": np.bool_(True), "nested": [{"m": -np.inf}], "text": "inf", "array_stays": None}
    expected = {"ci": [1.5, None], "nan": None, "x": 2.5, "n": 3, "flag": True, "nested": [{"m": None}],
                "text": "inf", "array_stays": None}
    assert strict(value) == expected
    assert json.loads(dumps(value), parse_constant=_reject) == expected
    path = tmp_path / "r.json"
    write_json(str(path), value)
    assert json.loads(path.read_text(), parse_constant=_reject) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "no temporary file left behind"


def test_a_value_json_cannot_write_leaves_no_file(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(TypeError):
        write_json(str(path), {"bad": object()})
    assert list(tmp_path.iterdir()) == []
