"""Speed of EOI: the core's engines against the published algorithm, dense QR and the write floor (App. B).

Columns, all producing a float32 ``(out, in)`` weight in one process so the ratios are side by side:

``numba``      ``eoi_core.sparse_orthogonal(..., engine="numba")`` (weight + mask)
``reference``  the same with ``engine="reference"`` (plain NumPy; only up to ``--reference-max``)
``published``  the paper's algorithm re-implemented (:mod:`eoi_bench.published`; float64, a whole-matrix
               ``count_nonzero`` after every rotation; only up to ``--published-max``)
``dense QR``   ``numpy.linalg.qr`` of a float32 Gaussian matrix (with the sign fix): a dense orthogonal
               init, which does not depend on the density, so it is timed once per shape.  BLAS runs on
               ``--blas-threads`` threads (default 1, like the numba engine, which is single-threaded;
               on a busy machine a multi-threaded OpenBLAS can be 10x slower, not faster)
``floor``      allocate and write a dense float32 weight and a bool mask on one thread: the physical limit
``floor N``    the same written by N threads (row bands), N the engine's thread count: the limit for
               an engine that uses N cores, shown beside it so the comparison stays honest

The numba engine runs on ``--threads`` threads (default: :func:`eoi_core.get_num_threads`, which
follows ``EOI_NUM_THREADS`` and the CPUs this process may use); its results are bit-identical for
every thread count.

Each cell is the median of ``--repeats`` runs, except that a cell stops repeating once its total
would pass ``--cell-seconds`` (its run count ``n`` is then shown).  The floors are timed in the same
rounds as the numba engine (one run of each per round, :func:`time_interleaved`), so a change of the
machine's load touches their ratio as little as it can.  Peak memory is measured for the
numba engine in a child process (:mod:`eoi_bench.memory`) and reported relative to the output
(weight + mask), for outputs of at least 4 MiB (below that the allocator's page reuse hides it).

The floor writes every byte once into freshly allocated memory; fresh pages already arrive zeroed
from the kernel, so at low density an engine that writes only the non-zeros can beat it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import report
from ._command import add_common, standalone
from .argtypes import fraction, nonnegative_int, positive_float, positive_int
from .memory import peak_memory
from .published import published_eoi

__all__ = ["Cell", "Row", "measure_rows", "speed_table", "check_targets", "add_arguments", "run", "main"]

COLUMNS = ("numba", "reference", "published", "dense QR", "floor", "floor N")
ASPECTS = {"square": lambda n: (n, n), "tall": lambda n: (n, n // 4), "wide": lambda n: (n // 4, n)}
ASPECT_TITLES = {"square": "square n x n", "tall": "tall n x n/4 (out >= in)", "wide": "wide n/4 x n (out < in)"}
TARGET_SHAPE = (14336, 4096)
LARGE_SHAPE = (28672, 8192)
MEMORY_MIN_BYTES = 4 << 20


@dataclass(frozen=True)
class Cell:
    """Median seconds over ``runs`` runs."""

    seconds: float
    runs: int


@dataclass
class Row:
    shape: tuple[int, int]
    density: float
    cells: dict[str, Cell] = field(default_factory=dict)
    peak_ratio: float | None = None

    @property
    def size(self) -> int:
        return max(self.shape)


def time_cell(function: Callable[[int], object], repeats: int, cell_seconds: float) -> Cell:
    """Median wall time of ``function(seed)`` over up to ``repeats`` runs (at least one)."""
    return time_interleaved({"cell": function}, repeats, cell_seconds)["cell"]


def time_interleaved(functions: dict[str, Callable[[int], object]], repeats: int,
                     cell_seconds: float) -> dict[str, Cell]:
    """:func:`time_cell` for several functions in turn, one run of each per round.

    The floors and the engine they bound are timed in the same rounds, so a
    change of the machine's load during the row touches their ratio as
    little as it can.  Rounds stop once the slowest function's total would
    pass ``cell_seconds``.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    while len(times[next(iter(functions))]) < repeats:
        for name, function in functions.items():
            gc.collect()
            start = time.perf_counter()
            result = function(len(times[name]))
            times[name].append(time.perf_counter() - start)
            del result
        if max(sum(values) + values[-1] for values in times.values()) > cell_seconds:
            break
    return {name: Cell(float(np.median(values)), len(values)) for name, values in times.items()}


