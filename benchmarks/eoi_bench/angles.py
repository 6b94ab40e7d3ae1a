"""Fixed against uniform rotation angles: early training of a deep EOI network (the paper's App. G).

Reviewers asked whether the random *angles* of the Givens rotations matter or
only their random *pairs*.  ``eoi_core.sparse_orthogonal(..., angle=theta)``
fixes every rotation angle; the support (and so the mask) is the same for
every angle, only the values change.  A fixed 1 degree leaves the weight close
to the identity (a near-identity deep tanh network), a fixed 80 degrees
nearly swaps columns, and uniform angles are EOI's default.  Every variant
trains the same deep tanh MLP (same seeds, data order and optimiser); the
table and plot compare the early training loss, over ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from . import report
from ._command import configure_torch, standalone
from .argtypes import degrees, positive_int
from .data import load
from .deep import Run, add_training_arguments, compare, resolve_setting

__all__ = ["plot_angles", "add_arguments", "run", "main"]


def _label(angle_degrees: float | None) -> str:
    return "uniform angles" if angle_degrees is None else f"fixed {angle_degrees:g} deg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, depth=200, quick_depth=20, epochs=3, quick_epochs=1)
    parser.add_argument("--angles", type=degrees, nargs="+", default=[1.0, 80.0, None], metavar="DEG",
                        help="rotation angles in degrees, or 'uniform' (default: 1 80 uniform)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="networks per angle, seeds SEED, SEED+1, ... (default: 3; --quick: 1)")


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{values.mean():.3g} ± {values.std(ddof=1):.2g}"


def plot_angles(step_losses: dict[str, list[list[float]]], path: Path, title: str, classes: int) -> Path:
    """Minibatch loss against SGD step: per angle the mean over seeds and a min-max band."""
    plt = report.pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 4.4))
    window = 10
    seeds = max(len(curves) for curves in step_losses.values())
    for index, (label, losses) in enumerate(step_losses.items()):
        curves = [_smooth(loss, window) for loss in losses]
        length = min(len(curve) for curve in curves)
        stacked = np.stack([curve[:length] for curve in curves])
        steps = np.arange(length) + min(window, len(losses[0])) - 1
        axis.plot(steps, stacked.mean(axis=0), color=f"C{index}", label=label)
        if len(curves) > 1:
            axis.fill_between(steps, stacked.min(axis=0), stacked.max(axis=0), color=f"C{index}", alpha=0.2)
    axis.axhline(math.log(classes), color="grey", linestyle=":", label="chance")
    axis.set(xlabel="SGD step", ylabel=f"minibatch loss (moving average of {window})", yscale="log")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    band = f"; mean and min-max band over {seeds} seeds" if seeds > 1 else ""
    axis.set_title(textwrap.fill(title + band, 100), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> dict[str, list[Run]]:
    setting = resolve_setting(args)
    seeds = args.seeds or (1 if args.quick else 3)
    out = report.prepare_output(args.out)
    data = load(args.mnist)
    configure_torch(args.threads)
    angles = {_label(a): (None if a is None else math.radians(a)) for a in dict.fromkeys(args.angles)}
    description = f"EOI, {setting.describe(data)}"
    if seeds > 1:
        description = description.replace(f"seed {setting.seed}", f"seeds {setting.seed}..{setting.seed + seeds - 1}")
    print(description, flush=True)
    by_angle: dict[str, list[Run]] = {label: [] for label in angles}
    for offset in range(seeds):
        seeded = dataclasses.replace(setting, seed=setting.seed + offset)
        for run_ in compare(data, seeded, ["eoi"], progress=args.progress, angles=angles):
            by_angle[run_.label].append(run_)

    headers = (["rotation angle", "train loss at init"]
               + [f"after epoch {e}" for e in range(1, setting.epochs + 1)]
               + ["test accuracy", "mean loss, first 50 steps"])
    rows = []
    for label, runs in by_angle.items():
        losses = [[r.history.train_loss[e] if e < len(r.history.train_loss) else math.nan for r in runs]
                  for e in range(setting.epochs + 1)]
        first = [float(np.mean(r.history.step_loss[:50])) if r.history.step_loss else math.nan for r in runs]
        rows.append([label, *[_mean_std(values) for values in losses],
                     _mean_std([r.history.final_accuracy for r in runs]), _mean_std(first)])
    table = report.markdown_table(headers, rows)
    note = f"whole-train-set loss, mean ± std over {seeds} seed(s)"
    print(note)
    print(table)

    png = plot_angles({label: [r.history.step_loss for r in runs] for label, runs in by_angle.items()},
                      out / "angles.png", description, data.classes)
    report.write_text(out / "angles.md", f"{description}\n\n{note}\n\n{table}")
    report.write_json(out / "angles.json", {"setting": setting.__dict__, "seeds": seeds, "runs": [
        {"label": r.label, "seed": setting.seed + i, **r.history.__dict__}
        for runs in by_angle.values() for i, r in enumerate(runs)]})
    print(f"wrote {png}, {out / 'angles.md'} and {out / 'angles.json'}")
    return by_angle


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/angles.py [--quick] [--out DIR] ...``"""
    return standalone("angles.py", __doc__.splitlines()[0], add_arguments, run, argv)
