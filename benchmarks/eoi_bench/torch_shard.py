"""eoi_torch on FSDP2: per-rank CPU time and peak memory of sparsify for W ranks, against one process.

The large-model flow of ``docs/sharding.md``: an MLP ``Linear(d, 4d)`` +
``Linear(4d, d)`` (float32) is built on ``meta``, every layer and the model
go through ``fully_shard`` on a 1-D CPU mesh of ``W`` gloo ranks (one process
each, all running at once, as ``torchrun`` would start them), ``to_empty``
gives each rank its shards, and then each rank times
``eoi_torch.sparsify(model, density, workers=1, verify=None)``.  ``W = 1`` is
the same model built whole in one process, without ``torch.distributed``.
The shards are zeroed after ``to_empty`` so that, as for ``W = 1``, the
model's own pages are resident before the call and not counted in its peak.

Per rank: CPU seconds of the call (user + system from ``getrusage``, the least
of ``--repeats`` calls, so a busy machine inflates it less) and its peak extra
resident memory (``VmHWM - VmRSS`` around the call, glibc returning freed
blocks at once, as in :mod:`eoi_bench.memory`), next to the bytes the rank
keeps (its weight shards + masks).  FSDP2 splits axis 0: for the first layer
(``out >= in``) that is not the free axis (:func:`eoi_core.free_axis`), so
every rank replays its whole value pass; the second layer's work splits.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Sequence

from . import report
from ._command import add_common, standalone
from .argtypes import fraction, positive_int

__all__ = ["add_arguments", "run", "measure_rank"]

SIZES = {"full": (4096, (1, 2, 4)), "quick": (256, (1, 2))}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def measure_rank(rank: int, world: int, width: int, density: float, repeats: int, port: int) -> dict:
    """In this process (rank ``rank`` of ``world``; ``world == 1``: no process group): sparsify's cost."""
    import ctypes
    import gc
    import resource

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: freed arrays leave at once
    libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    import torch
    from torch import nn

    import eoi_torch

    torch.set_num_threads(1)
    mesh = None
    if world > 1:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        mesh = init_device_mesh("cpu", (world,))

    def build() -> nn.Module:
        if mesh is None:
            return nn.Sequential(nn.Linear(width, 4 * width), nn.Linear(4 * width, width))
        from torch.distributed.fsdp import fully_shard

        with torch.device("meta"):
            model = nn.Sequential(nn.Linear(width, 4 * width), nn.Linear(4 * width, width))
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        with torch.no_grad():  # touch the shards' pages now, as nn.Linear's own init does for W = 1
            for parameter in model.parameters():
                parameter.to_local().zero_()
        return model

    eoi_torch.sparsify(nn.Linear(64, 64), 0.5, verify=None)  # load the engine's kernels first
    cpu, peak, kept = float("inf"), 0, 0
    for _ in range(repeats):
        model = build()
        gc.collect()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident size
        before = _status_kib("VmRSS")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        torch.manual_seed(0)
        eoi_torch.sparsify(model, density, workers=1, verify=None)
        after = resource.getrusage(resource.RUSAGE_SELF)
        peak = max(peak, (_status_kib("VmHWM") - before) * 1024)
        cpu = min(cpu, after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime)
        local = [getattr(t, "to_local", lambda t=t: t)() for t in eoi_torch.masks(model).values()]
        weights = [layer.parametrizations.weight.original for layer in model]
        kept = sum(m.numel() for m in local) + sum(getattr(w, "to_local", lambda w=w: w)().numel() * 4
                                                   for w in weights)
        del model, local, weights
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"world": world, "rank": rank, "cpu_seconds": cpu, "peak_bytes": peak, "kept_bytes": kept}


def _rank(rank: int, world: int, width: int, density: float, repeats: int, port: int, queue) -> None:
    queue.put(measure_rank(rank, world, width, density, repeats, port))


