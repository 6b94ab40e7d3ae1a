#!/usr/bin/env python
"""Jacobian singular values of a 7-layer MLP at initialisation (the paper's Fig. 2).

A thin wrapper: ``python benchmarks/spectrum.py [--quick] [--out DIR] ...`` is ``eoi bench spectrum ...``
(the code lives in ``eoi_bench.spectrum``; ``--help`` lists every option).
"""

import sys

from eoi_bench.spectrum import main

if __name__ == "__main__":
    sys.exit(main())
