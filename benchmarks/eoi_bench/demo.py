"""``eoi demo``: why EOI matters, in one command (about 1-3 minutes on 2 cores).

The comparison of :mod:`eoi_bench.deep` at 200 layers: a vanilla tanh MLP
(width 128, density 0.125, no residuals, no normalisation) on the digits,
EOI against a random mask with Kaiming weights, the same scaled to each
unit's actual fan-in, and a dense orthogonal matrix masked at random.  Only
EOI keeps the signal alive through the depth, so only EOI trains.
``--depth 1000`` is the paper's setting.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ._command import standalone
from .deep import Run, add_training_arguments, run_training
from .schemes import TRAINING_SCHEMES

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, depth=200, quick_depth=20, epochs=10, quick_epochs=1)
    parser.add_argument("--schemes", nargs="+", choices=TRAINING_SCHEMES, default=list(TRAINING_SCHEMES),
                        help="schemes to compare (default: all)")


def run(args: argparse.Namespace) -> list[Run]:
    return run_training(args, "demo")


def main(argv: Sequence[str] | None = None) -> int:
    """``eoi demo [--depth 1000] [--quick] [--out DIR] ...``"""
    return standalone("eoi demo", __doc__.splitlines()[0], add_arguments, run, argv)