def measure_world(world: int, width: int, density: float, repeats: int) -> list[dict]:
    """Every rank of one world, all at once, in fresh processes (this one only waits)."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [context.Process(target=_rank, args=(rank, world, width, density, repeats, port, queue))
                 for rank in range(world)]
    for process in processes:
        process.start()
    rows = [queue.get() for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"a rank of world {world} exited with {process.exitcode}")
    return sorted(rows, key=lambda row: row["rank"])


def _mib(value: float) -> str:
    return f"{value / (1 << 20):.0f}"


def table(rows: Sequence[dict]) -> str:
    single = next(row for row in rows if row["world"] == 1)
    headers = ["ranks W", "rank", "kept: shards + masks (MiB)", "peak extra (MiB)", "peak / single", "CPU s",
               "CPU / single"]
    body = [[row["world"], row["rank"], _mib(row["kept_bytes"]), _mib(row["peak_bytes"]),
             f"{row['peak_bytes'] / max(single['peak_bytes'], 1):.2f}", f"{row['cpu_seconds']:.3f}",
             f"{row['cpu_seconds'] / max(single['cpu_seconds'], 1e-9):.2f}"] for row in rows]
    return report.markdown_table(headers, body, align="rrrrrrr")


def plot(rows: Sequence[dict], out) -> object:
    plt = report.pyplot()
    worlds = sorted({row["world"] for row in rows})
    worst = {w: max((r for r in rows if r["world"] == w), key=lambda r: r["peak_bytes"]) for w in worlds}
    slowest = {w: max((r for r in rows if r["world"] == w), key=lambda r: r["cpu_seconds"]) for w in worlds}
    figure, (memory, cpu) = plt.subplots(1, 2, figsize=(9, 3.4))
    memory.plot(worlds, [worst[w]["peak_bytes"] / (1 << 20) for w in worlds], "o-", label="worst rank's peak")
    memory.plot(worlds, [worst[1]["peak_bytes"] / (1 << 20) / w for w in worlds], "k:", label="single / W")
    memory.set(xlabel="ranks W", ylabel="peak extra memory (MiB)", xticks=worlds, title="memory per rank")
    cpu.plot(worlds, [slowest[w]["cpu_seconds"] for w in worlds], "o-", label="slowest rank's CPU")
    cpu.plot(worlds, [slowest[1]["cpu_seconds"] / w for w in worlds], "k:", label="single / W")
    cpu.set(xlabel="ranks W", ylabel="CPU seconds", xticks=worlds, title="CPU per rank")
    for axis in (memory, cpu):
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle("eoi_torch.sparsify after fully_shard (FSDP2)", fontsize=9)
    figure.tight_layout()
    path = out / "torch_shard.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--density", type=fraction, default=0.1, help="(default: %(default)s)")
    parser.add_argument("--width", type=positive_int, default=None,
                        help="d of Linear(d, 4d) + Linear(4d, d) (default: 4096; --quick: 256)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="calls per rank (default: %(default)s)")
    add_common(parser)


def run(args: argparse.Namespace) -> list[dict]:
    if not sys.platform.startswith("linux"):
        raise SystemExit("eoi bench torch-shard reads /proc: Linux only")
    import eoi_torch  # noqa: F401  (a missing torch extra is reported here, before any child starts)

    width, worlds = SIZES["quick" if args.quick else "full"]
    width = args.width or width
    payload = json.dumps([width, args.density, args.repeats, list(worlds)])
    child = subprocess.run([sys.executable, "-m", "eoi_bench.torch_shard", "--child"], input=payload, text=True,
                           capture_output=True, env={**os.environ, "EOI_NUM_THREADS": "1"}, timeout=3600)
    if child.returncode:
        raise RuntimeError(f"the measuring child failed:\n{child.stderr[-4000:]}")
    rows = json.loads(child.stdout)
    out = report.prepare_output(args.out)
    header = (f"Linear({width}, {4 * width}) + Linear({4 * width}, {width}), float32, density {args.density:g}; "
              f"sparsify(workers=1, verify=None), one engine thread per rank; W ranks of gloo on this machine "
              f"at once; least CPU and largest peak of {args.repeats} calls per rank.")
    report.publish(out, "torch_shard", header, table(rows), {"rows": rows}, plot(rows, out))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eoi_bench.torch_shard [--quick] [--out DIR] ...``"""
    return standalone("torch_shard.py", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        width, density, repeats, worlds = json.load(sys.stdin)
        rows = []
        for world in worlds:
            rows += ([measure_rank(0, 1, width, density, repeats, 0)] if world == 1
                     else measure_world(world, width, density, repeats))
        json.dump(rows, sys.stdout)
    else:
        sys.exit(main())
