"""Peak memory of one call, measured in a child process from the kernel's high-water mark.

``tracemalloc`` sees NumPy's allocations but not those Numba makes inside
compiled code, so it would under-report the engine.  Instead a child process
(so the timings of the parent are not disturbed) asks glibc to serve every
allocation above 64 KiB with ``mmap`` (so that freed arrays go back to the
kernel at once), resets the resident-set high-water mark through
``/proc/self/clear_refs`` before each call and reads ``VmHWM - VmRSS`` after
it: the extra resident memory the call needed at its peak, whoever allocated it.

Linux only; elsewhere :func:`peak_memory` returns ``None`` for every task.
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
from typing import Sequence

import numpy as np

__all__ = ["peak_memory", "measure"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def _call(kind: str, shape: Sequence[int], density: float) -> int:
    """Run one task and return the bytes of its output (weight + mask)."""
    if kind == "floor":
        weight = np.empty(shape, dtype=np.float32)
        weight.fill(0.0)
        mask = np.empty(shape, dtype=bool)
        mask.fill(False)
    else:
        import eoi_core

        weight, mask = eoi_core.sparse_orthogonal(tuple(shape), density, rng=0, engine=kind)
    return weight.nbytes + mask.nbytes


def measure(tasks: Sequence[tuple[str, Sequence[int], float]]) -> list[dict]:
    """In this process: peak extra resident bytes and output bytes of each ``(kind, shape, density)``."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 16)  # setting it also turns off glibc's dynamic threshold
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 16)
    import eoi_core

    eoi_core.sparse_orthogonal((64, 64), 0.5, rng=0)  # load the compiled engine before measuring
    results = []
    for kind, shape, density in tasks:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident size
        before = _status_kib("VmRSS")
        output = _call(kind, shape, density)
        peak = _status_kib("VmHWM") - before
        results.append({"kind": kind, "shape": list(shape), "density": density,
                        "peak_bytes": peak * 1024, "output_bytes": output})
    return results


def peak_memory(tasks: Sequence[tuple[str, Sequence[int], float]], timeout: float = 600) -> list[dict | None]:
    """Run :func:`measure` in a child process; ``None`` entries where it is not possible."""
    if not sys.platform.startswith("linux") or not tasks:
        return [None] * len(tasks)
    payload = json.dumps([[kind, list(shape), density] for kind, shape, density in tasks])
    try:
        child = subprocess.run([sys.executable, "-m", "eoi_bench.memory"], input=payload, text=True,
                               capture_output=True, timeout=timeout, check=True)
        return json.loads(child.stdout)
    except (subprocess.SubprocessError, OSError, ValueError) as error:
        print(f"peak memory not measured: {error}", file=sys.stderr)
        return [None] * len(tasks)


if __name__ == "__main__":
    json.dump(measure([(kind, shape, density) for kind, shape, density in json.load(sys.stdin)]), sys.stdout)
