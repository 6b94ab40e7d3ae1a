"""``eoi init``: write an EOI ``(weight, mask)`` to an ``.npz`` file.

The file holds plain arrays only, so ``numpy.load(path, allow_pickle=False)``
reads it:

``weight``
    The weight in the canonical PyTorch layout ``(out, in // groups, *kernel)``.
    float16, float32 and float64 are stored as themselves.  NumPy's ``.npz``
    cannot store bfloat16 (it is an ``ml_dtypes`` extension type), so a
    bfloat16 weight is stored as its raw bits, a ``uint16`` array; view it as
    ``ml_dtypes.bfloat16`` (or call ``eoi_bench.init_npz.load_npz``) to get the values back.
``mask``
    bool, same shape: the trainable entries.
``dtype``
    The weight's dtype name (a 0-d string array): ``"float32"``, ``"bfloat16"``, ...
``density``, ``gain``, ``groups``
    The parameters it was made with (0-d arrays).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ._command import standalone
from .argtypes import fraction, nonnegative_int, positive_float, positive_int

__all__ = ["save_npz", "load_npz", "add_arguments", "run", "main"]

DTYPES = ("float16", "bfloat16", "float32", "float64")

#: ``eoi init --help`` ends with the file format.
CLI_EPILOG = "The file, read with numpy.load(OUT, allow_pickle=False), holds:\n\n" + __doc__.split("reads it:\n\n", 1)[1]


def save_npz(path: str | Path, weight: np.ndarray, mask: np.ndarray, **metadata: float | int) -> Path:
    """Write ``weight``, ``mask``, the dtype name and ``metadata`` to ``path`` (``.npz`` is appended if missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    name = weight.dtype.name
    stored = weight.view(np.uint16) if name == "bfloat16" else weight
    arrays = {key: np.asarray(value) for key, value in metadata.items()}
    np.savez(path, weight=stored, mask=mask, dtype=np.asarray(name), **arrays)
    return path


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(weight, mask)`` written by :func:`save_npz`, restoring bfloat16 (needs ``ml_dtypes``)."""
    with np.load(path, allow_pickle=False) as archive:
        weight, mask, name = archive["weight"], archive["mask"], str(archive["dtype"])
    if name == "bfloat16":
        import ml_dtypes

        weight = weight.view(ml_dtypes.bfloat16)
    return weight, mask


def _center_density(text: str) -> float | str:
    if text == "sqrt":
        return text
    try:
        return fraction(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'sqrt' or a density in (0, 1], got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", type=Path, help="the .npz file to write ('.npz' is appended if missing)")
    parser.add_argument("--shape", type=positive_int, nargs="+", required=True, metavar="DIM",
                        help="canonical PyTorch shape: OUT IN for a dense layer, OUT IN/GROUPS K1 [K2 [K3]] for a conv")
    parser.add_argument("--density", type=fraction, required=True, help="fraction of trainable entries, in (0, 1]")
    parser.add_argument("--seed", type=nonnegative_int, default=None,
                        help="random seed (default: fresh OS entropy, a different weight every run)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="(default: %(default)s)")
    parser.add_argument("--gain", type=positive_float, default=1.0, help="orthogonal scale (default: %(default)s)")
    parser.add_argument("--groups", type=positive_int, default=1, help="conv groups (default: %(default)s)")
    parser.add_argument("--center-density", type=_center_density, default=None, metavar="{sqrt,D}",
                        help="density of a kernel's orthogonal centre: 'sqrt' (the paper's second variant) "
                             "or a number (default: the layer density)")
    parser.add_argument("--engine", choices=("numba", "reference"), default="numba", help="(default: %(default)s)")


def run(args: argparse.Namespace) -> Path:
    import eoi_core

    if len(args.shape) < 2:
        raise ValueError(f"--shape needs at least 2 dimensions (OUT IN), got {args.shape}")
    if args.out.is_dir():
        raise ValueError(f"OUT {str(args.out)!r} is a directory; give a file name such as weight.npz")
    # Load the compiled engine first so that the time below is the generation's alone.
    eoi_core.sparse_orthogonal((2, 2) + (1,) * (len(args.shape) - 2), 1.0, rng=0, dtype=args.dtype,
                               engine=args.engine)
    start = time.perf_counter()
    weight, mask = eoi_core.sparse_orthogonal(
        tuple(args.shape), args.density, gain=args.gain, dtype=args.dtype, rng=args.seed,
        groups=args.groups, center_density=args.center_density, engine=args.engine)
    seconds = time.perf_counter() - start
    error = eoi_core.orthogonality_error(weight, gain=args.gain, groups=args.groups)
    path = save_npz(args.out, weight, mask, density=args.density, gain=args.gain, groups=args.groups)
    print(f"wrote {path}: weight {weight.dtype.name} {tuple(weight.shape)} and mask bool")
    print(f"  density          {mask.mean():.6g} ({int(mask.sum())} trainable of {mask.size}; "
          f"{int(np.count_nonzero(weight))} non-zero at init)")
    gram = "W^T W" if args.shape[0] // args.groups >= args.shape[1] else "W W^T"
    where = "" if len(args.shape) == 2 else ", W = the kernel's centre tap"
    where += "" if args.groups == 1 else ", worst group"
    print(f"  orthogonality    max |{gram} - g^2 I| = {error:.3g} (in float64{where})")
    print(f"  time             {seconds * 1e3:.1f} ms (engine {args.engine})")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``eoi init OUT --shape ... --density D``"""
    return standalone("eoi init", __doc__.splitlines()[0], add_arguments, run, argv)
