r"""Jacobian singular values of a 7-layer MLP at initialisation (the paper's Fig. 2).

For a bias-free MLP ``h_l = phi(W_l h_{l-1})`` of 7 layers of width 100, the
input-output Jacobian at an input ``x ~ N(0, I)`` is

.. math:: J = \prod_{l=7}^{1} D_l W_l, \qquad D_l = \operatorname{diag}(\phi'(W_l h_{l-1})),

computed exactly in float64.  Dynamical isometry means the singular values of
``J`` concentrate around 1: EOI keeps them there at any sparsity (for linear
networks exactly), while random sparse initialisations lose it as sparsity
grows.  The mean and the maximum singular value are reported per sparsity,
activation and scheme, as the mean over ``--seeds`` seeds with a min-max band.

Gains: 1 for linear, tanh and hard-tanh, sqrt(2) for ReLU (the usual
variance-preserving choice), the same for every scheme.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from eoi_core.isometry import approximate_isometry

from . import report
from ._command import add_common, standalone
from .argtypes import positive_int, sparsity
from .schemes import ACTIVATION_NAMES, LABELS, initialise

__all__ = ["SPECTRUM_SCHEMES", "GAINS", "jacobian", "measure", "add_arguments", "run", "main"]

SPECTRUM_SCHEMES = ("eoi", "ai", "kaiming", "kaiming-fanin", "orthogonal-masked")
ACTIVATIONS = ("linear", "tanh", "relu", "hardtanh")
GAINS = {"linear": 1.0, "tanh": 1.0, "hardtanh": 1.0, "relu": math.sqrt(2.0)}
FLOOR = 1e-7  # lower limit of the plots' log axes


def _phi(activation: str, pre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(phi(pre), phi'(pre))``."""
    if activation == "linear":
        return pre, np.ones_like(pre)
    if activation == "tanh":
        value = np.tanh(pre)
        return value, 1.0 - value**2
    if activation == "relu":
        return np.maximum(pre, 0.0), (pre > 0).astype(pre.dtype)
    if activation == "hardtanh":
        return np.clip(pre, -1.0, 1.0), (np.abs(pre) < 1.0).astype(pre.dtype)
    raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got {activation!r}")


def jacobian(weights: Sequence[np.ndarray], activation: str, x: np.ndarray) -> np.ndarray:
    """The input-output Jacobian ``d h_L / d x`` of ``h_l = phi(W_l h_{l-1})`` at ``x``."""
    hidden = x
    product = np.eye(len(x))
    for weight in weights:
        hidden, slope = _phi(activation, weight @ hidden)
        product = (slope[:, None] * weight) @ product
    return product


@dataclass
class Spectrum:
    """``stats[scheme][activation]``: array ``(seeds, len(sparsities), 2)`` of (mean, max) singular value."""

    sparsities: tuple[float, ...]
    seeds: int
    stats: dict[str, dict[str, np.ndarray]]


def measure(sparsities: Sequence[float], seeds: int, *, width: int = 100, depth: int = 7,
            schemes: Sequence[str] = SPECTRUM_SCHEMES, ai_steps: int = 500) -> Spectrum:
    """Singular-value statistics of ``J`` for every scheme, activation, sparsity and seed.

    The weights are drawn once per (seed, sparsity, scheme) at unit gain and scaled per activation.
    """
    stats = {scheme: {act: np.empty((seeds, len(sparsities), 2)) for act in ACTIVATIONS} for scheme in schemes}
    for seed in range(seeds):
        x = np.random.default_rng([seed, 0]).standard_normal(width)
        for s_index, level in enumerate(sparsities):
            density = 1.0 - level
            for k_index, scheme in enumerate(schemes):
                rngs = np.random.default_rng([seed, s_index + 1, k_index]).spawn(depth)
                if scheme == "ai":
                    weights = [approximate_isometry((width, width), density, rng=rng, dtype=np.float64,
                                                    steps=ai_steps)[0] for rng in rngs]
                else:
                    weights = [initialise(scheme, (width, width), density, 1.0, rng)[0] for rng in rngs]
                for activation in ACTIVATIONS:
                    gain = GAINS[activation]
                    values = np.linalg.svd(jacobian([gain * w for w in weights], activation, x), compute_uv=False)
                    stats[scheme][activation][seed, s_index] = values.mean(), values.max()
    return Spectrum(tuple(sparsities), seeds, stats)


