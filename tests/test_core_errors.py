"""Promise: bad input raises a clear TypeError/ValueError naming the argument and what is allowed."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import eoi_core

SHAPE = (16, 8)


def call(**overrides):
    arguments = {"shape": SHAPE, "density": 0.5}
    arguments.update(overrides)
    shape = arguments.pop("shape")
    density = arguments.pop("density")
    return eoi_core.sparse_orthogonal(shape, density, **arguments)


@pytest.mark.parametrize(
    ("density", "error", "match"),
    [
        (math.nan, ValueError, "density must be a finite number"),
        (math.inf, ValueError, "density must be a finite number"),
        (-math.inf, ValueError, "density must be a finite number"),
        (0.0, ValueError, r"density must lie in \(0, 1\]"),
        (-0.1, ValueError, r"density must lie in \(0, 1\]"),
        (1.5, ValueError, r"density must lie in \(0, 1\]"),
        ("0.5", TypeError, "density must be a real number"),
        (None, TypeError, "density must be a real number"),
        (True, TypeError, "density must be a real number"),
    ],
)
def test_bad_density(density, error, match):
    with pytest.raises(error, match=match):
        call(density=density)


def test_density_below_the_orthogonal_floor_names_the_minimum():
    minimum = eoi_core.min_density((64, 32))
    assert minimum == 32 / (64 * 32)
    with pytest.raises(ValueError, match=r"min_density = 0\.015625") as info:
        eoi_core.sparse_orthogonal((64, 32), 0.005)
    assert "(64, 32)" in str(info.value) and "0.005" in str(info.value)
    eoi_core.sparse_orthogonal((64, 32), minimum)  # the floor itself is feasible
    # The message states exactly what is accepted: round half up reaches the floor
    # from (floor - 0.5) / size, and no lower.
    accepted = (32 - 0.5) / (64 * 32)
    assert "densities from 0.0153809 up are accepted" in str(info.value)
    eoi_core.sparse_orthogonal((64, 32), accepted * (1 + 1e-12))
    with pytest.raises(ValueError, match="infeasible"):
        eoi_core.sparse_orthogonal((64, 32), accepted * (1 - 1e-9))


def test_kernel_floor_is_judged_on_the_layer_budget():
    minimum = eoi_core.min_density((16, 16, 3, 3))
    assert minimum == 16 / (16 * 16 * 9)
    eoi_core.sparse_orthogonal((16, 16, 3, 3), minimum, rng=0)
    with pytest.raises(ValueError, match="min_density"):
        eoi_core.sparse_orthogonal((16, 16, 3, 3), minimum / 2)


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [
        ((), ValueError, "rank 0"),
        ((5,), ValueError, "rank 1"),
        ((2, 2, 2, 2, 2, 2), ValueError, "rank 6"),
        (5, TypeError, "shape must be a sequence"),
        ("55", TypeError, "shape must be a sequence"),
        ((0, 4), ValueError, r"shape\[0\] must be an integer >= 1"),
        ((4, -3), ValueError, r"shape\[1\] must be an integer >= 1"),
        ((4.0, 4), TypeError, r"shape\[0\] must be an integer"),
        ((4, True), TypeError, r"shape\[1\] must be an integer"),
        ((4, "4"), TypeError, r"shape\[1\] must be an integer"),
    ],
)
def test_bad_shape(shape, error, match):
    with pytest.raises(error, match=match):
        call(shape=shape)


def test_numpy_integer_dims_are_accepted():
    weight, _ = call(shape=(np.int64(8), np.int32(4)))
    assert weight.shape == (8, 4)


@pytest.mark.parametrize(("groups", "error"), [(3, ValueError), (0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_groups(groups, error):
    with pytest.raises(error, match="groups"):
        call(shape=(16, 8, 3), groups=groups)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool, np.complex64, object, "float128", "banana"])
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be one of"):
        call(dtype=dtype)


@pytest.mark.parametrize(
    ("center_density", "error", "match"),
    [
        (0.01, ValueError, "center_density=0.01 gives the centre"),  # below the floor of 8
        (1.0, ValueError, "block budget"),  # 256 entries do not fit a budget of 230
        ("cube", ValueError, "center_density must be None, a float"),
        (math.nan, ValueError, "center_density must be a finite number"),
        (2.0, ValueError, r"center_density must lie in \(0, 1\]"),
        ([0.5], TypeError, "center_density must be a real number"),
    ],
)
def test_bad_center_density(center_density, error, match):
    with pytest.raises(error, match=match):
        eoi_core.sparse_orthogonal((16, 16, 3, 3), 0.1, center_density=center_density)


@pytest.mark.parametrize("rng", ["0", 1.5, np.random.RandomState(0), [1, 2], True])
def test_bad_rng(rng):
    with pytest.raises(TypeError, match="rng must be None, a non-negative int or a numpy.random.Generator"):
        call(rng=rng)


def test_negative_seed():
    with pytest.raises(ValueError, match="non-negative"):
        call(rng=-1)


@pytest.mark.parametrize(
    ("gain", "error"), [(math.nan, ValueError), (math.inf, ValueError), (0.0, ValueError), (-1.0, ValueError), ("1", TypeError)]
)
def test_bad_gain(gain, error):
    with pytest.raises(error, match="gain must be a finite positive real number"):
        call(gain=gain)


def test_bad_engine():
    with pytest.raises(ValueError, match="engine must be one of"):
        call(engine="cuda")


def test_bad_givens_compose_arguments():
    with pytest.raises(ValueError, match="rotations must be an integer >= 0"):
        eoi_core.givens_compose(4, 4, -1)
    with pytest.raises(ValueError, match="1 x 1"):
        eoi_core.givens_compose(1, 1, 3)
    with pytest.raises(TypeError, match="rotations must be an integer"):
        eoi_core.expected_density(4, 4, 1.5)


def test_density_one_works_everywhere():
    weight, mask = eoi_core.sparse_orthogonal((8, 4, 3, 3), 1.0, groups=2, rng=0)
    assert mask.all()


def test_importing_the_core_does_not_import_numba():
    # Keeps `import eoi_core` well under a second: Numba is imported on first use.
    code = "import sys, eoi_core; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
