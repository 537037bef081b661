"""Figures: a value measured over several runs, reported as median and spread (min-max)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; values need not be sorted."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    """One measured quantity: its value in each run of the bench."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.runs.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def as_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "runs": self.runs}


def fmt(value: float, unit: str = "") -> str:
    """A compact human number: 3 significant figures, thousands separated; ratios as 0.95x."""
    if value != value:  # NaN
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def fmt_figure(figure: Figure) -> str:
    """`median (min-max)` over the runs."""
    if not figure.runs:
        return "not measured"
    if len(figure.runs) == 1:
        return fmt(figure.median, figure.unit)
    unit = "x" if figure.unit == "x" else ""
    return f"{fmt(figure.median, figure.unit)} ({fmt(figure.low, unit)}–{fmt(figure.high, unit)})"