def spectrum_table(spectrum: Spectrum, columns: Sequence[float]) -> str:
    """Markdown: mean / max singular value (averaged over seeds) at the chosen sparsities."""
    picks = [i for i, level in enumerate(spectrum.sparsities) if any(math.isclose(level, c) for c in columns)]
    rows = []
    for activation in ACTIVATIONS:
        for scheme, by_activation in spectrum.stats.items():
            average = by_activation[activation].mean(axis=0)
            rows.append([activation, LABELS[scheme]]
                        + [f"{report.fmt(float(average[i, 0]))} / {report.fmt(float(average[i, 1]))}" for i in picks])
    headers = ["activation", "scheme"] + [f"sparsity {spectrum.sparsities[i]:g}" for i in picks]
    return report.markdown_table(headers, rows, align="ll" + "r" * len(picks))


def plot_spectrum(spectrum: Spectrum, path) -> None:
    plt = report.pyplot()
    figure, axes = plt.subplots(2, len(ACTIVATIONS), figsize=(4.2 * len(ACTIVATIONS), 7), sharex=True)
    x = np.asarray(spectrum.sparsities)
    for column, activation in enumerate(ACTIVATIONS):
        for row, statistic in enumerate(("mean", "maximum")):
            axis = axes[row, column]
            for index, (scheme, by_activation) in enumerate(spectrum.stats.items()):
                values = by_activation[activation][:, :, row]
                axis.plot(x, values.mean(axis=0), marker="o", markersize=3, color=f"C{index}", label=LABELS[scheme])
                axis.fill_between(x, values.min(axis=0), values.max(axis=0), color=f"C{index}", alpha=0.2)
            axis.axhline(1.0, color="grey", linestyle=":")
            axis.set_yscale("log")
            low, high = axis.get_ylim()
            axis.set_ylim(max(low, FLOOR), high)  # a collapsed seed (AI, ReLU) would squash the rest
            axis.grid(alpha=0.3, which="both")
            axis.set_title(f"{activation}: {statistic} singular value", fontsize=10)
            if row == 1:
                axis.set_xlabel("sparsity")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(f"Input-output Jacobian of a 7-layer MLP (width 100) at init: mean over "
                    f"{spectrum.seeds} seeds, band = min-max", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sparsities", type=sparsity, nargs="+", default=None,
                        help="(default: 0 0.1 ... 0.9 0.95 0.97; --quick: 0 0.5 0.9)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="(default: 5; --quick: 2)")
    parser.add_argument("--ai-steps", type=positive_int, default=None,
                        help="gradient steps of approximate isometry (default: 500; --quick: 50)")
    parser.add_argument("--schemes", nargs="+", choices=SPECTRUM_SCHEMES, default=list(SPECTRUM_SCHEMES),
                        help="(default: all)")
    add_common(parser)


def run(args: argparse.Namespace) -> Spectrum:
    quick = args.quick
    levels = args.sparsities or ([0.0, 0.5, 0.9] if quick else [round(0.1 * i, 1) for i in range(10)] + [0.95, 0.97])
    levels = sorted(set(levels))
    seeds = args.seeds or (2 if quick else 5)
    ai_steps = args.ai_steps or (50 if quick else 500)
    out = report.prepare_output(args.out)
    spectrum = measure(levels, seeds, schemes=list(dict.fromkeys(args.schemes)), ai_steps=ai_steps)
    columns = [level for level in (0.0, 0.5, 0.9, 0.97) if level in levels] or levels[-3:]
    table = spectrum_table(spectrum, columns)
    note = (f"cells: mean / maximum singular value of the Jacobian, averaged over {seeds} seeds "
            f"(gain 1; ReLU sqrt(2); AI: {ai_steps} gradient steps)")
    print(note)
    print(table)
    png = out / "spectrum.png"
    plot_spectrum(spectrum, png)
    report.write_text(out / "spectrum.md", f"{note}\n\n{table}")
    report.write_json(out / "spectrum.json", {"sparsities": spectrum.sparsities, "seeds": seeds,
                                              "stats": spectrum.stats})
    print(f"wrote {png}, {out / 'spectrum.md'} and {out / 'spectrum.json'}")
    return spectrum


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/spectrum.py [--quick] [--out DIR] ...``"""
    return standalone("spectrum.py", __doc__.splitlines()[0], add_arguments, run, argv)
