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
from pathlib import Path
from typing import Callable, Sequence

from eoi_core.cli import execute

from .argtypes import positive_int

__all__ = ["add_common", "execute", "standalone", "configure_torch"]

DEFAULT_OUT = Path("results")


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
