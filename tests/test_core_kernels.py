"""eoi_core.kernels: channels-last layouts map to the canonical layout and back, blocks where promised."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from eoi_core.kernels import KERNEL_LAYOUTS, kernel_layout


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(KERNEL_LAYOUTS), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(0, 99))
def test_round_trip_and_orthogonal_blocks(layout, spatial_rank, a, b, seed):
    if layout in ("dense", "gates"):
        shape, options = (a * 2, b * 3), {"gates": 3} if layout == "gates" else {}
    elif layout == "einsum":
        shape, options = (a, b, 2), {"groups": b, "in_axes": 1}
    else:
        shape, options = (3,) * spatial_rank + (a, b), {}
    kl = kernel_layout(shape, layout, **options)
    array = np.random.default_rng(seed).standard_normal(shape)
    np.testing.assert_array_equal(kl.from_canonical(kl.to_canonical(array)), array)
    assert kl.to_canonical(array).shape == kl.canonical
    density = eoi_core.min_density(kl.canonical, kl.groups)
    weight, mask = eoi_core.sparse_orthogonal(kl.canonical, min(1.0, density * 1.5), groups=kl.groups, rng=seed)
    assert kl.from_canonical(weight).shape == shape and kl.from_canonical(mask).dtype == bool
    assert eoi_core.orthogonality_error(kl.to_canonical(kl.from_canonical(weight)), groups=kl.groups) < 1e-5


def test_conv_transpose_is_the_transposed_conv_weight():
    # Keras Conv2DTranspose(filters=8) on 4 channels: kernel (3, 3, out=8, in=4); PyTorch's
    # ConvTranspose2d weight is (in=4, out=8, 3, 3), whose centre H (4 x 8) maps x to H^T x.
    kl = kernel_layout((3, 3, 8, 4), "conv_transpose")
    assert (kl.canonical, kl.groups) == ((4, 8, 3, 3), 1)
    weight, _ = eoi_core.sparse_orthogonal(kl.canonical, 0.2, rng=0)
    kernel = kl.from_canonical(weight)
    centre = kernel[1, 1]  # (out, in)
    x = np.random.default_rng(1).standard_normal(4)
    np.testing.assert_allclose(np.linalg.norm(centre @ x), np.linalg.norm(x), rtol=1e-6)


@pytest.mark.parametrize(
    "shape, layout, options, pattern",
    [
        ((3, 3, 4), "dense", {}, "rank-2"),
        ((8, 8), "conv_transpose", {}, "rank 3 to 5"),
        ((8, 12), "gates", {}, "needs gates="),
        ((8, 12), "rnn", {}, "layout must be one of"),
    ],
)
def test_bad_layouts_raise(shape, layout, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        kernel_layout(shape, layout, **options)


def test_probe_error_is_rounding_level_for_eoi_and_large_otherwise():
    from eoi_core.verify import check_verify, orthogonality

    weight, _ = eoi_core.sparse_orthogonal((48, 16, 3, 3), 0.1, gain=1.5, groups=4, rng=3)
    assert orthogonality(weight, 1.5, 4, "probe") < 1e-5
    assert orthogonality(weight, 1.5, 4, "exact") < 1e-5
    assert orthogonality(weight, 1.5, 4, None) is None
    broken = weight.copy()
    broken[0, 0, 1, 1] += 0.1  # one entry of the first block's centre
    assert orthogonality(broken, 1.5, 4, "probe") > 1e-3
    with pytest.raises(ValueError, match="verify must be one of"):
        check_verify("always")
