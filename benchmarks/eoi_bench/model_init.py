"""Whole-model initialisation: eoi_torch.sparsify against torch's default init and a loop of eoi_.

For each model (a stack of equal ``nn.Linear`` layers) the table gives, side by
side from one run, the median wall time of torch's own ``reset_parameters``
over the layers, a loop of ``eoi_torch.eoi_``, and ``eoi_torch.sparsify`` with
one and two layer workers and with its default (probe orthogonality check,
the default) and with ``verify=None``; the ratio column is sparsify with its
default workers over torch's default init.  Then the peak resident memory that ``sparsify`` needs above the model
and the masks it keeps (measured in a child process from the kernel's
high-water mark, after a warm-up ``sparsify`` of a small model so that the
library's one-time runtime, its compiled Numba kernels, is not counted), over
the model's largest layer, with one and two workers; and what stays resident
beyond the masks afterwards (the per-layer parametrizations and report).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Callable

from . import report
from ._command import add_common, configure_torch, standalone
from .argtypes import positive_int

CASES_FULL = [(24, 4096, 0.1), (1000, 1024, 0.1)]
CASES_QUICK = [(8, 1024, 0.1), (100, 256, 0.1)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, threads=True)
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per cell (median)")
    parser.set_defaults(threads=2)


def _model(layers: int, width: int):
    from torch import nn

    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def _median(make: Callable[[], object], work: Callable[[object], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        subject = make()
        gc.collect()
        start = time.perf_counter()
        work(subject)
        times.append(time.perf_counter() - start)
        del subject
    return statistics.median(times)


_MEMORY_CHILD = r"""
import ctypes, gc, json, sys, torch, eoi_torch, eoi_core
libc = ctypes.CDLL("libc.so.6"); libc.mallopt(-3, 65536); libc.mallopt(-1, 65536)
torch.set_num_threads(int(sys.argv[4]))
layers, width, density = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
# Warm up the whole path (Numba kernels, thread pool, parametrize, probe) on a small model: the
# one-time runtime of the library (~170 MB of compiled code here) is not the model's cost.
eoi_torch.sparsify(torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 512)), density,
                   workers=int(sys.argv[5]))
model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
gc.collect()
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS:")
eoi_torch.sparsify(model, density, workers=int(sys.argv[5]))
print(json.dumps({"extra": (kib("VmHWM:") - before) * 1024, "kept": (kib("VmRSS:") - before) * 1024}))
"""


def _peak(layers: int, width: int, density: float, threads: int, workers: int) -> dict | None:
    if not sys.platform.startswith("linux"):
        return None
    result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(layers), str(width), str(density),
                             str(threads), str(workers)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"memory child failed: {result.stderr[-400:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    configure_torch(args.threads)
    import torch

    import eoi_core
    import eoi_torch

    out = report.prepare_output(args.out)
    eoi_core.sparse_orthogonal((64, 64), 0.1, rng=0)  # Numba compile outside the timings
    repeats = 2 if args.quick else args.repeats
    cases = CASES_QUICK if args.quick else CASES_FULL
    columns = ["torch init", "eoi_ loop", "sparsify w=1", "sparsify w=2", "sparsify w=2 verify=None",
               "sparsify default"]
    rows, table = [], []
    for layers, width, density in cases:
        def reset(model):
            for layer in model:
                layer.reset_parameters()

        def loop(model):
            for layer in model:
                eoi_torch.eoi_(layer.weight, density)

        def sparsify(workers, verify="probe"):
            return lambda model: eoi_torch.sparsify(model, density, distribution="uniform", workers=workers,
                                                    verify=verify)

        make = lambda: _model(layers, width)  # noqa: E731
        torch.manual_seed(0)
        times = [_median(make, work, repeats) for work in
                 (reset, loop, sparsify(1), sparsify(2), sparsify(2, None), sparsify(None))]
        largest = 4 * width * width
        masks = layers * width * width  # the bool masks sparsify keeps (part of the sparsified model)
        peaks = [_peak(layers, width, density, args.threads, workers) for workers in (1, 2)]
        name = f"{layers} x Linear({width}), d={density}"
        rows.append({"model": name, **dict(zip(columns, times)),
                     "peak_extra_bytes_w1": peaks[0] and peaks[0]["extra"],
                     "peak_extra_bytes_w2": peaks[1] and peaks[1]["extra"],
                     "kept_extra_bytes_w2": peaks[1] and peaks[1]["kept"],
                     "mask_bytes": masks, "largest_layer_bytes": largest})
        table.append([name, *[f"{t:.3g}" for t in times], f"{times[5] / times[0]:.2f}x",
                      *["-" if peak is None else f"{(peak['extra'] - masks) / largest:.2f}" for peak in peaks],
                      "-" if peaks[1] is None else f"{(peaks[1]['kept'] - masks) / 2**20:.1f}"])
        print(f"  {name}: " + ", ".join(f"{c} {t:.3g} s" for c, t in zip(columns, times)), file=sys.stderr)
    headers = ["model", *[f"{c} (s)" for c in columns], "sparsify default / torch",
               "peak w=1 / largest layer", "peak w=2 / largest layer", "kept beyond masks w=2 (MiB)"]
    text = report.markdown_table(headers, table)
    print(f"threads={args.threads}, median of {repeats}\n{text}")
    report.write_text(out / "model_init.md", text)
    report.write_json(out / "model_init.json", rows)

    plt = report.pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width_bar = 0.15
    for index, column in enumerate(columns):
        axis.bar([i + index * width_bar for i in range(len(rows))], [row[column] for row in rows], width_bar,
                 label=column)
    axis.set_xticks([i + 2.5 * width_bar for i in range(len(rows))], [row["model"] for row in rows])
    axis.set_ylabel("seconds (median)")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    axis.set_title("Initialising a whole model")
    figure.tight_layout()
    figure.savefig(out / "model_init.png", dpi=120)
    plt.close(figure)
    return {"rows": rows}


def main(argv=None) -> int:
    return standalone("model-init", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
