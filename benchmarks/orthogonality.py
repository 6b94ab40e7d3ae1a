"""Worst observed orthogonality error per dtype, relative to the tested bound.

For random shapes (dense and conv, square, tall and wide), densities and seeds,
prints ``max |W^T W - g^2 I|`` (``W W^T`` for wide weights; the centre slice of
kernels) in units of ``eps(dtype) * g^2 * sqrt(max(out, in))``.  The test suite
asserts this ratio is <= 8.

    python benchmarks/orthogonality.py [--samples 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import eoi_core
from eoi_core.dtypes import eps

DTYPES = ("float16", "bfloat16", "float32", "float64")


def random_layer(rng: np.random.Generator) -> tuple[tuple[int, ...], int]:
    out, inp = (int(v) for v in rng.integers(1, 513, size=2))
    if rng.random() < 0.5:
        return (out, inp), 1
    kernel = tuple(int(k) for k in rng.choice([1, 3, 5], size=int(rng.integers(1, 4))))
    out, inp = (int(v) for v in rng.integers(1, 129, size=2))
    return (out, inp) + kernel, 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    worst = {dtype: (0.0, None) for dtype in DTYPES}
    for _ in range(args.samples):
        shape, groups = random_layer(rng)
        low = eoi_core.min_density(shape, groups)
        density = float(low + (1 - low) * rng.random() ** 3)
        gain = float(rng.choice([1.0, 1.0247, 2.0]))
        seed = int(rng.integers(2**32))
        for dtype in DTYPES:
            weight, _ = eoi_core.sparse_orthogonal(shape, density, gain=gain, dtype=dtype, rng=seed, groups=groups)
            error = eoi_core.orthogonality_error(weight, gain=gain, groups=groups)
            ratio = error / (eps(dtype) * gain**2 * math.sqrt(max(shape[0], shape[1])))
            if ratio > worst[dtype][0]:
                worst[dtype] = (ratio, (shape, round(density, 4), gain, error))
    print(f"{'dtype':<10} {'worst ratio':>12}  {'max abs error':>14}  at (shape, density, gain)")
    for dtype, (ratio, where) in worst.items():
        shape, density, gain, error = where
        print(f"{dtype:<10} {ratio:>12.3f}  {error:>14.3e}  {shape}, {density}, {gain}")


if __name__ == "__main__":
    main()
