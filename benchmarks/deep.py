#!/usr/bin/env python
"""Deep vanilla sparse MLPs: EOI against random sparse baselines (the paper's Table 1, CPU version).

A thin wrapper: ``python benchmarks/deep.py [--quick] [--out DIR] ...`` is ``eoi bench deep ...``
(the code lives in ``eoi_bench.deep``; ``--help`` lists every option).
"""

import sys

from eoi_bench.deep import main

if __name__ == "__main__":
    sys.exit(main())
