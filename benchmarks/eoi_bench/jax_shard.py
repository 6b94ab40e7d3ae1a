"""Per-device host memory and time of eoi_jax's sharded init, per Flax kernel layout, against the whole kernel.

A JAX device's shard of an ``eoi_jax.eoi`` kernel is built on its host by
``eoi_jax.shards.host_shard`` (the function the ``make_array_from_callback``
and ``shard_map`` callbacks run), from the core's ``sparse_orthogonal_shard``
plus the layout's cut.  For each kernel this measures, in a child process
(``glibc`` told to ``mmap`` every allocation above 64 KiB so that freed arrays
leave at once, the resident high-water mark reset before each call as in
:mod:`eoi_bench.memory`): the peak extra resident memory and the time of the
whole kernel (``host_eoi``, what one host needs without sharding), and of every
one of the ``W`` shards built alone; the table reports the worst shard.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Sequence

from . import report
from ._command import add_common, standalone
from .argtypes import fraction, positive_int

__all__ = ["add_arguments", "run", "measure"]

# (name, Flax shape, layout, options, the Flax axis split among devices)
KERNELS = {
    "full": [
        ("dense 8192x8192, split out", (8192, 8192), "dense", {}, 1),
        ("dense 8192x8192, split in", (8192, 8192), "dense", {}, 0),
        ("conv 3x3 512->512, split out", (3, 3, 512, 512), "conv", {}, 3),
        ("attention query 4096 -> 32x128, split heads", (4096, 32, 128), "einsum", {"groups": 32}, 1),
        ("gates (LSTM) 2048 -> 4x2048, split out", (2048, 4 * 2048), "gates", {"gates": 4}, 1),
    ],
    "quick": [
        ("dense 1024x1024, split out", (1024, 1024), "dense", {}, 1),
        ("conv 3x3 64->64, split out", (3, 3, 64, 64), "conv", {}, 3),
    ],
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def _peak(call) -> tuple[int, float]:
    """Peak extra resident bytes and seconds of ``call()`` (Linux; its result is kept until measured)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current resident size
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = (_status_kib("VmHWM") - before) * 1024
    del result
    return peak, seconds


def measure(kernels: Sequence, density: float, world: int) -> list[dict]:
    """In this process: whole and per-shard peak memory and time for each kernel."""
    import ctypes

    import numpy as np

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD (also turns off glibc's dynamic threshold)
    libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    import eoi_core
    from eoi_core.kernels import kernel_layout
    from eoi_jax.initializers import _request, host_eoi
    from eoi_jax.shards import host_shard

    warm = _request(kernel_layout((64, 64), "dense"), 0.5, 1.0, None, np.float32)
    host_eoi(0, warm), host_shard(0, warm, (slice(0, 8), slice(None)))  # compile the engine first
    rows = []
    for name, shape, layout, options, axis in kernels:
        request = _request(kernel_layout(tuple(shape), layout, **options), density, 1.0, None, np.float32)
        whole_peak, whole_seconds = _peak(lambda: host_eoi(0, request))
        shards = []
        for start, stop in eoi_core.shard_bounds(shape[axis], world):
            index = [slice(None)] * len(shape)
            index[axis] = slice(start, stop)
            shards.append(_peak(lambda: host_shard(0, request, tuple(index))))
        weight_bytes = int(np.prod(shape)) * 5  # float32 weight + bool mask
        rows.append({
            "kernel": name, "shape": list(shape), "layout": layout, "world": world,
            "output_bytes": weight_bytes, "shard_output_bytes": weight_bytes // world,
            "whole_peak_bytes": whole_peak, "whole_seconds": whole_seconds,
            "shard_peak_bytes": max(peak for peak, _ in shards),
            "shard_seconds": float(np.median([seconds for _, seconds in shards])),
            "shard_seconds_max": max(seconds for _, seconds in shards),
        })
    return rows


def _child(kernels: Sequence, density: float, world: int) -> list[dict]:
    payload = json.dumps([[name, list(shape), layout, options, axis] for name, shape, layout, options, axis in kernels])
    child = subprocess.run(
        [sys.executable, "-m", "eoi_bench.jax_shard", "--child", str(density), str(world)],
        input=payload, text=True, capture_output=True, check=True,
        env={**os.environ, "EOI_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"},
    )
    return json.loads(child.stdout)


def _mib(value: float) -> str:
    return f"{value / (1 << 20):.1f}"


def table(rows: Sequence[dict]) -> str:
    headers = ["kernel", "W", "output / shard (MiB)", "whole: peak (MiB)", "worst shard: peak (MiB)",
               "peak ratio", "whole: s", "shard: median s (max)"]
    body = [[r["kernel"], r["world"], f"{_mib(r['output_bytes'])} / {_mib(r['shard_output_bytes'])}",
             _mib(r["whole_peak_bytes"]), _mib(r["shard_peak_bytes"]),
             f"{r['shard_peak_bytes'] / max(r['whole_peak_bytes'], 1):.3f}",
             f"{r['whole_seconds']:.3f}", f"{r['shard_seconds']:.3f} ({r['shard_seconds_max']:.3f})"] for r in rows]
    return report.markdown_table(headers, body, align="lrrrrrrr")


def plot(rows: Sequence[dict], out) -> object:
    plt = report.pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.8))
    positions = range(len(rows))
    axis.barh([p + 0.2 for p in positions], [r["whole_peak_bytes"] / (1 << 20) for r in rows], height=0.4,
              label="whole kernel on one host")
    axis.barh([p - 0.2 for p in positions], [r["shard_peak_bytes"] / (1 << 20) for r in rows], height=0.4,
              label=f"one device's shard (worst of W={rows[0]['world']})")
    axis.set_yticks(list(positions), [r["kernel"] for r in rows], fontsize=7)
    axis.set(xscale="log", xlabel="peak extra resident memory (MiB)", title="eoi_jax: host memory per device")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3, axis="x", which="both")
    from matplotlib.ticker import NullFormatter

    axis.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
    figure.tight_layout()
    path = out / "jax_shard.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--density", type=fraction, default=0.1, help="(default: %(default)s)")
    parser.add_argument("--world", type=positive_int, default=None, help="devices W (default: 8; --quick: 4)")
    add_common(parser)


def run(args: argparse.Namespace) -> list[dict]:
    if not sys.platform.startswith("linux"):
        raise SystemExit("eoi bench jax-shard reads /proc: Linux only")
    import eoi_jax  # noqa: F401  (the child needs it: a missing extra is reported here, as usual)

    world = args.world or (4 if args.quick else 8)
    kernels = KERNELS["quick" if args.quick else "full"]
    rows = _child(kernels, args.density, world)
    out = report.prepare_output(args.out)
    header = (f"density {args.density:g}, float32 + bool mask, one engine thread, in a child process; "
              f"peak = extra resident memory at the high-water mark of one host_eoi (whole) or host_shard call.")
    report.publish(out, "jax_shard", header, table(rows), {"rows": rows}, plot(rows, out))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eoi_bench.jax_shard [--quick] [--out DIR] ...``"""
    return standalone("jax_shard.py", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        density, world = float(sys.argv[2]), int(sys.argv[3])
        json.dump(measure([tuple(k) for k in json.load(sys.stdin)], density, world), sys.stdout)
    else:
        sys.exit(main())
