"""Sharded EOI: per-rank peak memory and CPU time of ``eoi_core.sparse_orthogonal_shard`` for W ranks.

For each weight shape and world size ``W``, every rank ``0 .. W-1`` builds its shard in its own
process (one after another, one engine thread each, so CPU seconds compare and nothing competes
for memory), as a distributed adapter would on W processes:

``free``   the shard splits the free axis (:func:`eoi_core.free_axis`: the rows of the wide Givens
           matrix), so each rank replays only its share of the value pass;
``other``  the shard splits the other axis, so each rank replays every row (in bands) and keeps
           only its columns: memory is the shard, CPU is the whole value pass.

Per rank: CPU seconds of the call (user + system from ``getrusage``; after one untimed call that
loads the kernels, the least of ``--repeats`` calls in each of ``--rounds`` rounds over all
worlds, so that a busy machine inflates it less: with several rounds a rank's calls fall in
stretches of time minutes apart; the user part alone is shown too, because the system part is
mostly the kernel zeroing, and on a fragmented machine compacting, the pages of a fresh output,
which can dominate a large single-process run) and its peak extra resident memory (the largest)
(``VmHWM - VmRSS`` around the call, with glibc returning freed blocks at once; see
:mod:`eoi_bench.memory`).  Targets (free axis): per-rank CPU <= (1/W + 0.1) of the single-process
CPU time, and per-rank peak memory <= 1.5x its shard (weight + mask) plus a fixed overhead, here
the support bitsets (``n * m / 8`` bytes, the same for every W) plus 32 MiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from . import report
from ._command import add_common, standalone
from .argtypes import fraction, positive_int

__all__ = ["RankResult", "measure_rank", "run_world", "shard_table", "add_arguments", "run", "main"]

AXES = ("free", "other")
FIXED_OVERHEAD = 32 << 20


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is OUTxIN, e.g. 8192x28672, got {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"shape dimensions must be positive, got {text!r}")
    return rows, cols


@dataclass(frozen=True)
class RankResult:
    shape: tuple[int, int]
    axis: str
    world: int
    rank: int
    shard_bytes: int
    cpu_seconds: float
    user_seconds: float
    peak_bytes: int | None


def _index(shape: tuple[int, int], axis: str, world: int, rank: int) -> tuple[slice, slice]:
    import eoi_core

    split_axis = eoi_core.free_axis(shape) if axis == "free" else 1 - eoi_core.free_axis(shape)
    start, stop = eoi_core.shard_bounds(shape[split_axis], world)[rank]
    index = [slice(None), slice(None)]
    index[split_axis] = slice(start, stop)
    return tuple(index)


def measure_rank(shape: tuple[int, int], density: float, axis: str, world: int, rank: int,
                 repeats: int = 1) -> dict:
    """In this process: CPU seconds (least of ``repeats`` calls) and peak extra resident bytes (largest) of one rank's shard."""
    import resource

    import eoi_core

    def user_system() -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime, usage.ru_stime

    linux = sys.platform.startswith("linux")
    if linux:
        import ctypes

        from .memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, _status_kib

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 16)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 16)
    eoi_core.set_num_threads(1)
    index = _index(shape, axis, world, rank)
    # One untimed call first: it loads every kernel the timed calls run (a small shape would not
    # reach the streamed writes, and loading them costs more than a whole shard of W = 8).
    eoi_core.sparse_orthogonal_shard(shape, density, index, rng=0)
    cpu, user, peak, shard_bytes = float("inf"), float("inf"), None, 0
    for _ in range(repeats):
        gc.collect()
        if linux:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM to the current resident size
            before = _status_kib("VmRSS")
        user0, system0 = user_system()
        weight, mask = eoi_core.sparse_orthogonal_shard(shape, density, index, rng=0)
        user1, system1 = user_system()
        cpu = min(cpu, user1 - user0 + system1 - system0)
        user = min(user, user1 - user0)
        if linux:
            peak = max(peak or 0, (_status_kib("VmHWM") - before) * 1024)
        shard_bytes = weight.nbytes + mask.nbytes
        del weight, mask
    return {"shard_bytes": shard_bytes, "cpu_seconds": cpu, "user_seconds": user, "peak_bytes": peak}


