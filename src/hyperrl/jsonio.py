"""Result files as strict JSON: what the analysis tools and the sweep write.

Python's ``json`` writes non-finite floats as ``Infinity`` / ``NaN``, which is not JSON: ``jq``, JavaScript and most
other readers reject the file. Here they are written as ``null``; a ``null`` bound of a confidence interval means
"unbounded" (e.g. a ratio whose bootstrap denominator reached zero), and the files that can hold one say so.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["dumps", "strict", "write_json"]


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``; numpy scalars become Python numbers, tuples
    lists."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # a numpy scalar; numpy not imported
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, value: Any, *, indent: int | None = 1) -> None:
    """Write ``strict(value)`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(strict(value), f, indent=indent, allow_nan=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def dumps(value: Any) -> str:
    """``json.dumps(strict(value))``: one strict JSON line (the tools' stdout summaries)."""
    return json.dumps(strict(value), allow_nan=False)
