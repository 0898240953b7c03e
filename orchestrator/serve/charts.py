"""Training curves as SVG drawn on the server: a chart is a few polylines (and bands) in a plot
area with ticks; the template writes them as SVG elements (no script, no style attribute, so the
page's Content-Security-Policy holds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

WIDTH, HEIGHT = 560, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 40  # margins of the plot area
MAX_POINTS = 2000  # per line: longer series are thinned to every k-th point (the last kept)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Curve:
    """One line to draw: its values at steps, and optionally a band from ``low`` to ``high``."""

    label: str
    steps: Sequence[float]
    values: Sequence[float]
    low: Optional[Sequence[float]] = None
    high: Optional[Sequence[float]] = None


@dataclass(frozen=True)
class Tick:
    position: float  # pixels
    label: str


@dataclass(frozen=True)
class ChartLine:
    label: str
    color: str
    points: str  # "x,y x,y ..." of an SVG polyline
    band: str  # the points of an SVG polygon around it; "" for none


@dataclass(frozen=True)
class Chart:
    title: str
    y_label: str
    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot area's right edge
    bottom: int  # y of the plot area's bottom edge
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    lines: tuple[ChartLine, ...]

    @property
    def empty(self) -> bool:
        return not self.lines


@dataclass(frozen=True)
class Scale:
    """Values from ``low`` to ``high`` onto pixels from ``start`` to ``end`` (log10 if ``log``)."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def pixel(self, value: float) -> float:
        low, high, value = (
            (math.log10(self.low), math.log10(self.high), math.log10(value))
            if self.log
            else (self.low, self.high, value)
        )
        fraction = (value - low) / (high - low) if high > low else 0.5
        return round(self.start + fraction * (self.end - self.start), 2)


def line_chart(title: str, y_label: str, curves: Sequence[Curve], log_y: bool = False) -> Chart:
    """The chart of ``curves`` (non-finite values left out; a log axis only where every value is
    positive)."""
    drawn = [curve for curve in map(_finite, curves) if curve.steps]
    values = [value for curve in drawn for value in (*curve.values, *(curve.low or ()), *(curve.high or ()))]
    steps = [step for curve in drawn for step in curve.steps]
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    if not drawn:
        return Chart(title, y_label, WIDTH, HEIGHT, LEFT, TOP, right, bottom, (), (), ())
    log = log_y and min(values) > 0
    x_scale = Scale(min(steps), max(steps), LEFT, right)
    y_scale = Scale(min(values), max(values), bottom, TOP, log)
    lines = tuple(
        ChartLine(
            curve.label,
            PALETTE[index % len(PALETTE)],
            _points(curve, x_scale, y_scale),
            _band(curve, x_scale, y_scale),
        )
        for index, curve in enumerate(drawn)
    )
    return Chart(
        title,
        y_label,
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        right,
        bottom,
        tuple(Tick(x_scale.pixel(value), _label(value)) for value in linear_ticks(x_scale.low, x_scale.high)),
        tuple(
            Tick(y_scale.pixel(value), _label(value))
            for value in (log_ticks if log else linear_ticks)(y_scale.low, y_scale.high)
        ),
        lines,
    )


def _finite(curve: Curve) -> Curve:
    keep = [
        index
        for index, value in enumerate(curve.values)
        if math.isfinite(value)
        and math.isfinite(curve.steps[index])
        and (curve.low is None or math.isfinite(curve.low[index]))
        and (curve.high is None or math.isfinite(curve.high[index]))
    ]
    stride = max(math.ceil(len(keep) / MAX_POINTS), 1)
    keep = keep[::stride] + ([keep[-1]] if keep and (len(keep) - 1) % stride else [])
    return Curve(
        curve.label,
        [curve.steps[index] for index in keep],
        [curve.values[index] for index in keep],
        None if curve.low is None else [curve.low[index] for index in keep],
        None if curve.high is None else [curve.high[index] for index in keep],
    )


def _points(curve: Curve, x_scale: Scale, y_scale: Scale) -> str:
    return " ".join(
        f"{x_scale.pixel(step)},{y_scale.pixel(value)}" for step, value in zip(curve.steps, curve.values)
    )


def _band(curve: Curve, x_scale: Scale, y_scale: Scale) -> str:
    if curve.low is None or curve.high is None:
        return ""
    upper = [f"{x_scale.pixel(step)},{y_scale.pixel(value)}" for step, value in zip(curve.steps, curve.high)]
    lower = [f"{x_scale.pixel(step)},{y_scale.pixel(value)}" for step, value in zip(curve.steps, curve.low)]
    return " ".join(upper + lower[::-1])


def linear_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from ``low`` to ``high``."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    spacing = next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw)
    first = math.ceil(low / spacing) * spacing
    return [first + index * spacing for index in range(int((high - first) / spacing + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten from ``low`` to ``high``; where fewer than two lie between, values evenly
    spaced on the log axis."""
    powers = [
        10.0**exponent for exponent in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    ]
    if len(powers) >= 2:
        return powers
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / 4)
    return [low * ratio**index for index in range(5)]


def _label(value: float) -> str:
    return f"{value:.3g}"
