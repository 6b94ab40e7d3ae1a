#!/usr/bin/env python
"""Speed of EOI: the core's engines against the published algorithm, dense QR and the write floor (App. B).

A thin wrapper: ``python benchmarks/speed.py [--quick] [--out DIR] ...`` is ``eoi bench speed ...``
(the code lives in ``eoi_bench.speed``; ``--help`` lists every option).
"""

import sys

from eoi_bench.speed import main

if __name__ == "__main__":
    sys.exit(main())
