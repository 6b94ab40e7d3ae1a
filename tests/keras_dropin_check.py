"""Drop-in checks of eoi_keras on one Keras backend, run as a script in its own process.

Usage: ``KERAS_BACKEND=tensorflow|jax|torch python keras_dropin_check.py WORKDIR``

The Keras backend is fixed when ``keras`` is imported, so ``test_keras_backends.py``
runs this file once per backend.  Every check raises ``AssertionError`` with a
message; on success the last line of stdout is ``RESULT <json>`` with the backend
name and digests that the parent compares across backends.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

import keras  # its backend comes from KERAS_BACKEND, set by the parent

import eoi_core
import eoi_keras
from eoi_core.layout import from_channels_last

ATOL = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 2e-6, "float64": 1e-13}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"[{keras.backend.backend()}] {message}")


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def kernels(model) -> dict[str, np.ndarray]:
    return {
        layer.name: numpy(layer.kernel)
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "kernel") and layer.built
    }


def groups_of(layer) -> int:
    return int(getattr(layer, "groups", 1) or 1)


def check_orthogonal_kernel(name: str, kernel: np.ndarray, groups: int, dtype: str = "float32") -> None:
    """Canonical block-wise orthogonality, and every non-centre tap zero."""
    canonical = from_channels_last(kernel.astype(np.float64))
    error = eoi_core.orthogonality_error(canonical, groups=groups)
    require(error <= ATOL[dtype], f"{name}: orthogonality error {error:.3g} > {ATOL[dtype]}")
    if canonical.ndim > 2:
        centre = tuple((k - 1) // 2 for k in canonical.shape[2:])
        taps = canonical.copy()
        taps[(slice(None), slice(None)) + centre] = 0
        require(not taps.any(), f"{name}: a non-centre tap is non-zero")


def check_masks(model, densities: dict[str, float], masks: dict[str, np.ndarray]) -> None:
    """Exact per-block mask counts, and every kernel zero outside its mask."""
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False)}
    require(set(masks) == set(densities), f"masks {sorted(masks)} != sparsified {sorted(densities)}")
    for name, mask in masks.items():
        groups = groups_of(layers[name])
        canonical = from_channels_last(mask)
        block = canonical.size // groups
        expected = eoi_core.mask_count(densities[name], block)
        per_block = canonical.reshape(groups, -1).sum(axis=1)
        require(
            np.all(per_block == expected),
            f"{name}: mask counts per group {per_block.tolist()} != {expected}",
        )
        kernel = numpy(layers[name].kernel)
        require(not kernel[~mask].any(), f"{name}: a masked kernel entry is non-zero")


def mlp(initializer=None) -> keras.Model:
    extra = {} if initializer is None else {"kernel_initializer": initializer}
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="tanh", **extra),
            keras.layers.EinsumDense("ab,bc->ac", output_shape=16, bias_axes="c", activation="tanh", **extra),
            keras.layers.Dense(4, **extra),
        ]
    )
    return model


def convnet(initializer_factory=None) -> keras.Model:
    def extra(groups):
        return {} if initializer_factory is None else {"kernel_initializer": initializer_factory(groups)}

    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            # tanh, not relu: an EOI centre with more rows than columns may have zero
            # rows, and relu'(0) = 0 would leave those channels dead (no gradient).
            keras.layers.Conv2D(8, 3, padding="same", groups=2, activation="tanh", **extra(2)),
            keras.layers.Conv2D(8, 3, padding="same", groups=2, **extra(2)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, **extra(1)),
        ]
    )


def data(shape, outputs, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((64, *shape)).astype("float32"),
        rng.standard_normal((64, outputs)).astype("float32"),
    )


def check_initializer_models() -> None:
    """EOI as kernel_initializer: orthogonal kernels, norm-preserving layers."""
    model = mlp(eoi_keras.EOI(0.5, seed=3))
    for layer in model.layers:
        check_orthogonal_kernel(layer.name, numpy(layer.kernel), 1)
    # in=12 <= out=16: the first layer is an isometry, so it preserves norms.
    x = np.random.default_rng(0).standard_normal((5, 12)).astype("float32")
    first = model.layers[0]
    y = numpy(keras.ops.matmul(x, first.kernel))
    require(np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5), "Dense is no isometry")

    model = convnet(lambda groups: eoi_keras.EOI(0.3, seed=4, groups=groups))
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            check_orthogonal_kernel(layer.name, numpy(layer.kernel), groups_of(layer))
    # A delta-orthogonal grouped conv (in/g=2 <= out/g=4) preserves every pixel's norm.
    conv = keras.layers.Conv2D(8, 3, padding="same", groups=2, use_bias=False,
                               kernel_initializer=eoi_keras.EOI(0.2, seed=5, groups=2))
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 4)).astype("float32")
    y = numpy(conv(x))
    require(
        np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5),
        "grouped delta-orthogonal Conv2D does not preserve norms",
    )


def train_save_reload(model, x, y, densities, workdir, name) -> None:
    """fit keeps masks; save/load restores weights and masks; fit after reload keeps them."""
    masks = eoi_keras.kernel_masks(model)
    check_masks(model, densities, masks)
    for layer in model._flatten_layers(include_self=False):
        if layer.name in masks:
            check_orthogonal_kernel(layer.name, numpy(layer.kernel), groups_of(layer))
    before = kernels(model)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    require(np.all(np.isfinite(history.history["loss"])), f"{name}: non-finite loss")
    check_masks(model, densities, eoi_keras.kernel_masks(model))
    after = kernels(model)
    fill_grew = False
    for layer_name, mask in masks.items():
        require(not np.array_equal(before[layer_name], after[layer_name]), f"{name}/{layer_name}: did not train")
        # The fill (zero-valued trainable entries) must be free to grow.  Not every
        # such entry gets a gradient (a channel whose mask downstream is empty does
        # not), so ask for growth somewhere, not everywhere.
        fill = mask & (before[layer_name] == 0)
        fill_grew |= bool(np.any(after[layer_name][fill] != 0))
    require(fill_grew, f"{name}: no zero-valued trainable entry moved in fit")

    path = os.path.join(workdir, f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for original, restored in zip(model.weights, loaded.weights):
        require(np.array_equal(numpy(original), numpy(restored)), f"{name}: {original.path} differs after load")
    loaded_masks = eoi_keras.kernel_masks(loaded)
    require(set(loaded_masks) == set(masks), f"{name}: masks lost in load_model: {sorted(loaded_masks)}")
    for layer_name, mask in masks.items():
        require(np.array_equal(loaded_masks[layer_name], mask), f"{name}/{layer_name}: mask changed in load")
    require(np.allclose(numpy(model.predict(x, verbose=0)), numpy(loaded.predict(x, verbose=0)), atol=1e-6),
            f"{name}: reloaded model predicts differently")
    reloaded_before = kernels(loaded)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    check_masks(loaded, densities, eoi_keras.kernel_masks(loaded))
    require(not np.array_equal(reloaded_before[next(iter(masks))], kernels(loaded)[next(iter(masks))]),
            f"{name}: the reloaded model did not train")


def check_sparsified_training(workdir: str) -> dict[str, str]:
    keras.utils.set_random_seed(0)
    model = mlp(eoi_keras.EOI(0.5))  # an EOI kernel_initializer must survive save/load too
    densities = eoi_keras.sparsify(model, 0.4, "erk", seed=11)
    x, y = data((12,), 4, 0)
    masks_digest = digest(np.concatenate([m.ravel() for m in eoi_keras.kernel_masks(model).values()]))
    train_save_reload(model, x, y, densities, workdir, "mlp")

    model = convnet()
    densities = eoi_keras.sparsify(model, 0.3, "uniform", center_density="sqrt", seed=12)
    conv_digest = digest(np.concatenate([k.ravel() for k in kernels(model).values()]))
    x, y = data((8, 8, 4), 3, 1)
    train_save_reload(model, x, y, densities, workdir, "convnet")
    # An int seed makes sparsify backend-independent: the parent compares these.
    return {"mlp_masks": masks_digest, "convnet_kernels": conv_digest}


def check_seeding() -> dict[str, str]:
    shape = (3, 3, 4, 8)  # a Conv2D kernel
    # An int seed is the core's rng: the same kernel on every backend, on every call.
    init = eoi_keras.EOI(0.25, seed=7)
    first, second = numpy(init(shape)), numpy(init(shape))
    require(np.array_equal(first, second), "int seed: repeated calls differ")
    core, _ = eoi_core.sparse_orthogonal((8, 4, 3, 3), 0.25, rng=7)
    require(np.array_equal(from_channels_last(first), core), "int seed: differs from eoi_core with rng=seed")
    require(not np.array_equal(first, numpy(eoi_keras.EOI(0.25, seed=8)(shape))), "seeds 7 and 8 agree")

    # Unseeded: fixed per instance; keras.utils.set_random_seed makes models reproducible.
    init = eoi_keras.EOI(0.25)
    require(np.array_equal(numpy(init(shape)), numpy(init(shape))), "seed=None: repeated calls differ")

    def unseeded_model(seed):
        keras.utils.set_random_seed(seed)
        model = mlp(eoi_keras.EOI(0.5))
        return kernels(model)

    def unseeded_sparsify(seed):
        keras.utils.set_random_seed(seed)
        model = convnet()
        eoi_keras.sparsify(model, 0.3)
        return kernels(model), eoi_keras.kernel_masks(model)

    def same(first: dict, second: dict) -> bool:
        # Layer names differ between models (auto-naming): compare in model order.
        return len(first) == len(second) and all(
            np.array_equal(p, q) for p, q in zip(first.values(), second.values())
        )

    a, b, c = unseeded_model(21), unseeded_model(21), unseeded_model(22)
    require(same(a, b), "set_random_seed: unseeded EOI models differ")
    require(not same(a, c), "different global seeds gave the same model")
    (ka, ma), (kb, mb) = unseeded_sparsify(5), unseeded_sparsify(5)
    (kc, mc) = unseeded_sparsify(6)
    require(same(ka, kb) and same(ma, mb), "set_random_seed: unseeded sparsify differs")
    require(not same(ma, mc), "different global seeds gave the same sparsify masks")

    # A SeedGenerator gives new values on each call, and a reproducible sequence.
    draws = []
    for _ in range(2):
        init = eoi_keras.EOI(0.25, seed=keras.random.SeedGenerator(99))
        draws.append([numpy(init(shape)) for _ in range(3)])
    require(all(np.array_equal(p, q) for p, q in zip(*draws)), "SeedGenerator(99): sequences differ")
    require(not np.array_equal(draws[0][0], draws[0][1]), "SeedGenerator: repeated calls agree")
    for value in draws[0]:
        check_orthogonal_kernel("seed-generator draw", value, 1)
    return {"int_seed_kernel": digest(first)}


def check_dtypes() -> dict[str, str]:
    if keras.backend.backend() == "jax":
        # JAX holds float64 only with x64 enabled (its default is off, and then a
        # float64 request silently gives float32); enable it for this last check.
        import jax

        jax.config.update("jax_enable_x64", True)
    result = {}
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        init = eoi_keras.EOI(0.5, seed=2)
        value = init((6, 10), dtype=dtype)
        require(keras.backend.standardize_dtype(value.dtype) == dtype, f"{dtype}: got {value.dtype}")
        array = numpy(keras.ops.cast(value, "float64"))
        check_orthogonal_kernel(f"dtype {dtype}", array, 1, dtype)
        result[dtype] = digest(array)
    try:
        eoi_keras.EOI(0.5)((6, 10), dtype="int32")
    except TypeError as error:
        require("dtype" in str(error), f"int32 error does not name dtype: {error}")
    else:
        raise AssertionError("int32 dtype was accepted")
    return result


def main() -> None:
    workdir = sys.argv[1]
    result = {"backend": keras.backend.backend()}
    check_initializer_models()
    result.update(check_seeding())
    result.update(check_sparsified_training(workdir))
    result.update(check_dtypes())
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
