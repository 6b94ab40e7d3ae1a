#!/usr/bin/env python
"""Density of random Givens rotations against the exact law (the paper's Fig. 4).

A thin wrapper: ``python benchmarks/density.py [--quick] [--out DIR] ...`` is ``eoi bench density ...``
(the code lives in ``eoi_bench.density``; ``--help`` lists every option).
"""

import sys

from eoi_bench.density import main

if __name__ == "__main__":
    sys.exit(main())