def run_world(shape: tuple[int, int], density: float, axis: str, world: int, jobs: int = 1,
              repeats: int = 1) -> list[RankResult]:
    """Every rank of one world, each in a fresh child process, ``jobs`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    environment = dict(os.environ, EOI_NUM_THREADS="1")

    def rank_process(rank: int) -> RankResult:
        payload = json.dumps([list(shape), density, axis, world, rank, repeats])
        child = subprocess.run([sys.executable, "-m", "eoi_bench.shard", "--child"], input=payload, text=True,
                               capture_output=True, check=True, env=environment, timeout=1800)
        measured = json.loads(child.stdout)
        return RankResult(shape, axis, world, rank, measured["shard_bytes"], measured["cpu_seconds"],
                          measured["user_seconds"], measured["peak_bytes"])

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(rank_process, range(world)))


def _merge(earlier: RankResult, later: RankResult) -> RankResult:
    """One rank measured in two rounds: the least CPU and the largest peak memory of the two."""
    peaks = [p for p in (earlier.peak_bytes, later.peak_bytes) if p is not None]
    return RankResult(earlier.shape, earlier.axis, earlier.world, earlier.rank, earlier.shard_bytes,
                      min(earlier.cpu_seconds, later.cpu_seconds), min(earlier.user_seconds, later.user_seconds),
                      max(peaks) if peaks else None)


def _mib(value: float | None) -> str:
    return "-" if value is None else report.fmt(value / (1 << 20))


def summarise(results: Sequence[RankResult]) -> list[dict]:
    """One row per (shape, axis, world): the worst rank against the single-process run of that shape."""
    import eoi_core

    single = {(r.shape, r.axis): r.cpu_seconds for r in results if r.world == 1}
    single_user = {(r.shape, r.axis): r.user_seconds for r in results if r.world == 1}
    rows = []
    groups: dict[tuple, list[RankResult]] = {}
    for result in results:
        groups.setdefault((result.shape, result.axis, result.world), []).append(result)
    for (shape, axis, world), ranks in groups.items():
        n, m = min(shape), max(shape)
        pattern = n * m // 8
        cpu = max(r.cpu_seconds for r in ranks)
        base = single.get((shape, axis), single.get((shape, "free")))
        user = max(r.user_seconds for r in ranks)
        base_user = single_user.get((shape, axis), single_user.get((shape, "free")))
        peaks = [r for r in ranks if r.peak_bytes is not None]
        worst = max(peaks, key=lambda r: r.peak_bytes - 1.5 * r.shard_bytes) if peaks else None
        rows.append({
            "shape": shape, "axis": axis, "world": world, "free_axis": eoi_core.free_axis(shape),
            "shard_bytes": max(r.shard_bytes for r in ranks), "pattern_bytes": pattern,
            "cpu_seconds": cpu, "cpu_ratio": cpu / base if base else None, "cpu_goal": 1 / world + 0.1,
            "user_seconds": user, "user_ratio": user / base_user if base_user else None,
            "peak_bytes": None if worst is None else worst.peak_bytes,
            "peak_over_shard": None if worst is None else worst.peak_bytes / worst.shard_bytes,
            "memory_ok": None if worst is None else
            worst.peak_bytes <= 1.5 * worst.shard_bytes + pattern + FIXED_OVERHEAD,
        })
    return rows


def shard_table(rows: Sequence[dict]) -> str:
    headers = ["shape (out x in)", "split axis", "W", "shard [MiB]", "peak [MiB] (worst rank)", "peak / shard",
               "peak - 1.5 shard [MiB]", "bitsets [MiB]", "CPU [s] (worst rank)", "CPU / single",
               "user CPU / single", "goal 1/W + 0.1", "CPU goal", "memory goal"]
    lines = []
    for row in rows:
        axis_name = f"{row['axis']} (axis {row['free_axis'] if row['axis'] == 'free' else 1 - row['free_axis']})"
        over = None if row["peak_bytes"] is None else row["peak_bytes"] - 1.5 * row["shard_bytes"]
        cpu_goal = "-" if row["axis"] != "free" or row["cpu_ratio"] is None else (
            "met" if row["cpu_ratio"] <= row["cpu_goal"] else "MISSED")
        memory_goal = "-" if row["memory_ok"] is None else ("met" if row["memory_ok"] else "MISSED")
        lines.append([f"{row['shape'][0]} x {row['shape'][1]}", axis_name, str(row["world"]),
                      _mib(row["shard_bytes"]), _mib(row["peak_bytes"]),
                      "-" if row["peak_over_shard"] is None else f"{row['peak_over_shard']:.2f}x",
                      _mib(over), _mib(row["pattern_bytes"]), report.fmt(row["cpu_seconds"]),
                      "-" if row["cpu_ratio"] is None else f"{row['cpu_ratio']:.3f}",
                      "-" if row["user_ratio"] is None else f"{row['user_ratio']:.3f}",
                      f"{row['cpu_goal']:.3f}", cpu_goal, memory_goal])
    return report.markdown_table(headers, lines, align="llr" + "r" * 11)


def plot_shards(rows: Sequence[dict], out) -> object:
    """``shard.png``: per-rank CPU (relative to one process) and peak memory against W."""
    plt = report.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    shapes = sorted({row["shape"] for row in rows})
    for colour, shape in enumerate(shapes):
        for axis, style in (("free", "-"), ("other", "--")):
            chosen = sorted((r for r in rows if r["shape"] == shape and r["axis"] == axis), key=lambda r: r["world"])
            if not chosen:
                continue
            label = f"{shape[0]}x{shape[1]}, {axis} axis"
            worlds = [r["world"] for r in chosen]
            left.plot(worlds, [r["cpu_ratio"] for r in chosen], style, marker="o", color=f"C{colour}", label=label)
            if all(r["peak_bytes"] is not None for r in chosen):
                right.plot(worlds, [r["peak_bytes"] / (1 << 20) for r in chosen], style, marker="o",
                           color=f"C{colour}", label=f"{label}: peak")
                if axis == "free":
                    right.plot(worlds, [r["shard_bytes"] / (1 << 20) for r in chosen], ":", color=f"C{colour}",
                               label=f"{shape[0]}x{shape[1]}: shard")
    worlds = sorted({row["world"] for row in rows})
    left.plot(worlds, [1 / w + 0.1 for w in worlds], ":", color="k", label="goal 1/W + 0.1 (free axis)")
    left.set(xscale="log", yscale="log", xlabel="world size W", ylabel="per-rank CPU / single process",
             title="CPU per rank")
    right.set(xscale="log", yscale="log", xlabel="world size W", ylabel="MiB", title="peak memory per rank")
    from matplotlib.ticker import NullFormatter

    for axis in (left, right):
        axis.set_xticks(worlds, [str(w) for w in worlds])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = out / "shard.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", type=_shape, nargs="+", default=None, metavar="OUTxIN",
                        help="weights (default: 16384x16384 8192x28672; --quick: 512x1792)")
    parser.add_argument("--density", type=fraction, default=0.1, help="(default: %(default)s)")
    parser.add_argument("--worlds", type=positive_int, nargs="+", default=None,
                        help="world sizes (default: 1 2 4 8; --quick: 1 2)")
    parser.add_argument("--axes", nargs="+", choices=AXES, default=list(AXES),
                        help="which axis the shards split (default: both)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="calls per rank process: CPU is the least, memory the largest (default: 3; --quick: 1)")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="measure every world this many times, one round after another, and keep each rank's "
                             "least CPU and largest memory over all its calls: a rank's calls then fall in several "
                             "stretches of time, so a noisy stretch of a shared machine inflates fewer of them "
                             "(default: %(default)s)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="rank processes run at once (default: %(default)s; CPU seconds are per process, but "
                             "concurrent ranks share caches and memory bandwidth)")
    add_common(parser, progress=True)


def run(args: argparse.Namespace) -> list[dict]:
    shapes = args.shapes or ([(512, 1792)] if args.quick else [(16384, 16384), (8192, 28672)])
    worlds = sorted(set(args.worlds or ([1, 2] if args.quick else [1, 2, 4, 8])) | {1})
    axes = list(dict.fromkeys(args.axes))
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    out = report.prepare_output(args.out)
    log: Callable[[str], None] = (lambda line: print(line, file=sys.stderr, flush=True)) if args.progress \
        else (lambda line: None)
    best: dict[tuple, RankResult] = {}
    for round_index in range(args.rounds):
        for shape in shapes:
            for axis in axes:
                for world in worlds:
                    if world == 1 and axis != "free" and "free" in axes:
                        continue  # one rank owns the whole weight whichever axis is split
                    if world > shape[0] or world > shape[1]:
                        continue
                    ranks = run_world(shape, args.density, axis, world, args.jobs, repeats)
                    for rank in ranks:
                        key = (rank.shape, rank.axis, rank.world, rank.rank)
                        best[key] = rank if key not in best else _merge(best[key], rank)
                    log(f"round {round_index + 1}/{args.rounds} {shape[0]}x{shape[1]} {axis} W={world}: CPU " +
                        ", ".join(f"{r.cpu_seconds:.3f}" for r in ranks) + " s")
    results = list(best.values())
    rows = summarise(results)
    table = shard_table(rows)
    header = (f"density {args.density:g}, float32 + bool mask, rng=0; CPU: least of {repeats * args.rounds} calls "
              f"({args.rounds} round{'s' if args.rounds > 1 else ''} of {repeats}); "
              f"every rank in its own process with one "
              f"engine thread; 'free' splits the rows of the wide Givens matrix, 'other' the other axis; "
              f"memory goal: peak <= 1.5 shard + bitsets + {FIXED_OVERHEAD >> 20} MiB.")
    report.publish(out, "shard", header, table, {"rows": rows, "ranks": [r.__dict__ for r in results]},
                   plot_shards(rows, out))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eoi_bench.shard [--quick] [--out DIR] ...``"""
    return standalone("shard.py", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        shape, density, axis, world, rank, repeats = json.load(sys.stdin)
        json.dump(measure_rank(tuple(shape), density, axis, world, rank, repeats), sys.stdout)
    else:
        sys.exit(main())