def _eoi(shape: tuple[int, int], density: float, engine: str) -> Callable[[int], object]:
    import eoi_core

    return lambda seed: eoi_core.sparse_orthogonal(shape, density, rng=seed, engine=engine)


def _published(shape: tuple[int, int], density: float) -> Callable[[int], object]:
    return lambda seed: published_eoi(shape[0], shape[1], density, np.random.default_rng(seed))


def _dense_qr(shape: tuple[int, int]) -> Callable[[int], object]:
    rows, cols = shape

    def qr(seed: int) -> np.ndarray:
        gaussian = np.random.default_rng(seed).standard_normal((max(shape), min(shape)), dtype=np.float32)
        q, r = np.linalg.qr(gaussian)
        q *= np.sign(np.diag(r))
        return q if rows >= cols else q.T

    return qr


def _floor(shape: tuple[int, int]) -> Callable[[int], object]:
    def write(seed: int) -> tuple[np.ndarray, np.ndarray]:
        weight = np.empty(shape, dtype=np.float32)
        weight.fill(0.0)
        mask = np.empty(shape, dtype=bool)
        mask.fill(False)
        return weight, mask

    return write


def _floor_threads(shape: tuple[int, int], threads: int) -> Callable[[int], object]:
    """The floor with ``threads`` threads each writing a band of rows (NumPy's fill releases the GIL)."""
    from eoi_core.threads import run_all

    def write(seed: int) -> tuple[np.ndarray, np.ndarray]:
        weight = np.empty(shape, dtype=np.float32)
        mask = np.empty(shape, dtype=bool)
        edges = np.linspace(0, shape[0], threads + 1).astype(int)

        def band(start: int, stop: int) -> None:
            weight[start:stop].fill(0.0)
            mask[start:stop].fill(False)

        run_all([lambda a=a, b=b: band(a, b) for a, b in zip(edges[:-1], edges[1:])], threads)
        return weight, mask

    return write


@contextlib.contextmanager
def _blas_threads(threads: int):
    """Limit BLAS to ``threads`` threads (0: leave it alone) with ``threadpoolctl`` when available."""
    if threads == 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings threadpoolctl; without it BLAS keeps its default
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    densities: tuple[float, ...]
    aspects: tuple[str, ...]
    repeats: int
    cell_seconds: float
    reference_max: int
    published_max: int
    qr_max: int
    target: bool
    memory: bool
    blas_threads: int
    threads: int


def measure_rows(plan: Plan, log: Callable[[str], None] = lambda line: None) -> list[Row]:
    """Time every column for every (shape, density) of ``plan``."""
    import eoi_core

    eoi_core.set_num_threads(plan.threads)
    eoi_core.sparse_orthogonal((64, 64), 0.5, rng=0, engine="numba")  # compile / load the cache first
    shapes = [ASPECTS[aspect](size) for aspect in plan.aspects for size in plan.sizes]
    configs = [(shape, density) for shape in shapes for density in plan.densities]
    if plan.target:
        configs += [(TARGET_SHAPE, 0.1), (LARGE_SHAPE, 0.1)]
    rows: list[Row] = []
    per_shape: dict[tuple[int, int], dict[str, Cell]] = {}
    for shape, density in configs:
        row = Row(shape, density)
        if density < eoi_core.min_density(shape):
            log(f"{shape[0]}x{shape[1]} d={density}: below the orthogonal floor, skipped")
            continue
        if shape not in per_shape:  # density-independent and slow: once per shape
            per_shape[shape] = {}
            if max(shape) <= plan.qr_max:
                with _blas_threads(plan.blas_threads):
                    per_shape[shape]["dense QR"] = time_cell(_dense_qr(shape), plan.repeats, plan.cell_seconds)
        row.cells.update(per_shape[shape])
        # The engine and the floors it is compared with, in the same rounds.
        row.cells.update(time_interleaved(
            {"numba": _eoi(shape, density, "numba"), "floor": _floor(shape),
             "floor N": _floor_threads(shape, plan.threads)}, plan.repeats, plan.cell_seconds))
        if max(shape) <= plan.reference_max:
            row.cells["reference"] = time_cell(_eoi(shape, density, "reference"), plan.repeats, plan.cell_seconds)
        if max(shape) <= plan.published_max:
            row.cells["published"] = time_cell(_published(shape, density), plan.repeats, plan.cell_seconds)
        log(f"{shape[0]}x{shape[1]} d={density}: " + ", ".join(
            f"{name} {cell.seconds * 1e3:.3g} ms" for name, cell in row.cells.items()))
        rows.append(row)
    if plan.memory:
        measured = [row for row in rows if row.shape[0] * row.shape[1] * 5 >= MEMORY_MIN_BYTES]
        peaks = peak_memory([("numba", row.shape, row.density) for row in measured])
        for row, peak in zip(measured, peaks):
            if peak is not None:
                row.peak_ratio = peak["peak_bytes"] / peak["output_bytes"]
    return rows


