"""Hypothesis strategies shared by the core's tests (the shared assertions are in ``_helpers``)."""
# Some framework libraries loaded in the same test process set flush-to-zero, so
# the float strategies below never ask for subnormals (no density is subnormal anyway).

from __future__ import annotations

from hypothesis import strategies as st

import eoi_core
from _helpers import as_float64, orthogonality_bound  # noqa: F401  (older imports; the one copy is there)

DTYPES = ["float16", "bfloat16", "float32", "float64"]


@st.composite
def dense_shapes(draw, max_dim: int = 48) -> tuple[int, int]:
    return (draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim)))


@st.composite
def kernel_shapes(draw, max_channels: int = 12) -> tuple[tuple[int, ...], int]:
    """A canonical conv shape ``(out, in // groups, *kernel)`` and its ``groups``."""
    groups = draw(st.integers(1, 3))
    out = groups * draw(st.integers(1, max_channels))
    inp = draw(st.integers(1, max_channels))
    kernel = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    return (out, inp) + kernel, groups


@st.composite
def feasible_density(draw, shape: tuple[int, ...], groups: int = 1) -> float:
    """A density in [min_density, 1], biased towards the sparse end."""
    low = eoi_core.min_density(shape, groups)
    return draw(st.one_of(st.just(low), st.just(1.0), st.floats(low, 1.0, allow_subnormal=False)))


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)


