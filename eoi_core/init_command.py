"""``eoi init``: write an EOI ``(weight, mask)`` to an ``.npz`` file.

Needs only the base install (NumPy and Numba).  The file format is described
in :mod:`eoi_core.io`; :func:`eoi_core.io.load_npz` reads it back.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "w.npz"
>>> main([str(out), "--shape", "16", "8", "--density", "0.5", "--seed", "0"])
wrote .../w.npz: weight float32 (16, 8) and mask bool
  density          0.5 (64 trainable of 128; ... non-zero at init)
  orthogonality    max |W^T W - g^2 I| = ... (in float64)
  time             ... ms (engine numba)
0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io
from ._argtypes import fraction, nonnegative_int, positive_float, positive_int
from .checks import CENTER_POLICIES, ENGINES
from .dtypes import DTYPES

__all__ = ["add_arguments", "run", "main"]

#: ``eoi init --help`` ends with the file format.
CLI_EPILOG = ("The file, read with numpy.load(OUT, allow_pickle=False), holds:\n\n"
              + io.__doc__.split("reads it:\n\n", 1)[1].split("\n\n>>>", 1)[0])


def _center_density(text: str) -> float | str:
    if text in CENTER_POLICIES:
        return text
    try:
        return fraction(text)
    except argparse.ArgumentTypeError:
        policies = " or ".join(repr(policy) for policy in CENTER_POLICIES)
        raise argparse.ArgumentTypeError(f"expected {policies} or a density in (0, 1], got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``eoi init``."""
    parser.add_argument("out", metavar="OUT", type=Path, help="the .npz file to write ('.npz' is appended if missing)")
    parser.add_argument("--shape", type=positive_int, nargs="+", required=True, metavar="DIM",
                        help="canonical PyTorch shape: OUT IN for a dense layer, OUT IN/GROUPS K1 [K2 [K3]] for a conv")
    parser.add_argument("--density", type=fraction, required=True, help="fraction of trainable entries, in (0, 1]")
    parser.add_argument("--seed", type=nonnegative_int, default=None,
                        help="random seed (default: fresh OS entropy, a different weight every run)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="(default: %(default)s; bfloat16 needs the ml_dtypes package)")
    parser.add_argument("--gain", type=positive_float, default=1.0, help="orthogonal scale (default: %(default)s)")
    parser.add_argument("--groups", type=positive_int, default=1, help="conv groups (default: %(default)s)")
    parser.add_argument("--center-density", type=_center_density, default=None,
                        metavar="{" + ",".join(CENTER_POLICIES) + ",D}",
                        help="density of a kernel's orthogonal centre: 'sqrt' (the paper's second variant) "
                             "or a number (default: the layer density)")
    parser.add_argument("--engine", choices=ENGINES, default="numba", help="(default: %(default)s)")


def run(args: argparse.Namespace) -> Path:
    """Build the weight, write it and print its density, orthogonality and time."""
    from .api import orthogonality_error, sparse_orthogonal, validate

    shape = tuple(args.shape)
    if len(shape) < 2:
        raise ValueError(f"--shape needs at least 2 dimensions (OUT IN), got {args.shape}")
    if args.out.is_dir():
        raise ValueError(f"OUT {str(args.out)!r} is a directory; give a file name such as weight.npz")
    options = dict(gain=args.gain, dtype=args.dtype, groups=args.groups, center_density=args.center_density)
    validate(shape, args.density, **options)  # a bad request fails before anything is compiled or written
    # Compile (or load) the engine first so that the time below is the generation's alone.  Numba
    # compiles per array layout, so the warm-up covers the square case and the weight's own
    # orientation (tall or wide) with the same kind of taps (the centre of a 1 x 1 kernel is
    # contiguous, of larger ones strided), sparse so that every kernel runs.
    out, inp = shape[0] // args.groups, shape[1]
    taps = tuple(1 if k == 1 else 2 for k in shape[2:])
    for warm in {(4, 4), (4 if out >= inp else 2, 4 if inp >= out else 2)}:
        sparse_orthogonal(warm + taps, 0.5, rng=0, dtype=args.dtype, engine=args.engine)
    start = time.perf_counter()
    weight, mask = sparse_orthogonal(shape, args.density, rng=args.seed, engine=args.engine, **options)
    seconds = time.perf_counter() - start
    error = orthogonality_error(weight, gain=args.gain, groups=args.groups)
    path = io.save_npz(args.out, weight, mask, density=args.density, gain=args.gain, groups=args.groups)
    print(f"wrote {path}: weight {weight.dtype.name} {tuple(weight.shape)} and mask bool")
    print(f"  density          {mask.mean():.6g} ({int(mask.sum())} trainable of {mask.size}; "
          f"{int(np.count_nonzero(weight))} non-zero at init)")
    gram = "W^T W" if shape[0] // args.groups >= shape[1] else "W W^T"
    where = "" if len(shape) == 2 else ", W = the kernel's centre tap"
    where += "" if args.groups == 1 else ", worst group"
    print(f"  orthogonality    max |{gram} - g^2 I| = {error:.3g} (in float64{where})")
    print(f"  time             {seconds * 1e3:.1f} ms (engine {args.engine})")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``eoi init OUT --shape ... --density D`` on its own; returns the exit status."""
    from .cli import main as eoi

    return eoi(["init", *(sys.argv[1:] if argv is None else argv)])
