"""eoi_keras.EOI on the default Keras backend: layouts, groups, seeds, config, errors.

The same behaviour on all three backends (with fit/save/load) is checked by
test_keras_backends.py.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
import eoi_keras
from eoi_core.kernels import kernel_layout
from eoi_core.layout import from_channels_last, to_channels_last

ATOL32 = 2e-6

# Keras' TF backend converts variables with np.array(tf.Variable), whose __array__
# predates NumPy 2's `copy` keyword; the warning is Keras', not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def assert_block_orthogonal(kernel: np.ndarray, groups: int, gain: float = 1.0) -> None:
    canonical = from_channels_last(kernel.astype(np.float64))
    assert eoi_core.orthogonality_error(canonical, gain=gain, groups=groups) <= ATOL32 * gain**2
    if canonical.ndim > 2:
        centre = (slice(None), slice(None)) + tuple((k - 1) // 2 for k in canonical.shape[2:])
        off_centre = canonical.copy()
        off_centre[centre] = 0
        assert not off_centre.any(), "a non-centre tap is non-zero"


@st.composite
def keras_shapes(draw):
    """A feasible (Keras shape, groups, density) for Dense or Conv1D/2D/3D kernels."""
    rank = draw(st.integers(2, 5))
    groups = 1 if rank == 2 else draw(st.sampled_from([1, 2, 3]))
    in_per_group = draw(st.integers(1, 6))
    out = groups * draw(st.integers(1, 6))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank - 2))
    shape = kernel + (in_per_group, out)
    canonical = (out, in_per_group) + kernel
    low = eoi_core.min_density(canonical, groups)
    density = draw(st.floats(min(1.0, low * 1.0001), 1.0, allow_subnormal=False))
    return shape, groups, density


@settings(max_examples=40, deadline=None)
@given(keras_shapes(), st.integers(0, 2**32))
def test_eoi_is_the_core_in_keras_layout(case, seed):
    shape, groups, density = case
    canonical = (shape[-1], shape[-2]) + shape[:-2]
    init = eoi_keras.EOI(density, seed=seed, groups=groups, layout="dense" if len(shape) == 2 else "conv")
    weight, mask = init.weight_and_mask(shape)
    expected_weight, expected_mask = eoi_core.sparse_orthogonal(canonical, density, rng=seed, groups=groups)
    assert weight.shape == mask.shape == shape
    np.testing.assert_array_equal(weight, to_channels_last(expected_weight))
    np.testing.assert_array_equal(mask, to_channels_last(expected_mask))
    # Exact count per group block, weight support inside the mask, block orthogonality.
    per_block = from_channels_last(mask).reshape(groups, -1).sum(axis=1)
    assert np.all(per_block == eoi_core.mask_count(density, mask.size // groups))
    assert not weight[~mask].any()
    assert_block_orthogonal(weight, groups)
    # __call__ returns the same weight as a backend tensor.
    np.testing.assert_array_equal(numpy(init(shape)), weight)


def test_dense_kernel_layout_and_norm_preservation():
    layer = keras.layers.Dense(24, use_bias=False, kernel_initializer=eoi_keras.EOI(0.2, gain=2.0, seed=0))
    x = np.random.default_rng(0).standard_normal((5, 16)).astype("float32")
    y = numpy(layer(x))
    kernel = numpy(layer.kernel)
    assert kernel.shape == (16, 24)
    # in <= out: W W^T = gain^2 I, so the layer scales every norm by the gain.
    np.testing.assert_allclose(kernel.astype(np.float64) @ kernel.T, 4.0 * np.eye(16), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 2.0 * np.linalg.norm(x, axis=1), rtol=1e-5)
    # out < in: W^T W = I instead.
    wide = keras.layers.Dense(8, kernel_initializer=eoi_keras.EOI(0.2, seed=1))
    wide.build((None, 16))
    kernel = numpy(wide.kernel).astype(np.float64)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(8), atol=1e-6)


@pytest.mark.parametrize(
    "layer_type, spatial",
    [(keras.layers.Conv1D, (9,)), (keras.layers.Conv2D, (7, 7)), (keras.layers.Conv3D, (5, 5, 5))],
)
@pytest.mark.parametrize("groups", [1, 2])
def test_grouped_convolutions_are_block_orthogonal_and_preserve_norms(layer_type, spatial, groups):
    density = 0.15
    layer = layer_type(
        8, 3, padding="same", groups=groups, use_bias=False,
        kernel_initializer=eoi_keras.EOI(density, seed=3, groups=groups),
    )
    x = np.random.default_rng(1).standard_normal((2, *spatial, 4)).astype("float32")
    y = numpy(layer(x))
    kernel = numpy(layer.kernel)
    assert kernel.shape == (3,) * len(spatial) + (4 // groups, 8)
    assert_block_orthogonal(kernel, groups)
    # in/g <= out/g: each block is an isometry, so every pixel keeps its norm.
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5, atol=1e-6)
    # Exactly mask_count non-zeros or fewer per group (the rest of the mask is zero-valued fill).
    _, mask = eoi_keras.EOI(density, seed=3, groups=groups, layout="conv").weight_and_mask(kernel.shape)
    per_block = from_channels_last(mask).reshape(groups, -1).sum(axis=1)
    assert np.all(per_block == eoi_core.mask_count(density, kernel.size // groups))
    assert not kernel[~mask].any()


def test_einsum_dense_with_a_2d_kernel():
    layer = keras.layers.EinsumDense("ab,bc->ac", output_shape=32, kernel_initializer=eoi_keras.EOI(0.3, seed=2))
    layer.build((None, 16))
    kernel = numpy(layer.kernel)
    np.testing.assert_allclose(kernel.astype(np.float64) @ kernel.T, np.eye(16), atol=1e-6)
    # An equation that stores the kernel as (out, in) gets the transposed sense,
    # still semi-orthogonal: the smaller side is orthonormal.
    layer = keras.layers.EinsumDense("ab,cb->ac", output_shape=32, kernel_initializer=eoi_keras.EOI(0.3, seed=2))
    x = np.random.default_rng(2).standard_normal((3, 16)).astype("float32")
    y = numpy(layer(x))
    kernel = numpy(layer.kernel).astype(np.float64)
    assert kernel.shape == (32, 16)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(16), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)


def test_center_density_variants():
    shape = (3, 3, 16, 16)
    for center_density, centre_count in [(None, eoi_core.mask_count(0.1, 256)),
                                         ("sqrt", eoi_core.mask_count(math.sqrt(0.1), 256)),
                                         (0.5, 128)]:
        init = eoi_keras.EOI(0.1, center_density=center_density, seed=4, layout="conv")
        weight, mask = init.weight_and_mask(shape)
        assert mask.sum() == eoi_core.mask_count(0.1, mask.size)
        assert mask[1, 1].sum() >= centre_count  # the Givens support, plus any fill landing there
        assert np.count_nonzero(weight[1, 1]) <= centre_count
        assert_block_orthogonal(weight, 1)


def test_seed_semantics_follow_keras():
    shape = (12, 20)
    # int: stateless, the same on every call and for every instance.
    assert np.array_equal(numpy(eoi_keras.EOI(0.4, seed=5)(shape)), numpy(eoi_keras.EOI(0.4, seed=5)(shape)))
    assert not np.array_equal(numpy(eoi_keras.EOI(0.4, seed=5)(shape)), numpy(eoi_keras.EOI(0.4, seed=6)(shape)))
    # None: one seed per instance, drawn when it is made, from the stream set_random_seed seeds.
    unseeded = eoi_keras.EOI(0.4)
    assert np.array_equal(numpy(unseeded(shape)), numpy(unseeded(shape)))
    keras.utils.set_random_seed(3)
    first = numpy(eoi_keras.EOI(0.4)(shape))
    second = numpy(eoi_keras.EOI(0.4)(shape))
    keras.utils.set_random_seed(3)
    assert np.array_equal(numpy(eoi_keras.EOI(0.4)(shape)), first)
    assert np.array_equal(numpy(eoi_keras.EOI(0.4)(shape)), second)
    assert not np.array_equal(first, second)
    # SeedGenerator: a new draw on every call, a reproducible sequence.
    sequences = []
    for _ in range(2):
        init = eoi_keras.EOI(0.4, seed=keras.random.SeedGenerator(8))
        sequences.append([numpy(init(shape)) for _ in range(3)])
    for a, b in zip(*sequences):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sequences[0][0], sequences[0][1])
    assert not np.array_equal(sequences[0][1], sequences[0][2])


@pytest.mark.parametrize(
    "seed", [None, 11, "generator"], ids=["unseeded", "int", "seed-generator"]
)
def test_config_round_trip(seed):
    if seed == "generator":
        seed = keras.random.SeedGenerator(13)
    init = eoi_keras.EOI(0.25, gain=1.5, center_density="sqrt", seed=seed, groups=2, layout="conv")
    config = init.get_config()
    assert config["density"] == 0.25 and config["gain"] == 1.5 and config["groups"] == 2
    assert config["layout"] == "conv"
    assert config["center_density"] == "sqrt"
    serialized = keras.initializers.serialize(init)
    assert keras.saving.get_registered_name(eoi_keras.EOI) == "eoi>EOI"
    clone = keras.initializers.deserialize(serialized)
    assert isinstance(clone, eoi_keras.EOI)
    assert clone.get_config() == config
    if isinstance(seed, int):
        shape = (3, 3, 4, 8)
        np.testing.assert_array_equal(numpy(clone(shape)), numpy(init(shape)))
    if seed is None:
        assert config["seed"] is None  # as Keras: an unseeded clone is unseeded
    # Also by name, the way a saved layer config refers to it.
    assert isinstance(keras.initializers.get({"class_name": "eoi>EOI", "config": config}), eoi_keras.EOI)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_float_dtypes(dtype):
    value = eoi_keras.EOI(0.5, seed=1)((10, 6), dtype=dtype)
    expected = dtype
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        # JAX stores float64 only with x64 enabled (test_keras_backends enables it).
        expected = "float64" if jax.config.jax_enable_x64 else "float32"
    assert keras.backend.standardize_dtype(value.dtype) == expected
    array = numpy(keras.ops.cast(value, "float32")).astype(np.float64)
    tolerance = {"float16": 4e-3, "bfloat16": 3e-2, "float32": ATOL32, "float64": ATOL32}[dtype]
    assert eoi_core.orthogonality_error(from_channels_last(array)) <= tolerance


# ----------------------------------------------------------------------------- errors


def test_bias_shape_raises_when_keras_builds_the_layer():
    layer = keras.layers.Dense(4, bias_initializer=eoi_keras.EOI(0.5))
    with pytest.raises(ValueError, match=r"rank-1 .*bias"):
        layer.build((None, 8))


def test_infeasible_density_raises_when_keras_builds_the_layer():
    layer = keras.layers.Dense(64, kernel_initializer=eoi_keras.EOI(0.001))
    with pytest.raises(ValueError, match=r"\(64, 64\).*infeasible.*min_density = 0.015625"):
        layer.build((None, 64))
    conv = keras.layers.Conv2D(8, 3, groups=2, kernel_initializer=eoi_keras.EOI(0.02, groups=2))
    with pytest.raises(ValueError, match="infeasible"):
        conv.build((None, 6, 6, 8))


def test_non_float_dtype_raises_when_keras_calls_the_initializer():
    layer = keras.layers.Layer()
    with pytest.raises(TypeError, match=r"dtype.*int32"):
        layer.add_weight(shape=(4, 4), initializer=eoi_keras.EOI(0.5), dtype="int32")
    with pytest.raises(TypeError, match=r"dtype.*bool"):
        eoi_keras.EOI(0.5)((4, 4), dtype="bool")


def test_groups_that_do_not_divide_the_output_raise():
    layer = keras.layers.Conv2D(8, 3, kernel_initializer=eoi_keras.EOI(0.5, groups=3))
    with pytest.raises(ValueError, match=r"groups=3"):
        layer.build((None, 6, 6, 3))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"density": 0.0}, ValueError, r"density must lie in \(0, 1\], got 0.0"),
        ({"density": 1.5}, ValueError, r"density must lie in \(0, 1\], got 1.5"),
        ({"density": float("nan")}, ValueError, "density must be a finite"),
        ({"density": "0.5"}, TypeError, "density must be a real number"),
        ({"density": 0.5, "gain": 0.0}, ValueError, "gain"),
        ({"density": 0.5, "center_density": "cube"}, ValueError, "center_density"),
        ({"density": 0.5, "center_density": 2.0}, ValueError, "center_density"),
        ({"density": 0.5, "groups": 0}, ValueError, "groups"),
        ({"density": 0.5, "groups": 1.0}, TypeError, "groups"),
        ({"density": 0.5, "seed": -1}, ValueError, "seed must be a non-negative integer"),
        ({"density": 0.5, "seed": 1.5}, TypeError, "seed"),
        ({"density": 0.5, "seed": True}, TypeError, "seed"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        eoi_keras.EOI(**kwargs)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_bias_ranks_raise(shape):
    with pytest.raises(ValueError, match="rank >= 2"):
        eoi_keras.EOI(0.5)(shape)


def test_rank_beyond_convolutions_raises():
    with pytest.raises(ValueError, match="rank 3 to 5"):
        eoi_keras.EOI(0.5, layout="conv")((2, 2, 2, 2, 2, 2))


def test_center_density_float_on_a_dense_kernel_raises_like_the_core():
    with pytest.raises(ValueError, match="center_density") as keras_error:
        eoi_keras.EOI(0.5, center_density=0.5)((8, 8))
    with pytest.raises(ValueError, match="center_density") as core_error:
        eoi_core.sparse_orthogonal((8, 8), 0.5, center_density=0.5)
    assert str(core_error.value) in str(keras_error.value)


# ----------------------------------------------------------------------------- layouts


def canonical(kernel: np.ndarray, layout: str, **options) -> tuple[np.ndarray, int]:
    kl = kernel_layout(kernel.shape, layout, **options)
    return kl.to_canonical(kernel.astype(np.float64)), kl.groups


def test_an_unknown_rank3_kernel_is_an_error_naming_the_layout_option():
    with pytest.raises(ValueError, match=r"pass layout=.*'depthwise'"):
        eoi_keras.EOI(0.3)((64, 4, 16))
    layer = keras.layers.Layer()
    with pytest.raises(ValueError, match=r"Layer .*pass layout="):
        with keras.name_scope("custom", caller=layer):
            layer.add_weight(shape=(3, 3, 4, 8), initializer=eoi_keras.EOI(0.3))


def test_attention_kernels_are_orthogonal_per_head_without_dead_rows():
    # The case: 4 heads of 16 on 64 features.
    attention = keras.layers.MultiHeadAttention(4, 16, kernel_initializer=eoi_keras.EOI(0.3, seed=1))
    x = np.zeros((2, 5, 64), "float32")
    attention(x, x)
    for projection in (attention._query_dense, attention._key_dense, attention._value_dense):
        kernel = numpy(projection.kernel)
        assert kernel.shape == (64, 4, 16)
        assert np.all(np.abs(kernel).reshape(64, -1).sum(axis=1) > 0), "an input row is all zero"
        matrix, heads = canonical(kernel, "einsum", groups=4)
        assert heads == 4 and eoi_core.orthogonality_error(matrix, groups=4) <= ATOL32
    output = numpy(attention._output_dense.kernel)
    assert output.shape == (4, 16, 64)
    matrix, _ = canonical(output, "einsum", in_axes=2)
    assert eoi_core.orthogonality_error(matrix) <= ATOL32
    assert np.all(np.abs(output).reshape(64, 64).sum(axis=1) > 0), "a head is dropped"


def test_einsum_dense_3d_kernel_flattens_its_axes():
    layer = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 4, 16),
                                     kernel_initializer=eoi_keras.EOI(0.3, seed=3))
    layer.build((None, 5, 64))
    matrix, _ = canonical(numpy(layer.kernel), "einsum")
    assert eoi_core.orthogonality_error(matrix) <= ATOL32


@pytest.mark.parametrize("layer_type", [keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_kernels_have_one_orthogonal_block_per_channel(layer_type, multiplier):
    layer = layer_type(3, depth_multiplier=multiplier, depthwise_initializer=eoi_keras.EOI(0.2, seed=2))
    spatial = (8,) * (1 if layer_type is keras.layers.DepthwiseConv1D else 2)
    layer.build((None, *spatial, 16))
    kernel = numpy(layer.kernel)
    # No channel is dead (the issue measured 13 of 16 all zero).
    assert np.all(np.abs(kernel).reshape(-1, 16, multiplier).sum(axis=(0, 2)) > 0)
    matrix, blocks = canonical(kernel, "depthwise")
    assert blocks == 16 and eoi_core.orthogonality_error(matrix, groups=16) <= ATOL32


def test_separable_conv_reads_its_two_kernels():
    layer = keras.layers.SeparableConv2D(8, 3, depth_multiplier=2, depthwise_initializer=eoi_keras.EOI(0.2, seed=2),
                                         pointwise_initializer=eoi_keras.EOI(0.5, seed=3))
    layer.build((None, 8, 8, 16))
    depthwise, blocks = canonical(numpy(layer.depthwise_kernel), "depthwise")
    assert eoi_core.orthogonality_error(depthwise, groups=blocks) <= ATOL32
    # A (2 x 1) block per channel: a unit column, so no channel is all zero.
    assert np.all(np.abs(numpy(layer.depthwise_kernel)).sum(axis=(0, 1, 3)) > 0)
    pointwise, _ = canonical(numpy(layer.pointwise_kernel), "conv")
    assert eoi_core.orthogonality_error(pointwise) <= ATOL32


@pytest.mark.parametrize("layer_type, gates", [(keras.layers.LSTM, 4), (keras.layers.GRU, 3), (keras.layers.SimpleRNN, 1)])
def test_recurrent_kernels_are_orthogonal_per_gate(layer_type, gates):
    layer = layer_type(8, kernel_initializer=eoi_keras.EOI(0.5, seed=1), recurrent_initializer=eoi_keras.EOI(0.4, seed=2))
    layer.build((None, 5, 12))
    for kernel in (numpy(layer.cell.kernel), numpy(layer.cell.recurrent_kernel)):
        matrix, blocks = canonical(kernel, "gates", gates=gates)
        assert blocks == gates and eoi_core.orthogonality_error(matrix, groups=gates) <= ATOL32
        # Every gate sees every input: no all-zero gate column block.
        assert np.all(np.abs(kernel).reshape(kernel.shape[0], gates, 8).sum(axis=0) > 0)


@pytest.mark.parametrize("layer_type, rank", [(keras.layers.Conv1DTranspose, 1), (keras.layers.Conv2DTranspose, 2)])
def test_transposed_convolutions_are_delta_orthogonal(layer_type, rank):
    layer = layer_type(8, 3, padding="same", use_bias=False, kernel_initializer=eoi_keras.EOI(0.3, seed=1))
    x = np.random.default_rng(0).standard_normal((2, *(6,) * rank, 4)).astype("float32")
    y = numpy(layer(x))
    kernel = numpy(layer.kernel)
    assert kernel.shape == (3,) * rank + (8, 4)
    assert eoi_core.orthogonality_error(canonical(kernel, "conv_transpose")[0]) <= ATOL32
    # in=4 <= out=8: y = H^T x at each position preserves norms.
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5, atol=1e-6)


def test_explicit_layout_wins_and_is_checked():
    init = eoi_keras.EOI(0.5, seed=0, layout="gates", gates=4)
    weight, _ = init.weight_and_mask((6, 16))
    matrix, blocks = canonical(weight, "gates", gates=4)
    assert eoi_core.orthogonality_error(matrix, groups=blocks) <= ATOL32
    with pytest.raises(ValueError, match="gates=3 must divide"):
        eoi_keras.EOI(0.5, layout="gates", gates=3)((6, 16))
    with pytest.raises(ValueError, match="layout must be"):
        eoi_keras.EOI(0.5, layout="rnn")


def test_seed_generator_works_when_fit_builds_the_model():
    class TwoLayers(keras.Model):  # subclassed: Keras builds it inside fit
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(16, kernel_initializer=eoi_keras.EOI(0.5, seed=keras.random.SeedGenerator(1)))
            self.out = keras.layers.Dense(2, kernel_initializer=eoi_keras.EOI(0.5, seed=keras.random.SeedGenerator(2)))

        def call(self, x):
            return self.out(self.hidden(x))

    kernels = []
    for _ in range(2):
        model = TwoLayers()
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        model.fit(np.ones((8, 4), "float32"), np.ones((8, 2), "float32"), epochs=1, verbose=0)
        kernels.append(numpy(model.hidden.kernel))
    # A fresh SeedGenerator(1) gives the same first draw: the two runs train the same model.
    np.testing.assert_array_equal(*kernels)
