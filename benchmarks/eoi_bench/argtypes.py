"""``argparse`` types that reject bad values with a message naming what is allowed.

They live in :mod:`eoi_core._argtypes`, beside the ``eoi`` command; this module
keeps the benchmarks' imports short.

>>> from eoi_bench.argtypes import sparsity
>>> sparsity("0.9")
0.9
"""

from eoi_core._argtypes import (degrees, fraction, nonnegative_float, nonnegative_int, positive_float,
                                positive_int, sparsity)

__all__ = ["positive_int", "nonnegative_int", "fraction", "positive_float", "nonnegative_float",
           "sparsity", "degrees"]
