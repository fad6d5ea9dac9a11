"""What every benchmark shares: its fixtures (prompts, the preference direction) and its report helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Open-ended prompts: their answers run to max_tokens, so a load measures decoding (`bench serve`, `peers`).
LOAD_PROMPTS = (
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a steam engine works.",
    "Describe a day in the life of a lighthouse keeper.",
    "Give a detailed history of the bicycle.",
)
# Short questions every strategy answers side by side (`bench search`).
SEARCH_PROMPTS = (
    "Give me one tip for learning to cook.",
    "How do plants grow?",
    "What is the capital of Italy?",
    "Explain what a computer is.",
)
# The preference direction of every bench request that names one.
DIRECTION = {"relevance": 1.0, "verbosity": -0.5}


def write(report: dict[str, Any], out: Path) -> Path:
    """The report as indented JSON at `out` (its directory created); `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """numerator / denominator rounded; None when either is missing (or the denominator is 0)."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def target(value: float | None, spec: dict[str, float]) -> dict[str, Any]:
    """A target entry: the measured value, the bound and whether it is met (None measured: not met)."""
    out: dict[str, Any] = {"measured": value, **{f"target_{k}": v for k, v in spec.items()}}
    out["met"] = (
        value is not None
        and ("max" not in spec or value <= spec["max"])
        and ("min" not in spec or value >= spec["min"])
    )
    return out
