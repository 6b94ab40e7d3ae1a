"""The ``eoi`` command, kept here for ``python -m eoi_bench`` and older imports.

The command lives in :mod:`eoi_core.cli` (``eoi init`` needs only the core);
``eoi demo`` and ``eoi bench NAME`` run the modules of this package, and
:mod:`eoi_bench.registry` lists the benchmarks.

>>> from eoi_bench.cli import BENCHMARKS, main
>>> sorted(BENCHMARKS)[:2]
['angles', 'deep']
"""

from __future__ import annotations

from eoi_core.cli import build_parser, main

from .registry import BENCHMARKS

__all__ = ["main", "build_parser", "BENCHMARKS"]

if __name__ == "__main__":
    raise SystemExit(main())
