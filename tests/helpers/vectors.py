"""Where the shared test vectors live, and loading them.

The vectors sit in ``shared/vectors`` beside this repository (CI clones main
with ``shared/`` next to it). ``SV2_VECTORS_DIR`` overrides the location. A
missing vectors directory is an error, not a skip: tests must use them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def vectors_dir() -> Path:
    env = os.environ.get("SV2_VECTORS_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "vectors", REPO / "shared" / "vectors"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    raise RuntimeError(
        "shared test vectors not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set SV2_VECTORS_DIR)"
    )


def load_vector(name: str) -> Any:
    """Load ``<vectors>/<name>`` (``.json`` appended when missing)."""
    if not name.endswith(".json"):
        name += ".json"
    with open(vectors_dir() / name, encoding="utf-8") as f:
        return json.load(f)
