#!/usr/bin/env python
"""Fixed against uniform rotation angles: early training of a deep EOI network (the paper's App. G).

A thin wrapper: ``python benchmarks/angles.py [--quick] [--out DIR] ...`` is ``eoi bench angles ...``
(the code lives in ``eoi_bench.angles``; ``--help`` lists every option).
"""

import sys

from eoi_bench.angles import main

if __name__ == "__main__":
    sys.exit(main())
