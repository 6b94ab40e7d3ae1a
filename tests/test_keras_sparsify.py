"""eoi_keras.sparsify, MaskConstraint and kernel_masks on the default Keras backend.

fit / save / load on all three backends are in test_keras_backends.py.
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
from eoi_core.kernels import kernel_layout
from eoi_core.report import SparsifyReport

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def mixed_model() -> keras.Model:
    """Every layout sparsify knows, an embedding it skips, and a nested model."""
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(12, name="inner_dense")], name="inner")
    image = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="conv2d")(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="separable")(x)
    x = keras.layers.Conv2DTranspose(4, 3, padding="same", name="transpose")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, name="dense")(x)
    x = inner(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=10, name="einsum2d")(x)
    x = keras.layers.EinsumDense("ab,bcd->acd", output_shape=(2, 5), name="einsum3d")(x)
    tokens = keras.Input((7,), dtype="int32")
    t = keras.layers.Embedding(20, 8, name="embedding")(tokens)
    t = keras.layers.MultiHeadAttention(2, 4, name="attention")(t, t)
    t = keras.layers.LSTM(6, return_sequences=True, name="lstm")(t)
    t = keras.layers.GRU(5, name="gru")(t)
    signal = keras.Input((9, 4))
    y = keras.layers.Conv1D(6, 3, groups=2, name="conv1d")(signal)
    y = keras.layers.SimpleRNN(3, name="rnn")(y)
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(x), t, y])
    out = keras.layers.Dense(3, name="head")(merged)
    return keras.Model([image, tokens, signal], out)


SPARSIFIED = {
    # key: (layout, options) of kernel_layout
    "conv2d": ("conv", {"groups": 2}),
    "depthwise": ("depthwise", {}),
    "separable.depthwise_kernel": ("depthwise", {}),
    "separable.pointwise_kernel": ("conv", {}),
    "transpose": ("conv_transpose", {}),
    "dense": ("dense", {}),
    "inner/inner_dense": ("dense", {}),
    "einsum2d": ("einsum", {}),
    "einsum3d": ("einsum", {}),
    "attention/query": ("einsum", {"groups": 2}),
    "attention/key": ("einsum", {"groups": 2}),
    "attention/value": ("einsum", {"groups": 2}),
    "attention/attention_output": ("einsum", {"in_axes": 2}),
    "lstm/lstm_cell": ("gates", {"gates": 4}),
    "lstm/lstm_cell.recurrent_kernel": ("gates", {"gates": 4}),
    "gru/gru_cell": ("gates", {"gates": 3}),
    "gru/gru_cell.recurrent_kernel": ("gates", {"gates": 3}),
    "conv1d": ("conv", {"groups": 2}),
    "rnn/simple_rnn_cell": ("dense", {}),
    "rnn/simple_rnn_cell.recurrent_kernel": ("dense", {}),
    "head": ("dense", {}),
}


def kernels_by_key(model) -> dict:
    return {kernel.key: kernel for kernel in eoi_keras.find_kernels(model)}


def key(row) -> str:
    return row.name if row.parameter == "kernel" else f"{row.name}.{row.parameter}"


def test_sparsify_covers_every_layout_with_exact_masks_and_block_orthogonality():
    model = mixed_model()
    embedding_before = numpy(model.get_layer("embedding").embeddings)
    report = eoi_keras.sparsify(model, 0.4, "erk", seed=0)
    assert isinstance(report, SparsifyReport)
    assert sorted(key(row) for row in report.sparsified) == sorted(SPARSIFIED)
    # The one weight matrix sparsify cannot read is listed, with the reason.
    (skipped,) = report.skipped
    assert (skipped.name, skipped.kind, skipped.parameter) == ("embedding", "Embedding", "embeddings")
    assert "no layout" in skipped.reason
    np.testing.assert_array_equal(numpy(model.get_layer("embedding").embeddings), embedding_before)

    kernels = kernels_by_key(model)
    layouts = {k: kernel_layout(tuple(kernels[k].variable.shape), *SPARSIFIED[k][:1], **SPARSIFIED[k][1]) for k in SPARSIFIED}
    rows = {key(row): row for row in report.sparsified}
    # The densities are the core's for the canonical shapes and blocks.
    order = [key(row) for row in report.sparsified]
    expected = distributions.layer_densities("erk", [layouts[k].canonical for k in order], 0.4,
                                             groups=[layouts[k].groups for k in order])
    assert [rows[k].density for k in order] == expected
    masks = eoi_keras.kernel_masks(model)
    assert sorted(masks) == sorted(SPARSIFIED)
    for name, kl in layouts.items():
        row, mask = rows[name], masks[name]
        weight = numpy(kernels[name].variable)
        assert row.groups == kl.groups and row.shape == kl.shape
        per_block = kl.to_canonical(mask).reshape(kl.groups, -1).sum(axis=1)
        assert np.all(per_block == eoi_core.mask_count(row.density, mask.size // kl.groups)), name
        assert row.mask_count == mask.sum()
        assert not weight[~mask].any(), name
        error = eoi_core.orthogonality_error(kl.to_canonical(weight.astype(np.float64)), groups=kl.groups)
        assert error <= 2e-6, name
        assert row.orthogonality_error is not None and row.orthogonality_error <= 1e-5
    assert "2 heads" in rows["attention/query"].reason and "4 gates" in rows["lstm/lstm_cell"].reason


def test_report_table_and_config_stay_small():
    model = keras.Sequential([keras.Input((2048,))] + [keras.layers.Dense(2048) for _ in range(4)])
    report = eoi_keras.sparsify(model, 0.1, "uniform", seed=0, verify=None)
    assert report.orthogonality_error is None
    assert "total" in str(report)
    # Masks live with the weights, not in the config (base64 made this 2.8 MB).
    assert len(model.to_json()) < 20_000


def test_include_exclude_select_by_path_glob_predicate_and_type():
    report = eoi_keras.sparsify(mixed_model(), 0.5, "uniform", seed=1, include="attention")
    assert sorted(key(row) for row in report.sparsified) == sorted(k for k in SPARSIFIED if k.startswith("attention/"))
    assert "not selected" in report["dense"].reason
    report = eoi_keras.sparsify(mixed_model(), 0.5, "uniform", seed=1, include=keras.layers.LSTM,
                                exclude="*recurrent_kernel")
    assert [key(row) for row in report.sparsified] == ["lstm/lstm_cell"]
    report = eoi_keras.sparsify(mixed_model(), 0.5, "uniform", seed=1, include=lambda name: name.startswith("conv"))
    assert sorted(key(row) for row in report.sparsified) == ["conv1d", "conv2d"]
    with pytest.raises(ValueError, match="'nope', which matches no layer"):
        eoi_keras.sparsify(mixed_model(), 0.5, include="nope")
    model = mixed_model()
    with pytest.warns(DeprecationWarning, match="include="):
        report = eoi_keras.sparsify(model, 0.5, "uniform", layers=["dense", model.get_layer("head")])
    assert sorted(key(row) for row in report.sparsified) == ["dense", "head"]


def test_center_density_applies_to_kernels_only():
    model = keras.Sequential([keras.Input((6, 6, 8)), keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                              keras.layers.Dense(8)])
    report = eoi_keras.sparsify(model, 0.2, "uniform", center_density=0.5, seed=0)
    conv_mask = eoi_keras.kernel_masks(model)[model.layers[0].name]
    assert conv_mask[1, 1].sum() >= 32  # the centre got its own density
    assert report[model.layers[2].name].density == pytest.approx(0.2)  # the Dense ignores it


def test_schemes_from_the_core_registry():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16), keras.layers.Dense(8)])
    report = eoi_keras.sparsify(model, 0.5, "uniform", seed=0, scheme="kaiming")
    assert all(row.orthogonality_error is None for row in report.sparsified)
    for layer in model.layers:
        mask = eoi_keras.kernel_masks(model)[layer.name]
        assert mask.sum() == eoi_core.mask_count(0.5, mask.size)
    with pytest.raises(ValueError, match="scheme must be one of"):
        eoi_keras.sparsify(model, 0.5, scheme="orthogonal")


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


def test_distribution_mapping():
    model = mixed_model()
    mapping = {"dense": 0.5, "head": 0.9, "lstm/lstm_cell.recurrent_kernel": 0.75}
    report = eoi_keras.sparsify(model, None, mapping, include=list(mapping), seed=1)
    assert {key(row): row.density for row in report.sparsified} == mapping
    masks = eoi_keras.kernel_masks(model)
    assert sorted(masks) == sorted(mapping)
    assert masks["dense"].sum() == eoi_core.mask_count(0.5, masks["dense"].size)
    with pytest.raises(ValueError, match=r"no density for layers \['head'\]"):
        eoi_keras.sparsify(mixed_model(), None, {"dense": 0.5}, include=["dense", "head"])
    with pytest.raises(ValueError, match="density must be None"):
        eoi_keras.sparsify(mixed_model(), 0.5, {"dense": 0.5}, include="dense")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"include": ["nope"]}, "'nope', which matches no layer"),
        ({"include": ["embedding"]}, "no kernel to sparsify"),
        ({"verify": "always"}, "verify must be one of"),
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
    with pytest.raises(ValueError, match="no kernel to sparsify"):
        eoi_keras.sparsify(no_kernels, 0.5)


def test_a_single_layer_can_be_sparsified():
    layer = keras.layers.Conv2D(8, 3, groups=4)
    layer.build((None, 5, 5, 8))
    (row,) = eoi_keras.sparsify(layer, 0.25)
    assert (row.name, row.density, row.groups) == (layer.name, 0.25, 4)
    mask = eoi_keras.kernel_masks(layer)[layer.name]
    blocks = kernel_layout(mask.shape, "conv", groups=4).to_canonical(mask).reshape(4, -1)
    assert np.all(blocks.sum(axis=1) == eoi_core.mask_count(0.25, 36))


# ----------------------------------------------------------------------------- MaskConstraint


def test_mask_constraint_config_is_small_and_the_mask_travels_with_the_weights(tmp_path):
    mask = np.random.default_rng(0).random((64, 64)) < 0.4
    constraint = eoi_keras.MaskConstraint(mask)
    assert keras.saving.get_registered_name(eoi_keras.MaskConstraint) == "eoi>MaskConstraint"
    config = keras.constraints.serialize(constraint)
    assert len(str(config)) < 200
    clone = keras.constraints.deserialize(config)
    with pytest.raises(ValueError, match="has no mask yet"):
        clone(keras.ops.ones((64, 64)))
    # What Keras' saving does with the layer's constraint: save_own_variables / load_own_variables.
    store = {}
    constraint.save_own_variables(store)
    assert store["0"].nbytes == 64 * 64 // 8  # one bit per entry

    class Store(dict):
        pass

    clone.load_own_variables(Store(store))
    np.testing.assert_array_equal(clone.mask, mask)


def test_old_configs_with_base64_bits_still_load():
    mask = np.eye(5, dtype=bool)
    import base64

    bits = base64.b64encode(np.packbits(mask.reshape(-1)).tobytes()).decode("ascii")
    constraint = eoi_keras.MaskConstraint.from_config({"shape": [5, 5], "bits": bits})
    np.testing.assert_array_equal(constraint.mask, mask)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_mask_constraint_zeroes_exactly(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.3
    constraint = eoi_keras.MaskConstraint(mask)
    weight = np.full(shape, np.nan, dtype="float32")
    weight[mask] = 2.0
    projected = numpy(constraint(keras.ops.convert_to_tensor(weight)))
    assert np.all(projected[~mask] == 0)  # exactly 0, even where the update made NaN
    assert np.all(projected[mask] == 2.0)
    # The constraint keeps its own read-only copy of the mask.
    mask[...] = True
    assert not constraint.mask.flags.writeable


def test_a_keyed_mask_constraint_picks_the_mask_by_variable_path():
    layer = keras.layers.Dense(3)
    layer.build((None, 3))
    eye, full = np.eye(3, dtype=bool), np.ones((3, 3), dtype=bool)
    constraint = eoi_keras.MaskConstraint({"other/kernel": full, f"{layer.name}/kernel": eye})
    layer.kernel.assign(np.ones((3, 3), "float32"))
    np.testing.assert_array_equal(numpy(constraint(layer.kernel)), np.eye(3))
    with pytest.raises(ValueError, match="pass the variable"):
        constraint(keras.ops.ones((3, 3)))


def test_mask_constraint_errors():
    with pytest.raises(TypeError, match="boolean"):
        eoi_keras.MaskConstraint(np.ones((2, 2)))
    with pytest.raises(ValueError, match="rank >= 1"):
        eoi_keras.MaskConstraint(np.bool_(True))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 2\) but was applied to a weight of shape \(3, 2\)"):
        eoi_keras.MaskConstraint(np.ones((2, 2), dtype=bool))(keras.ops.ones((3, 2)))


def test_mask_constraint_in_a_layer_keeps_the_mask_through_fit():
    # The constraint alone (no sparsify) with an EOI initializer: Keras' optimizer applies it.
    init = eoi_keras.EOI(0.3, seed=2)
    _, mask = init.weight_and_mask((6, 6))  # a rank-2 shape outside a layer is dense
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


def test_conv_lstm_kernels_are_orthogonal_per_gate():
    model = keras.Sequential([keras.Input((3, 6, 6, 2)), keras.layers.ConvLSTM2D(4, 3, padding="same")])
    report = eoi_keras.sparsify(model, 0.3, "uniform", seed=0)
    assert [row.groups for row in report] == [4, 4] and all("4 gates" in row.reason for row in report)
    for kernel in eoi_keras.find_kernels(model):
        kl = kernel_layout(tuple(kernel.variable.shape), "conv", groups=4)
        weight = kl.to_canonical(numpy(kernel.variable).astype(np.float64))
        assert eoi_core.orthogonality_error(weight, groups=4) <= 2e-6


def test_a_clone_has_no_masks_until_sparsified_or_loaded():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    eoi_keras.sparsify(model, 0.5, "uniform", seed=0)
    clone = keras.models.clone_model(model)
    assert eoi_keras.kernel_masks(clone) == {}
    with pytest.raises(ValueError, match="no mask yet.*sparsify this one"):
        clone.layers[0].kernel.constraint(clone.layers[0].kernel)
    eoi_keras.sparsify(clone, 0.5, "uniform", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(eoi_keras.kernel_masks(clone).values(),
                                                     eoi_keras.kernel_masks(model).values()))
