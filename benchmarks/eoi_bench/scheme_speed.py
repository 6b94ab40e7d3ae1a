"""Time per layer of the sparse orthogonal schemes: EOI against SAO and approximate isometry (App. B).

Columns, each building a float32 ``n x n`` weight and its mask from :mod:`eoi_core.schemes` in one
process, so the ratios are side by side:

``EOI``  ``eoi_core.schemes.eoi`` (the Numba engine) at the density
``SAO``  ``eoi_core.schemes.sao`` at the feasible SAO density nearest to it (shown in the table)
``AI``   ``eoi_core.schemes.ai`` with ``--ai-steps`` masked gradient steps (the paper uses 1000;
         the cost is linear in the steps, two ``n x n`` matrix products each), only up to ``--ai-max``

Each cell is the median of ``--repeats`` runs, stopping early once a cell's total would pass
``--cell-seconds`` (its run count is then shown).  NumPy's BLAS (the QR of SAO's blocks, AI's
products) runs on ``--threads`` threads, like the single-threaded engine by default.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import numpy as np

from eoi_core import schemes
from eoi_core.sao import nearest_density

from . import report
from ._command import add_common, standalone
from .argtypes import positive_float, positive_int
from .speed import Cell, time_cell

__all__ = ["SCHEMES", "measure", "add_arguments", "run", "main"]

SCHEMES = ("EOI", "SAO", "AI")
FULL_SIZES = (128, 256, 512, 1024, 2048, 4096)
QUICK_SIZES = (64, 128)


def _density(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a density must lie in (0, 1], got {text!r}")
    return value


def _builder(scheme: str, n: int, density: float, ai_steps: int) -> Callable[[int], object]:
    shape = (n, n)
    if scheme == "EOI":
        return lambda seed: schemes.eoi(shape, density, rng=seed)
    if scheme == "SAO":
        return lambda seed: schemes.sao(shape, density, rng=seed)
    return lambda seed: schemes.ai(shape, density, rng=seed, steps=ai_steps)


def measure(sizes: Sequence[int], densities: Sequence[float], *, ai_steps: int, ai_max: int, repeats: int,
            cell_seconds: float, log: Callable[[str], None] = lambda line: None) -> list[dict]:
    """One row per (size, density): the SAO density used and a :class:`Cell` per scheme."""
    rows = []
    for density in densities:
        for n in sizes:
            sao_density = nearest_density((n, n), density)
            cells: dict[str, Cell] = {}
            for scheme in SCHEMES:
                if scheme == "AI" and n > ai_max:
                    continue
                used = sao_density if scheme == "SAO" else density
                cells[scheme] = time_cell(_builder(scheme, n, used, ai_steps), repeats, cell_seconds)
            rows.append({"n": n, "density": density, "sao_density": sao_density, "cells": cells})
            log(f"n={n} density={density:g}: " + ", ".join(f"{k} {v.seconds * 1e3:.3g} ms"
                                                          for k, v in cells.items()))
    return rows


def _ms(cell: Cell | None) -> str:
    return "-" if cell is None else f"{cell.seconds * 1e3:.3g}" + (f" (n={cell.runs})" if cell.runs < 3 else "")


def _ratio(top: Cell | None, bottom: Cell | None) -> str:
    return "-" if top is None or bottom is None else f"{top.seconds / bottom.seconds:.3g}x"


def table(rows: Sequence[dict], ai_steps: int) -> str:
    headers = ["n x n", "density", "SAO density", "EOI ms", "SAO ms", f"AI ms ({ai_steps} steps)",
               "SAO / EOI", "AI / EOI"]
    body = [[f"{row['n']} x {row['n']}", f"{row['density']:g}", f"{row['sao_density']:.4g}",
             _ms(row["cells"].get("EOI")), _ms(row["cells"].get("SAO")), _ms(row["cells"].get("AI")),
             _ratio(row["cells"].get("SAO"), row["cells"].get("EOI")),
             _ratio(row["cells"].get("AI"), row["cells"].get("EOI"))] for row in rows]
    return report.markdown_table(headers, body)


def plot(rows: Sequence[dict], densities: Sequence[float], ai_steps: int, out) -> object:
    plt = report.pyplot()
    figure, axes = plt.subplots(1, len(densities), figsize=(4.6 * len(densities), 3.8), squeeze=False)
    colours = {"EOI": "tab:blue", "SAO": "tab:green", "AI": "tab:orange"}
    for axis, density in zip(axes[0], densities):
        chosen = [row for row in rows if row["density"] == density]
        for scheme in SCHEMES:
            points = [(row["n"], row["cells"][scheme].seconds) for row in chosen if scheme in row["cells"]]
            if points:
                label = f"AI ({ai_steps} steps)" if scheme == "AI" else scheme
                axis.loglog(*zip(*points), marker="o", color=colours[scheme], label=label)
        axis.set_xlabel("n (weight n x n)")
        axis.set_title(f"density {density:g}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds per layer (median)")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    path = out / "scheme_speed.png"
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--sizes", nargs="+", type=positive_int, default=None,
                        help=f"n of the n x n weights (default: {' '.join(map(str, FULL_SIZES))}; "
                             f"--quick: {' '.join(map(str, QUICK_SIZES))})")
    parser.add_argument("--densities", nargs="+", type=_density, default=[0.1, 0.02],
                        help="densities (default: %(default)s)")
    parser.add_argument("--ai-steps", type=positive_int, default=None,
                        help="gradient steps of AI (default: 100; --quick: 10)")
    parser.add_argument("--ai-max", type=positive_int, default=1024,
                        help="largest n timed for AI (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="runs per cell (default: 5; --quick: 2)")
    parser.add_argument("--cell-seconds", type=positive_float, default=20.0,
                        help="stop repeating a cell once its total would pass this (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=1, help="BLAS threads (default: %(default)s)")


def run(args: argparse.Namespace) -> list[dict]:
    from .speed import _blas_threads

    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    ai_steps = args.ai_steps or (10 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 5)
    densities = tuple(dict.fromkeys(args.densities))
    out = report.prepare_output(args.out)
    schemes.eoi((16, 16), 0.5, rng=0)  # compile the engine outside the timings
    with _blas_threads(args.threads):
        rows = measure(sizes, densities, ai_steps=ai_steps, ai_max=args.ai_max, repeats=repeats,
                       cell_seconds=args.cell_seconds, log=lambda line: print(line, flush=True))
    text = table(rows, ai_steps)
    print(text)
    report.write_text(out / "scheme_speed.md", text)
    report.write_json(out / "scheme_speed.json", [
        {**{k: v for k, v in row.items() if k != "cells"},
         "seconds": {k: c.seconds for k, c in row["cells"].items()},
         "runs": {k: c.runs for k, c in row["cells"].items()}} for row in rows])
    print(f"wrote {plot(rows, densities, ai_steps, out)}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return standalone("scheme_speed.py", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
