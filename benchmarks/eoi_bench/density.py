"""Density of random Givens rotations against the exact law (the paper's Fig. 4).

For each shape, ``eoi_core.givens_compose(rows, cols, t, rng=seed)`` composes
exactly ``t`` random rotations from the identity; its structural density is
measured over ``--seeds`` seeds at each ``t`` and compared with
``eoi_core.expected_density(rows, cols, t)``, the exact expectation of the
Markov chain of a row's support size (docs/promises.md, "The density law").  Because a seed
fixes the rotation stream, the ``t`` rotations of one seed are a prefix of its
``t + 1``: each seed traces one trajectory.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import report
from ._command import add_common, standalone
from .argtypes import fraction, positive_int

__all__ = ["Curve", "density_curve", "add_arguments", "run", "main"]


@dataclass
class Curve:
    """Empirical densities ``(seeds, len(rotations))`` and the law at the same ``rotations``."""

    shape: tuple[int, int]
    rotations: np.ndarray
    empirical: np.ndarray
    expected: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.empirical.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.empirical.std(axis=0, ddof=1) if len(self.empirical) > 1 else np.zeros(len(self.rotations))


def density_curve(shape: tuple[int, int], seeds: int, points: int, up_to: float) -> Curve:
    """Measure ``seeds`` trajectories at ``points`` rotation counts from 0 to where the law reaches ``up_to``."""
    import eoi_core

    rows, cols = shape
    last = eoi_core.rotations_for_density(rows, cols, up_to)
    rotations = np.unique(np.linspace(0, last, points).round().astype(np.int64))
    empirical = np.empty((seeds, len(rotations)))
    for seed in range(seeds):
        for index, t in enumerate(rotations):
            _, mask = eoi_core.givens_compose(rows, cols, int(t), rng=seed)
            empirical[seed, index] = mask.mean()
    return Curve(shape, rotations, empirical, np.asarray(eoi_core.expected_density(rows, cols, rotations)))


def _shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a shape ROWSxCOLS such as 128x128, got {text!r}")
    try:
        return positive_int(parts[0]), positive_int(parts[1])
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a shape ROWSxCOLS of positive integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", type=_shape, nargs="+", default=None, metavar="ROWSxCOLS",
                        help="(default: 128x128 256x64 512x512; --quick: 64x64)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="(default: 20; --quick: 5)")
    parser.add_argument("--points", type=positive_int, default=None,
                        help="rotation counts per curve (default: 40; --quick: 12)")
    parser.add_argument("--up-to", type=fraction, default=0.95,
                        help="last point: where the expected density reaches this (default: %(default)s)")
    add_common(parser)


def run(args: argparse.Namespace) -> list[Curve]:
    if args.up_to >= 1.0:
        raise ValueError(f"--up-to must be < 1 (the density reaches 1 only asymptotically), got {args.up_to}")
    shapes = args.shapes or ([(64, 64)] if args.quick else [(128, 128), (256, 64), (512, 512)])
    for rows, cols in shapes:
        if max(rows, cols) < 2:
            raise ValueError(f"--shapes needs at least 2 columns or rows to rotate, got {rows}x{cols}")
    seeds = args.seeds or (5 if args.quick else 20)
    points = args.points or (12 if args.quick else 40)
    out = report.prepare_output(args.out)
    curves = [density_curve(shape, seeds, points, args.up_to) for shape in shapes]

    lines = []
    for curve in curves:
        picks = np.unique(np.linspace(0, len(curve.rotations) - 1, 6).round().astype(int))
        for index in picks:
            deviation = curve.mean[index] - curve.expected[index]
            standard_error = curve.std[index] / np.sqrt(seeds)
            lines.append([f"{curve.shape[0]} x {curve.shape[1]}", int(curve.rotations[index]),
                          f"{curve.expected[index]:.4f}", f"{curve.mean[index]:.4f} ± {curve.std[index]:.4f}",
                          f"{deviation:+.4f}",
                          "-" if standard_error == 0 else f"{deviation / standard_error:+.2f}"])
    table = report.markdown_table(
        ["shape", "rotations t", "expected_density", f"empirical (mean ± std, {seeds} seeds)",
         "mean - expected", "z (in standard errors)"], lines)
    worst = max(float(np.max(np.abs(c.mean - c.expected))) for c in curves)
    summary = f"largest |empirical mean - expected| over every point of every curve: {worst:.4f}"
    print(table)
    print(summary)

    plt = report.pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for axis, curve in zip(axes[0], curves):
        axis.fill_between(curve.rotations, curve.empirical.min(axis=0), curve.empirical.max(axis=0),
                          color="C0", alpha=0.25, label=f"empirical, min-max of {seeds} seeds")
        axis.plot(curve.rotations, curve.mean, color="C0", marker="o", markersize=3, label="empirical mean")
        axis.plot(curve.rotations, curve.expected, color="C3", linestyle="--", label="expected_density (exact law)")
        axis.set(title=f"{curve.shape[0]} x {curve.shape[1]}", xlabel="rotations t", ylabel="density", ylim=(0, 1))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    png = out / "density.png"
    figure.savefig(png, dpi=120)
    plt.close(figure)
    report.write_text(out / "density.md", f"{table}\n\n{summary}")
    report.write_json(out / "density.json", [{"shape": c.shape, "rotations": c.rotations,
                                              "empirical": c.empirical, "expected": c.expected} for c in curves])
    print(f"wrote {png}, {out / 'density.md'} and {out / 'density.json'}", file=sys.stdout)
    return curves


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/density.py [--quick] [--out DIR] ...``"""
    return standalone("density.py", __doc__.splitlines()[0], add_arguments, run, argv)
