"""What every command shares: common options and turning errors into usage messages.

A command is a pair ``add_arguments(parser)`` / ``run(args)``.  The same pair
serves ``eoi <command>`` and ``python benchmarks/<command>.py``, so the two
can never drift apart.  :func:`eoi_core.cli.execute` runs both.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="example")
>>> add_common(parser)
>>> parser.parse_args(["--quick"]).quick
True
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from eoi_core.cli import execute

from .argtypes import positive_int

__all__ = ["add_common", "execute", "standalone", "configure_torch", "run_stamp", "write_stamp", "STAMP_NAME"]

DEFAULT_OUT = Path("results")

#: The file next to every benchmark's outputs that says which run made them.
STAMP_NAME = "run.json"

#: Packages whose versions decide the numbers (looked up in the installed metadata, never imported).
STAMP_PACKAGES = ("eoi", "numpy", "numba", "scipy", "torch", "keras", "tensorflow", "tensorflow-cpu", "jax", "flax", "matplotlib")


def add_common(parser: argparse.ArgumentParser, *, progress: bool = False, threads: bool = False) -> None:
    """``--quick``, ``--out`` and, where relevant, ``--no-progress`` and ``--threads``."""
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast variant (seconds to a minute) for smoke tests")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="directory for the tables and PNGs (default: %(default)s)")
    if progress:
        parser.add_argument("--no-progress", dest="progress", action="store_false",
                            help="hide the progress bars")
    if threads:
        parser.add_argument("--threads", type=positive_int, default=1,
                            help="PyTorch intra-op threads (default: %(default)s; the layers are small, so "
                                 "more threads rarely help and on a busy machine they can slow it down a lot)")


def configure_torch(threads: int) -> None:
    """Fix the thread count (PyTorch's and BLAS's) and flush subnormals to zero.

    Signals that vanish through hundreds of layers underflow into subnormal
    floats, which the CPU handles up to ~100x slower; flushing them (values
    below 1.2e-38 in float32) changes no result that matters and keeps the
    baselines' timings comparable with EOI's.
    """
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:  # NumPy's BLAS (the QR of the orthogonal baseline) oversubscribes a busy machine just the same
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass


def standalone(prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
               run: Callable[[argparse.Namespace], object], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` for a benchmark run as its own script and execute it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return execute(parser, run, parser.parse_args(argv), extra="bench")


def _command_line(argv: Sequence[str]) -> str:
    """``argv`` as a shell line: the ``eoi`` console script as ``eoi``, ``python -m PACKAGE`` as such."""
    if not argv:
        return ""
    program = Path(argv[0])
    if program.name == "eoi":
        head = ["eoi"]
    elif program.name == "__main__.py":  # python -m eoi_core / python -m eoi_bench
        head = ["python", "-m", program.parent.name]
    else:
        head = ["python", str(argv[0])]
    return shlex.join([*head, *argv[1:]])


def _git(*arguments: str) -> str | None:
    try:
        done = subprocess.run(["git", *arguments], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _commit() -> str | None:
    """``git rev-parse HEAD`` of this checkout, ``-dirty`` if a tracked file differs; None outside git."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:  # Linux; elsewhere platform.processor() is the best there is
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile_target() -> str | None:
    """The CPU Numba compiles the engine for and its widest vector extension, e.g. ``"znver3, AVX2"``.

    The engine's write takes a different instruction sequence with AVX-512
    than with AVX2 (:func:`eoi_core.engine._expand_strategy`), so speed
    figures from two machines with the same model name can differ by it.
    """
    try:
        from llvmlite import binding
        from numba.core import config

        from eoi_core.engine import _target_features
    except ImportError:
        return None
    name = config.CPU_NAME or binding.get_host_cpu_name()
    enabled = _target_features()
    widest = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                                            ("sse4.2", "SSE4.2"), ("neon", "NEON")) if flag in enabled), None)
    return name if widest is None else f"{name}, {widest}"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_stamp(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where a set of outputs came from: command line, UTC date, commit and machine.

    Parameters
    ----------
    argv
        The command line (default ``sys.argv``); the ``eoi`` console script is
        written ``eoi``, anything else ``python PATH``.

    Returns
    -------
    dict
        ``command`` (a shell line), ``date`` (ISO 8601, UTC, seconds),
        ``commit`` (``git rev-parse HEAD``, with ``-dirty`` when a tracked file
        differs from it; None outside a git checkout) and ``machine``:
        platform, CPU model, the CPU and vector extension Numba compiles for,
        logical cores, the cores this process may use,
        memory in GiB, Python and the versions of :data:`STAMP_PACKAGES` that
        are installed.

    Examples
    --------
    >>> stamp = run_stamp(["/venv/bin/eoi", "bench", "density", "--quick"])
    >>> stamp["command"]
    'eoi bench density --quick'
    >>> run_stamp(["/src/eoi_core/__main__.py", "demo"])["command"]
    'python -m eoi_core demo'
    >>> sorted(stamp["machine"])[:4]
    ['compile_target', 'cores', 'cores_usable', 'cpu']
    """
    argv = list(sys.argv if argv is None else argv)
    packages = {}
    for name in STAMP_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": _command_line(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "commit": _commit(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "compile_target": _compile_target(),
            "cores": os.cpu_count(),
            "cores_usable": usable,
            "memory_gib": _memory_gib(),
            "python": platform.python_version(),
            "packages": packages,
        },
    }


def write_stamp(directory: str | Path, argv: Sequence[str] | None = None) -> Path:
    """Write :func:`run_stamp` to ``directory / "run.json"`` and return the path.

    Every benchmark calls it (through :func:`eoi_bench.report.prepare_output`)
    before it writes its tables and figures, so each output folder says which
    command, commit and machine made it; a later run into the same folder
    replaces the stamp along with the outputs.
    """
    path = Path(directory) / STAMP_NAME
    path.write_text(json.dumps(run_stamp(argv), indent=2) + "\n")
    return path
