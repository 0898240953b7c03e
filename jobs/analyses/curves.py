"""Training curves of one run: loss and accuracy over steps, train and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from jobs.analyses.common import write_figure

PANELS = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_accuracy", "val_accuracy")))


def plot_training_curves(
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str, out_file: Path
) -> Path:
    """Write a PNG with a loss panel and an accuracy panel; returns its path."""

    def draw(axes) -> None:
        for axis, (quantity, names) in zip(axes, PANELS):
            for name in names:
                if name in series:
                    steps, values = series[name]
                    axis.plot(
                        steps,
                        values,
                        label=name.replace("_", " "),
                        linewidth=1.0 if name.startswith("train") else 1.8,
                    )
            axis.set_xlabel("training step (updates)")
            axis.set_ylabel(
                "cross-entropy loss (nats)" if quantity == "loss" else "accuracy (fraction correct)"
            )
            if quantity == "loss":
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
            axis.legend()

    return write_figure(out_file, draw, panels=len(PANELS), width=5.5, height=4.0, title=title)