def _ms(cell: Cell | None, repeats: int) -> str:
    if cell is None:
        return "-"
    text = report.fmt(cell.seconds * 1e3)
    return text if cell.runs >= repeats else f"{text} (n={cell.runs})"


def _ratio(numerator: Cell | None, denominator: Cell | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    ratio = numerator.seconds / denominator.seconds
    return f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def speed_table(rows: Sequence[Row], repeats: int) -> str:
    """Markdown: times in ms per column, then the ratios and the numba engine's peak memory."""
    headers = ["shape (out x in)", "density", "numba [ms]", "reference [ms]", "published [ms]",
               "dense QR [ms]", "floor [ms]", "floor N [ms]", "numba / floor", "numba / floor N",
               "published / numba", "QR / numba", "numba peak mem / output"]
    lines = []
    for row in rows:
        cells = row.cells
        lines.append([f"{row.shape[0]} x {row.shape[1]}", f"{row.density:g}"]
                     + [_ms(cells.get(name), repeats) for name in COLUMNS]
                     + [_ratio(cells.get("numba"), cells.get("floor")),
                        _ratio(cells.get("numba"), cells.get("floor N")),
                        _ratio(cells.get("published"), cells.get("numba")),
                        _ratio(cells.get("dense QR"), cells.get("numba")),
                        "-" if row.peak_ratio is None else f"{row.peak_ratio:.2f}x"])
    return report.markdown_table(headers, lines, align="lr" + "r" * 11)


def _find(rows: Sequence[Row], shape: tuple[int, int], density: float) -> Row | None:
    return next((row for row in rows if row.shape == shape and math.isclose(row.density, density)), None)


def check_targets(rows: Sequence[Row]) -> list[str]:
    """The issue's targets, each as ``met`` / ``missed`` with the measured number (where measured)."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    import eoi_core

    threads = eoi_core.get_num_threads()

    for shape, goal in (((4096, 4096), 2), (LARGE_SHAPE, 3)):
        row = _find(rows, shape, 0.1)
        if row and "floor" in row.cells:
            ratio = row.cells["numba"].seconds / row.cells["floor"].seconds
            threaded = row.cells["numba"].seconds / row.cells["floor N"].seconds
            lines.append(f"{shape[0]}x{shape[1]} d=0.1 within {goal}x of the one-thread floor: {ratio:.2f}x "
                         f"-> {verdict(ratio <= goal)} ({threaded:.2f}x the {threads}-thread floor)")
    row = _find(rows, (2048, 2048), 0.1)
    if row and "published" in row.cells:
        ratio = row.cells["published"].seconds / row.cells["numba"].seconds
        lines.append(f">= 1000x faster than the published algorithm at 2048x2048 d=0.1: {ratio:.0f}x "
                     f"-> {verdict(ratio >= 1000)}")
    qr_rows = [r for r in rows if r.shape == (4096, 4096) and r.density <= 0.25 and "dense QR" in r.cells]
    if qr_rows:
        worst = min(r.cells["dense QR"].seconds / r.cells["numba"].seconds for r in qr_rows)
        lines.append(f">= 20x faster than dense QR at 4096x4096 for every density <= 0.25: worst {worst:.1f}x "
                     f"-> {verdict(worst >= 20)}")
    row = _find(rows, TARGET_SHAPE, 0.1)
    if row:
        seconds = row.cells["numba"].seconds
        lines.append(f"{TARGET_SHAPE[0]}x{TARGET_SHAPE[1]} d=0.1 in <= 1 s: {seconds:.3f} s -> {verdict(seconds <= 1)}")
    peaks = [r.peak_ratio for r in rows if r.peak_ratio is not None]
    if peaks:
        lines.append(f"peak memory <= 2x the output (weight + mask), every row: worst {max(peaks):.2f}x "
                     f"-> {verdict(max(peaks) <= 2)}")
    return lines


def _ticks(axis, values: Sequence[float]) -> None:
    """Label a log axis at exactly ``values`` (the default 2x10^3-style labels overlap)."""
    from matplotlib.ticker import NullFormatter

    axis.set_xticks(list(values), [f"{value:g}" for value in values])
    axis.xaxis.set_minor_formatter(NullFormatter())


def _draw_columns(axis, chosen, x_of, styles) -> None:
    """One log-log line per timed column over ``chosen`` rows, against ``x_of(row)``."""
    for name in COLUMNS:
        points = [(x_of(row), row.cells[name].seconds) for row in chosen if name in row.cells]
        if points:
            axis.loglog(*zip(*points), marker="o", color=styles[name], label=name,
                        linestyle=":" if name.startswith("floor") else "-")


def plot_speed(rows: Sequence[Row], out, density: float = 0.1) -> list:
    """``speed_size.png`` (time against size) and ``speed_density.png`` (time against density), log-log.

    The size plot is drawn at the measured density closest to ``density``.
    """
    plt = report.pyplot()
    density = min({row.density for row in rows}, key=lambda measured: abs(measured - density))
    styles = {"numba": "C0", "reference": "C1", "published": "C3", "dense QR": "C2", "floor": "k",
              "floor N": "0.5"}
    aspects = [(name, rule) for name, rule in ASPECTS.items()
               if any(row.shape == rule(row.size) and row.shape not in (TARGET_SHAPE, LARGE_SHAPE) for row in rows)]
    paths = []
    figure, axes = plt.subplots(1, len(aspects), figsize=(5.2 * len(aspects), 4.2), squeeze=False)
    for axis, (aspect, rule) in zip(axes[0], aspects):
        chosen = [row for row in rows if row.shape == rule(row.size) and math.isclose(row.density, density)]
        _draw_columns(axis, chosen, lambda row: row.size, styles)
        axis.set(title=f"{ASPECT_TITLES[aspect]}, density {density:g}",
                 xlabel="size n (largest dimension)", ylabel="seconds (median)")
        _ticks(axis, sorted({row.size for row in chosen}))
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.tight_layout()
    paths.append(out / "speed_size.png")
    figure.savefig(paths[-1], dpi=120)
    plt.close(figure)

    squares = sorted({row.size for row in rows if row.shape == (row.size, row.size)})
    if not squares:  # the time-against-density panels are drawn for square shapes only
        return paths
    with_published = [size for size in squares
                      if any("published" in row.cells for row in rows if row.shape == (size, size))]
    panels = sorted({with_published[-1] if with_published else squares[-1], squares[-1]})
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, size in zip(axes[0], panels):
        chosen = sorted((row for row in rows if row.shape == (size, size)), key=lambda row: row.density)
        _draw_columns(axis, chosen, lambda row: row.density, styles)
        axis.set(title=f"{size} x {size}", xlabel="density", ylabel="seconds (median)")
        _ticks(axis, [row.density for row in chosen])
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.tight_layout()
    paths.append(out / "speed_density.png")
    figure.savefig(paths[-1], dpi=120)
    plt.close(figure)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=None,
                        help="largest dimensions (default: 256 ... 8192; --quick: 256 512 1024)")
    parser.add_argument("--densities", type=fraction, nargs="+", default=None,
                        help="(default: 0.01 0.05 0.1 0.25 0.5; --quick: 0.1 0.5)")
    parser.add_argument("--aspects", nargs="+", choices=sorted(ASPECTS), default=["square", "tall"],
                        help="square: n x n; tall: n x n/4 (out >= in); wide: n/4 x n (default: square tall)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="runs per cell (default: 5; --quick: 3)")
    parser.add_argument("--cell-seconds", type=positive_float, default=None,
                        help="stop repeating a cell once it has taken this long (default: 20; --quick: 2)")
    parser.add_argument("--reference-max", type=positive_int, default=2048,
                        help="largest size for the reference engine (default: %(default)s)")
    parser.add_argument("--published-max", type=positive_int, default=None,
                        help="largest size for the published algorithm (default: 2048; --quick: 512)")
    parser.add_argument("--qr-max", type=positive_int, default=8192,
                        help="largest size for dense QR (default: %(default)s)")
    parser.add_argument("--blas-threads", type=nonnegative_int, default=1,
                        help="BLAS threads for dense QR (default: %(default)s, like the single-threaded "
                             "numba engine; 0: the BLAS default)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads of the numba engine and of the 'floor N' column "
                             "(default: eoi_core.get_num_threads())")
    parser.add_argument("--no-target", dest="target", action="store_false",
                        help="skip the 14336 x 4096 and 28672 x 8192 target rows (skipped by --quick)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    add_common(parser, progress=True)


def resolve_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick

    def pick(value, full, small):
        return value if value is not None else (small if quick else full)

    sizes = tuple(pick(args.sizes, (256, 512, 1024, 2048, 4096, 8192), (256, 512, 1024)))
    for size in sizes:
        if size < 8 or size % 4:
            raise ValueError(f"--sizes must be multiples of 4 and >= 8 (for the 4:1 shapes), got {size}")
    return Plan(sizes=sizes, densities=tuple(pick(args.densities, (0.01, 0.05, 0.1, 0.25, 0.5), (0.1, 0.5))),
                aspects=tuple(dict.fromkeys(args.aspects)), repeats=pick(args.repeats, 5, 3),
                cell_seconds=pick(args.cell_seconds, 20.0, 2.0), reference_max=args.reference_max,
                published_max=pick(args.published_max, 2048, 512), qr_max=args.qr_max,
                target=args.target and not quick, memory=args.memory, blas_threads=args.blas_threads,
                threads=args.threads if args.threads is not None else _default_threads())


def _default_threads() -> int:
    import eoi_core

    return eoi_core.get_num_threads()


def run(args: argparse.Namespace) -> list[Row]:
    plan = resolve_plan(args)
    out = report.prepare_output(args.out)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.progress else (lambda line: None)
    rows = measure_rows(plan, log)
    table = speed_table(rows, plan.repeats)
    targets = check_targets(rows)
    threads = "its default number of" if plan.blas_threads == 0 else str(plan.blas_threads)
    header = (f"float32 weights; median of {plan.repeats} runs per cell unless n= says fewer "
              f"(a cell stops repeating after {plan.cell_seconds:g} s); the floors are timed in the same rounds "
              f"as the numba engine, one run of each per round; dense QR does not depend on the density and "
              f"is timed once per shape; dense QR uses {threads} BLAS thread(s), "
              f"the numba engine {plan.threads} thread(s); 'floor' is written by one thread, 'floor N' by "
              f"{plan.threads}.")
    print(header)
    print(table)
    for line in targets:
        print("target:", line)
    paths = plot_speed(rows, out)
    report.write_text(out / "speed.md", "\n\n".join([header, table, "\n".join(f"- {t}" for t in targets)]))
    report.write_json(out / "speed.json", {"plan": plan.__dict__, "rows": [
        {"shape": row.shape, "density": row.density, "peak_ratio": row.peak_ratio,
         "cells": {name: cell.__dict__ for name, cell in row.cells.items()}} for row in rows]})
    print(f"wrote {', '.join(str(p) for p in paths)}, {out / 'speed.md'} and {out / 'speed.json'}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/speed.py [--quick] [--out DIR] ...``"""
    return standalone("speed.py", __doc__.splitlines()[0], add_arguments, run, argv)
