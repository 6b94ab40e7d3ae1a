"""eoi_jax.eoi / eoi_with_mask: Flax models initialised under jit, keys, dtypes, layouts."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import eoi_core  # noqa: E402
import eoi_jax  # noqa: E402
from _strategies import orthogonality_bound  # noqa: E402
from eoi_core.layout import canonical_shape, from_channels_last, to_channels_last  # noqa: E402


class MLP(nn.Module):
    """32 -> 64 (isometry), 64 -> 64 with gain 2, 64 -> 10 (rows orthonormal)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64, kernel_init=eoi_jax.eoi(0.2))(x))
        x = nn.relu(nn.Dense(64, kernel_init=eoi_jax.eoi(0.1, gain=2.0))(x))
        return nn.Dense(10, kernel_init=eoi_jax.eoi(0.3))(x)


class CNN(nn.Module):
    """A plain 3x3 conv 4 -> 8 and a grouped one 8 -> 16 (feature_group_count=2)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), padding="CIRCULAR", use_bias=False, kernel_init=eoi_jax.eoi(0.3, layout="conv"))(x)
        return nn.Conv(
            16,
            (3, 3),
            padding="CIRCULAR",
            use_bias=False,
            feature_group_count=2,
            kernel_init=eoi_jax.eoi(0.3, center_density="sqrt", groups=2),
        )(x)


def _canonical(kernel) -> np.ndarray:
    return from_channels_last(np.asarray(kernel))


def _assert_trees_identical(left, right):
    assert jax.tree.structure(left) == jax.tree.structure(right)
    for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flax_mlp_init_under_jit_is_orthogonal_and_equals_eager_init():
    model, key, x = MLP(), jax.random.key(0), jnp.ones((2, 32))
    jitted = jax.jit(model.init)(key, x)
    _assert_trees_identical(jitted, model.init(key, x))

    params = jitted["params"]
    for name, gain, density in [("Dense_0", 1.0, 0.2), ("Dense_1", 2.0, 0.1), ("Dense_2", 1.0, 0.3)]:
        kernel = params[name]["kernel"]
        weight = _canonical(kernel)
        assert eoi_core.orthogonality_error(weight, gain=gain) <= orthogonality_bound("float32", gain, weight.shape)
        nonzeros = int(np.count_nonzero(weight))
        assert min(weight.shape) <= nonzeros <= eoi_core.mask_count(density, weight.size)
        np.testing.assert_array_equal(np.asarray(params[name]["bias"]), 0.0)  # biases keep Flax's init

    # Dense_0 maps 32 -> 64 with orthonormal columns of W = K^T: an isometry.
    inputs = jax.random.normal(jax.random.key(1), (5, 32))
    outputs = inputs @ params["Dense_0"]["kernel"]
    np.testing.assert_allclose(jnp.linalg.norm(outputs, axis=1), jnp.linalg.norm(inputs, axis=1), rtol=1e-5)


def test_flax_grouped_cnn_is_delta_orthogonal_block_by_block_and_preserves_norms():
    model, key = CNN(), jax.random.key(2)
    x = jax.random.normal(jax.random.key(3), (3, 8, 8, 4))
    variables = jax.jit(model.init)(key, x)
    _assert_trees_identical(variables, model.init(key, x))

    plain = variables["params"]["Conv_0"]["kernel"]
    grouped = variables["params"]["Conv_1"]["kernel"]
    assert plain.shape == (3, 3, 4, 8) and grouped.shape == (3, 3, 4, 16)  # (*kernel, in // groups, out)
    for kernel, groups in [(plain, 1), (grouped, 2)]:
        weight = _canonical(kernel)
        assert eoi_core.orthogonality_error(weight, groups=groups) <= orthogonality_bound("float32", 1.0, weight.shape)
        off_centre = np.asarray(kernel).copy()
        off_centre[1, 1] = 0.0
        assert not off_centre.any()  # every tap but the centre is zero

    # Circular padding, stride 1, out/g >= in/g: each conv is an isometry, which
    # only holds if Flax's output-channel grouping matches the canonical blocks.
    y = model.apply(variables, x)
    hidden = nn.Conv(8, (3, 3), padding="CIRCULAR", use_bias=False).apply({"params": {"kernel": plain}}, x)
    for before, after in [(x, hidden), (hidden, y)]:
        np.testing.assert_allclose(
            jnp.linalg.norm(after.reshape(3, -1), axis=1), jnp.linalg.norm(before.reshape(3, -1), axis=1), rtol=1e-5
        )


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey], ids=["typed", "raw"])
def test_init_is_the_core_result_for_the_key_seed_in_flax_layout(make_key):
    key = make_key(11)
    assert eoi_jax.key_seed(key) == 11
    shape = (3, 3, 6, 12)  # Flax (*kernel, in, out)
    weight, mask = eoi_jax.eoi_with_mask(key, shape, 0.15, groups=3)
    core_weight, core_mask = eoi_core.sparse_orthogonal(canonical_shape(shape), 0.15, rng=11, groups=3)
    np.testing.assert_array_equal(np.asarray(weight), to_channels_last(core_weight))
    np.testing.assert_array_equal(np.asarray(mask), to_channels_last(core_mask))
    np.testing.assert_array_equal(np.asarray(eoi_jax.eoi(0.15, groups=3)(key, shape)), np.asarray(weight))


def test_same_key_reproduces_and_split_keys_differ():
    init = eoi_jax.eoi(0.25)
    key = jax.random.key(5)
    first = init(key, (24, 24))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(init(jax.random.key(5), (24, 24))))
    # (with JAX's partitionable threefry, fold_in(key, i) is split(key, n)[i]: not a new key)
    keys = [key, *jax.random.split(key, 3), jax.random.fold_in(key, 7), jax.random.key(6)]
    results = [eoi_jax.eoi_with_mask(k, (24, 24), 0.25) for k in keys]
    for i in range(len(results)):
        for j in range(i):
            assert not np.array_equal(results[i][0], results[j][0])
            assert not np.array_equal(results[i][1], results[j][1])
    # a key's seed uses every word, so keys that differ in either word differ
    assert len({eoi_jax.key_seed(k) for k in keys}) == len(keys)


def test_vmap_over_keys_equals_one_init_per_key():
    keys = jax.random.split(jax.random.key(7), 4)
    init = eoi_jax.eoi(0.3, center_density="sqrt", layout="conv")
    batched = jax.jit(jax.vmap(lambda k: init(k, (3, 8, 8))))(keys)
    assert batched.shape == (4, 3, 8, 8)
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(init(keys[i], (3, 8, 8))))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_dtypes_are_cast_once_by_the_core(dtype):
    key, shape = jax.random.key(9), (48, 32)
    weight = jax.jit(lambda k: eoi_jax.eoi(0.2)(k, shape, dtype))(key)
    assert weight.dtype == dtype
    name = np.dtype(dtype).name
    core_weight, _ = eoi_core.sparse_orthogonal(canonical_shape(shape), 0.2, rng=9, dtype=name)
    np.testing.assert_array_equal(np.asarray(weight), to_channels_last(core_weight))
    canonical = _canonical(weight)
    assert eoi_core.orthogonality_error(canonical) <= orthogonality_bound(name, 1.0, canonical.shape)


def test_default_dtype_follows_jax_and_flax_param_dtype():
    key = jax.random.key(0)
    assert eoi_jax.eoi(0.5)(key, (4, 4)).dtype == jnp.float32
    assert eoi_jax.eoi(0.5, dtype=jnp.bfloat16)(key, (4, 4)).dtype == jnp.bfloat16
    # without x64, a float64 request gives float32 and a warning, as for jax.nn.initializers
    with pytest.warns(UserWarning, match="float64 is not available"):
        assert eoi_jax.eoi(0.5)(key, (4, 4), jnp.float64).dtype == jnp.float32
    layer = nn.Dense(8, param_dtype=jnp.bfloat16, kernel_init=eoi_jax.eoi(0.5))
    assert layer.init(key, jnp.ones((1, 8)))["params"]["kernel"].dtype == jnp.bfloat16


@st.composite
def flax_layers(draw):
    """A Flax kernel shape (in, out) or (*kernel, in // groups, out), its groups and a feasible density."""
    groups = draw(st.integers(1, 3))
    out = groups * draw(st.integers(1, 8))
    inp = draw(st.integers(1, 8))
    kernel = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    if not kernel:
        groups, out = 1, draw(st.integers(1, 24))
    shape = kernel + (inp, out)
    low = eoi_core.min_density(canonical_shape(shape), groups)
    density = draw(st.one_of(st.just(low), st.just(1.0), st.floats(low, 1.0, allow_subnormal=False)))
    return shape, groups, density


@settings(max_examples=20, deadline=None)
@given(layer=flax_layers(), seed=st.integers(0, 2**32 - 1))
def test_any_flax_shape_jit_equals_eager_equals_core_with_exact_mask_counts(layer, seed):
    shape, groups, density = layer
    key = jax.random.key(seed)
    layout = "dense" if len(shape) == 2 else "conv"
    make = jax.jit(lambda k: eoi_jax.eoi_with_mask(k, shape, density, groups=groups, layout=layout))
    weight, mask = make(key)
    eager_weight, eager_mask = eoi_jax.eoi_with_mask(key, shape, density, groups=groups, layout=layout)
    np.testing.assert_array_equal(np.asarray(weight), np.asarray(eager_weight))
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(eager_mask))
    core_weight, _ = eoi_core.sparse_orthogonal(canonical_shape(shape), density, rng=seed, groups=groups)
    np.testing.assert_array_equal(np.asarray(weight), to_channels_last(core_weight))

    assert mask.dtype == jnp.bool_ and mask.shape == shape
    assert not np.any(np.asarray(weight)[~np.asarray(mask)])  # non-zeros inside the mask
    per_group = shape[-1] // groups
    block_size = mask.size // groups
    for group in range(groups):
        block = np.asarray(mask)[..., group * per_group : (group + 1) * per_group]
        assert block.sum() == eoi_core.mask_count(density, block_size)
