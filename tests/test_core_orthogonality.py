"""Promise: exact (semi-)orthogonality at the rounding level of the output dtype."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _helpers import assert_orthogonal, gram_gap
from _strategies import DTYPES, dense_shapes, feasible_density, kernel_shapes, seeds


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=dense_shapes(), dtype=st.sampled_from(DTYPES), seed=seeds())
def test_dense_weight_is_orthogonal_in_its_own_dtype(data, shape, dtype, seed):
    density = data.draw(feasible_density(shape))
    gain = data.draw(st.sampled_from([1.0, 0.5, 2.0, 1.0247]))
    weight, _ = eoi_core.sparse_orthogonal(shape, density, gain=gain, dtype=dtype, rng=seed)
    assert weight.dtype.name == dtype
    error = assert_orthogonal(weight, gain=gain)
    assert eoi_core.orthogonality_error(weight, gain=gain) == error == gram_gap(weight, gain)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds())
def test_kernel_centre_blocks_are_orthogonal(data, layer, seed):
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    weight, _ = eoi_core.sparse_orthogonal(shape, density, groups=groups, dtype=np.float64, rng=seed)
    error = assert_orthogonal(weight, groups=groups)
    assert eoi_core.orthogonality_error(weight, groups=groups) == error


def test_large_float32_weight_is_orthogonal():
    weight, _ = eoi_core.sparse_orthogonal((1024, 512), 0.05, rng=0)
    assert_orthogonal(weight)


def test_density_one_is_a_dense_orthogonal_matrix():
    weight, mask = eoi_core.sparse_orthogonal((16, 16), 1.0, dtype=np.float64, rng=1)
    assert mask.all()
    assert_orthogonal(weight)
    # the Givens phase runs until every entry is in the support
    assert np.count_nonzero(weight) == weight.size
