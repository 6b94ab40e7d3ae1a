"""eoi_keras.sparsify, MaskConstraint and kernel_masks on the default Keras backend.

fit / save / load_model on all three backends are in test_keras_backends.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
import eoi_keras
from eoi_core import distributions
from eoi_core.layout import canonical_shape, from_channels_last
from eoi_keras.constraint import decode_mask, encode_mask

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def mixed_model() -> keras.Model:
    """Dense, grouped Conv1D/2D, Conv3D, 2-D and 3-D EinsumDense, unsupported layers, a nested model."""
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(12, name="inner_dense")], name="inner")
    image = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="conv2d")(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2DTranspose(4, 3, padding="same", name="transpose")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, name="dense")(x)
    x = inner(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=10, name="einsum2d")(x)
    x = keras.layers.EinsumDense("ab,bcd->acd", output_shape=(2, 5), name="einsum3d")(x)
    signal = keras.Input((9, 4))
    y = keras.layers.Conv1D(6, 3, groups=2, name="conv1d")(signal)
    y = keras.layers.GlobalAveragePooling1D()(y)
    volume = keras.Input((4, 4, 4, 2))
    z = keras.layers.Conv3D(4, 3, name="conv3d")(volume)
    z = keras.layers.GlobalAveragePooling3D()(z)
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(x), y, z])
    out = keras.layers.Dense(3, name="head")(merged)
    return keras.Model([image, signal, volume], out)


SUPPORTED = ["conv2d", "dense", "inner_dense", "einsum2d", "conv1d", "conv3d", "head"]


def layers_by_name(model) -> dict:
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)}


def test_sparsify_covers_supported_layers_with_exact_masks():
    model = mixed_model()
    kernels_before = {name: numpy(layer.kernel) for name, layer in layers_by_name(model).items()
                      if name in ("depthwise", "transpose", "einsum3d")}
    densities = eoi_keras.sparsify(model, 0.3, "erk", seed=0)
    assert sorted(densities) == sorted(SUPPORTED)
    layers = layers_by_name(model)
    # The densities are the core's for the canonical shapes and groups.
    shapes = [canonical_shape(tuple(layers[name].kernel.shape)) for name in densities]
    groups = [getattr(layers[name], "groups", 1) for name in densities]
    assert list(densities.values()) == distributions.layer_densities("erk", shapes, 0.3, groups=groups)
    sizes = [np.prod(shape) for shape in shapes]
    assert abs(sum(d * n for d, n in zip(densities.values(), sizes)) - 0.3 * sum(sizes)) < 1
    masks = eoi_keras.kernel_masks(model)
    assert sorted(masks) == sorted(SUPPORTED)
    for name, density in densities.items():
        layer, mask = layers[name], masks[name]
        layer_groups = getattr(layer, "groups", 1)
        kernel = numpy(layer.kernel)
        assert isinstance(layer.kernel.constraint, eoi_keras.MaskConstraint)
        assert layer.kernel_constraint is layer.kernel.constraint  # what get_config saves
        per_block = from_channels_last(mask).reshape(layer_groups, -1).sum(axis=1)
        assert np.all(per_block == eoi_core.mask_count(density, mask.size // layer_groups))
        assert not kernel[~mask].any()
        canonical = from_channels_last(kernel.astype(np.float64))
        assert eoi_core.orthogonality_error(canonical, groups=layer_groups) <= 2e-6
    # Unsupported layers are left alone.
    for name, before in kernels_before.items():
        np.testing.assert_array_equal(numpy(layers[name].kernel), before)
        assert layers[name].kernel.constraint is None


def test_int_seed_is_reproducible_and_seeds_differ():
    def masks(seed):
        model = mixed_model()
        eoi_keras.sparsify(model, 0.3, seed=seed)
        return eoi_keras.kernel_masks(model)

    first, again, other = masks(4), masks(4), masks(5)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert any(not np.array_equal(first[name], other[name]) for name in first)
    # One SeedGenerator gives every layer its own draw.
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(8)])
    eoi_keras.sparsify(model, 0.5, "uniform", seed=keras.random.SeedGenerator(1))
    kernels = [numpy(layer.kernel) for layer in model.layers]
    assert not np.array_equal(kernels[0], kernels[1])


def test_distribution_mapping_and_layer_selection():
    model = mixed_model()
    mapping = {"dense": 0.5, "head": 0.9}
    densities = eoi_keras.sparsify(model, None, mapping, layers=["dense", layers_by_name(model)["head"]], seed=1)
    assert densities == mapping
    masks = eoi_keras.kernel_masks(model)
    assert sorted(masks) == ["dense", "head"]
    assert masks["dense"].sum() == eoi_core.mask_count(0.5, masks["dense"].size)
    with pytest.raises(ValueError, match=r"no density for layers \['head'\]"):
        eoi_keras.sparsify(mixed_model(), None, {"dense": 0.5}, layers=["dense", "head"])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"layers": ["nope"]}, "'nope', which is not a layer of the model"),
        ({"layers": ["depthwise"]}, r"'depthwise' \(DepthwiseConv2D\) is not supported"),
        ({"layers": ["einsum3d"]}, "is not supported"),
        ({"distribution": "lognormal"}, "distribution must be one of"),
        ({"density": 1e-4}, "infeasible"),
        ({"density": 1.5}, r"density must lie in \(0, 1\]"),
        ({"seed": -3}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise_and_leave_the_model_unchanged(kwargs, pattern):
    model = mixed_model()
    before = [numpy(weight) for weight in model.weights]
    arguments = {"density": 0.3, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        eoi_keras.sparsify(model, **arguments)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(numpy(weight), value)
        assert weight.constraint is None


def test_a_failing_layer_leaves_every_kernel_unchanged():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32), keras.layers.Dense(32)])
    before = [numpy(layer.kernel) for layer in model.layers]
    names = [layer.name for layer in model.layers]
    # The second layer's density is infeasible; the first must not be written either.
    with pytest.raises(ValueError, match="infeasible"):
        eoi_keras.sparsify(model, None, {names[0]: 0.5, names[1]: 0.001})
    for layer, value in zip(model.layers, before):
        np.testing.assert_array_equal(numpy(layer.kernel), value)
        assert layer.kernel.constraint is None and layer.kernel_constraint is None


def test_unbuilt_models_and_non_models_are_rejected():
    model = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="not built"):
        eoi_keras.sparsify(model, 0.5)
    with pytest.raises(TypeError, match="keras.Model or keras.layers.Layer"):
        eoi_keras.sparsify(object(), 0.5)
    no_kernels = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer sparsify can handle"):
        eoi_keras.sparsify(no_kernels, 0.5)


def test_a_single_layer_can_be_sparsified():
    layer = keras.layers.Conv2D(8, 3, groups=4)
    layer.build((None, 5, 5, 8))
    assert eoi_keras.sparsify(layer, 0.25) == {layer.name: 0.25}
    mask = eoi_keras.kernel_masks(layer)[layer.name]
    assert np.all(from_channels_last(mask).reshape(4, -1).sum(axis=1) == eoi_core.mask_count(0.25, 36))


# ----------------------------------------------------------------------------- MaskConstraint


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_mask_encoding_round_trips(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.3
    config = encode_mask(mask)
    assert config["shape"] == shape
    np.testing.assert_array_equal(decode_mask(config["shape"], config["bits"]), mask)
    assert len(config["bits"]) == 4 * (((mask.size + 7) // 8 + 2) // 3)  # one bit per entry, base64


def test_mask_constraint_serializes_and_zeroes_exactly():
    mask = np.random.default_rng(0).random((5, 7)) < 0.4
    constraint = eoi_keras.MaskConstraint(mask)
    assert keras.saving.get_registered_name(eoi_keras.MaskConstraint) == "eoi>MaskConstraint"
    clone = keras.constraints.deserialize(keras.constraints.serialize(constraint))
    assert isinstance(clone, eoi_keras.MaskConstraint)
    np.testing.assert_array_equal(clone.mask, mask)
    weight = np.full((5, 7), np.nan, dtype="float32")
    weight[mask] = 2.0
    projected = numpy(clone(keras.ops.convert_to_tensor(weight)))
    assert np.all(projected[~mask] == 0)  # exactly 0, even where the update made NaN
    assert np.all(projected[mask] == 2.0)
    # The constraint keeps its own copy of the mask.
    mask[:] = True
    assert not constraint.mask.all()
    assert not constraint.mask.flags.writeable


def test_mask_constraint_errors():
    with pytest.raises(TypeError, match="boolean"):
        eoi_keras.MaskConstraint(np.ones((2, 2)))
    with pytest.raises(ValueError, match="rank >= 1"):
        eoi_keras.MaskConstraint(np.bool_(True))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 2\) but was applied to a weight of shape \(3, 2\)"):
        eoi_keras.MaskConstraint(np.ones((2, 2), dtype=bool))(keras.ops.ones((3, 2)))
    with pytest.raises(ValueError, match="bytes"):
        decode_mask([4, 4], encode_mask(np.ones((2, 2), dtype=bool))["bits"])


def test_mask_constraint_in_a_layer_keeps_the_mask_through_fit():
    # The constraint alone (no sparsify) with an EOI initializer: Keras' optimizer applies it.
    init = eoi_keras.EOI(0.3, seed=2)
    _, mask = init.weight_and_mask((6, 6))
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(6, kernel_initializer=init, kernel_constraint=eoi_keras.MaskConstraint(mask)),
    ])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((32, 6)), rng.standard_normal((32, 6)), epochs=1, verbose=0)
    kernel = numpy(model.layers[0].kernel)
    assert not kernel[~mask].any()
    assert np.count_nonzero(kernel) > 0


def test_sparsify_after_fit_masks_the_next_fit():
    # A model already trained (its train step traced without constraints) gets the masks applied.
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((32, 8)), rng.standard_normal((32, 2))
    model.fit(x, y, epochs=1, verbose=0)
    eoi_keras.sparsify(model, 0.4, "uniform", seed=3)
    model.fit(x, y, epochs=1, verbose=0)
    for layer in model.layers:
        mask = eoi_keras.kernel_masks(model)[layer.name]
        assert not numpy(layer.kernel)[~mask].any()
