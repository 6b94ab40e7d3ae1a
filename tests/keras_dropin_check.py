"""Drop-in checks of eoi_keras on one Keras backend, run as a script in its own process.

Usage: ``KERAS_BACKEND=tensorflow|jax|torch python keras_dropin_check.py WORKDIR``

The Keras backend is fixed when ``keras`` is imported, so ``test_keras_backends.py``
runs this file once per backend.  Every check raises ``AssertionError`` with a
message; on success the last line of stdout is ``RESULT <json>`` with the backend
name and digests that the parent compares across backends.

The models are written the way Keras users write them: a transformer block
(MultiHeadAttention + feed-forward), a MobileNet-style CNN (depthwise and
separable convolutions) and a (bidirectional) LSTM text classifier.  Each is sparsified,
trained a few steps with masks exact and every orthogonal block checked, and
saved and reloaded both ways (``model.save`` / ``load_model``, and
``save_weights`` / ``load_weights`` into a freshly built model, sparsified or not).
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
from eoi_core.kernels import kernel_layout

ATOL = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 2e-6, "float64": 1e-13}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"[{keras.backend.backend()}] {message}")


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def digest(arrays) -> str:
    hasher = hashlib.sha256()
    for array in arrays:
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()[:16]


# ----------------------------------------------------------------------------- models


def transformer_block() -> keras.Model:
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(32, 16)(tokens)
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=4)(x, x)
    x = keras.layers.LayerNormalization()(x + attended)
    hidden = keras.layers.Dense(32, activation="gelu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(16)(hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3)(x))


def mobilenet() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="tanh"),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="tanh"),
        keras.layers.Conv2D(16, 1, activation="tanh"),
        keras.layers.SeparableConv2D(16, 3, padding="same", depth_multiplier=2, activation="tanh"),
        keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])


def text_classifier() -> keras.Model:
    return keras.Sequential([
        keras.Input((7,), dtype="int32"),
        keras.layers.Embedding(40, 8),
        keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True)),
        keras.layers.GRU(6),
        keras.layers.Dense(2),
    ])


MODELS = {
    "transformer": (transformer_block, lambda rng: rng.integers(0, 32, (32, 6)).astype("int32"), 3),
    "mobilenet": (mobilenet, lambda rng: rng.standard_normal((32, 8, 8, 3)).astype("float32"), 3),
    "lstm": (text_classifier, lambda rng: rng.integers(0, 40, (32, 7)).astype("int32"), 2),
}


def kernels(model) -> dict[str, np.ndarray]:
    return {kernel.key: numpy(kernel.variable) for kernel in eoi_keras.find_kernels(model)}


def check_report(model, report) -> None:
    """Exact per-block mask counts, weights inside masks, every block orthogonal."""
    found = {kernel.key: kernel for kernel in eoi_keras.find_kernels(model)}
    masks = eoi_keras.kernel_masks(model)
    rows = {row.name if row.parameter == "kernel" else f"{row.name}.{row.parameter}": row for row in report.sparsified}
    require(set(masks) == set(rows), f"masks {sorted(masks)} != sparsified {sorted(rows)}")
    for key, row in rows.items():
        kernel = found[key]
        kl = kernel.layout()
        weight, mask = numpy(kernel.variable), masks[key]
        per_block = kl.to_canonical(mask).reshape(kl.groups, -1).sum(axis=1)
        expected = eoi_core.mask_count(row.density, mask.size // kl.groups)
        require(np.all(per_block == expected), f"{key}: mask counts per block {per_block.tolist()} != {expected}")
        require(not weight[~mask].any(), f"{key}: a masked entry is non-zero")
        error = eoi_core.orthogonality_error(kl.to_canonical(weight.astype(np.float64)), groups=kl.groups)
        require(error <= ATOL["float32"], f"{key}: orthogonality error {error:.3g}")


def check_masks_hold(model, masks) -> None:
    current = kernels(model)
    for key, mask in masks.items():
        require(not current[key][~mask].any(), f"{key}: a masked entry is non-zero after fit")


def same_weights(a, b) -> bool:
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(numpy(p), numpy(q)) for p, q in zip(a.weights, b.weights)
    )


def same_masks(a: dict, b: dict) -> bool:
    # Auto-generated layer names differ between models: compare in model order.
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a.values(), b.values()))


def check_model(name: str, workdir: str) -> str:
    build, inputs, classes = MODELS[name]
    rng = np.random.default_rng(0)
    x, y = inputs(rng), rng.integers(0, classes, 32)
    model = build()
    report = eoi_keras.sparsify(model, 0.3, "erk", seed=5)
    require(len(report.sparsified) >= 3, f"{name}: sparsified only {len(report.sparsified)} kernels")
    require(all(row.parameter == "embeddings" for row in report.skipped), f"{name}: skipped {report.skipped}")
    check_report(model, report)
    masks = eoi_keras.kernel_masks(model)
    # The int seed makes masks and kernels backend-independent: the parent compares these.
    result = digest(list(masks.values()) + [kernels(model)[key] for key in masks])

    before = kernels(model)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(True))
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    require(np.all(np.isfinite(history.history["loss"])), f"{name}: non-finite loss")
    check_masks_hold(model, masks)
    after = kernels(model)
    require(all(not np.array_equal(before[k], after[k]) for k in masks), f"{name}: a kernel did not train")
    grew = any(np.any(after[k][masks[k] & (before[k] == 0)] != 0) for k in masks)
    require(grew, f"{name}: no zero-valued trainable entry moved in fit")

    # model.save / load_model: weights and masks, and a config without the masks.
    path = os.path.join(workdir, f"{name}.keras")
    model.save(path)
    require(len(model.to_json()) < 40_000, f"{name}: config of {len(model.to_json())} bytes")
    loaded = keras.models.load_model(path)
    require(same_weights(model, loaded), f"{name}: weights differ after load_model")
    require(same_masks(eoi_keras.kernel_masks(loaded), masks), f"{name}: masks lost in load_model")
    # The constraints rebuilt from the config (shapes only) hold the loaded masks in training.
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    check_masks_hold(loaded, masks)

    # save_weights / load_weights into a fresh model sparsified the same way (another seed).
    weights = os.path.join(workdir, f"{name}.weights.h5")
    model.save_weights(weights)
    fresh = build()
    eoi_keras.sparsify(fresh, 0.3, "erk", seed=99)
    fresh.load_weights(weights)
    require(same_weights(model, fresh), f"{name}: weights differ after load_weights")
    require(same_masks(eoi_keras.kernel_masks(fresh), masks), f"{name}: masks not restored by load_weights")

    # ...and into a fresh dense model: the sparse weights load, the model stays dense.
    dense = build()
    dense.load_weights(weights)
    require(same_weights(model, dense), f"{name}: weights differ after load_weights into a dense model")
    require(not eoi_keras.kernel_masks(dense), f"{name}: a dense model got masks")
    return result


# ----------------------------------------------------------------------------- initializer


def check_initializer_layouts() -> str:
    """EOI as a kernel initializer: the layer decides the layout; no dead rows."""
    attention = keras.layers.MultiHeadAttention(4, 16, kernel_initializer=eoi_keras.EOI(0.3, seed=1))
    x = np.zeros((1, 3, 64), "float32")
    attention(x, x)
    query = numpy(attention._query_dense.kernel)
    require(np.all(np.abs(query).reshape(64, -1).sum(axis=1) > 0), "attention: dead input rows")
    kl = kernel_layout(query.shape, "einsum", groups=4)
    require(eoi_core.orthogonality_error(kl.to_canonical(query.astype(np.float64)), groups=4) <= 2e-6,
            "attention: a head is not orthogonal")

    depthwise = keras.layers.DepthwiseConv2D(3, depthwise_initializer=eoi_keras.EOI(0.2, seed=2))
    depthwise.build((None, 8, 8, 16))
    require(np.all(np.abs(numpy(depthwise.kernel)).sum(axis=(0, 1, 3)) > 0), "depthwise: dead channels")

    lstm = keras.layers.LSTM(8, recurrent_initializer=eoi_keras.EOI(0.5, seed=3))
    lstm.build((None, 4, 5))
    recurrent = numpy(lstm.cell.recurrent_kernel).astype(np.float64)
    for gate in range(4):
        block = recurrent[:, gate * 8 : (gate + 1) * 8]
        require(np.allclose(block.T @ block, np.eye(8), atol=2e-6), f"lstm: gate {gate} is not orthogonal")

    # A grouped Conv2D gets the layer's groups and preserves every pixel's norm.
    conv = keras.layers.Conv2D(8, 3, padding="same", groups=2, use_bias=False,
                               kernel_initializer=eoi_keras.EOI(0.2, seed=5))
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 4)).astype("float32")
    y = numpy(conv(x))
    require(np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5),
            "grouped delta-orthogonal Conv2D does not preserve norms")
    return digest([query, numpy(depthwise.kernel), recurrent, numpy(conv.kernel)])


# ----------------------------------------------------------------------------- seeding


class TwoLayers(keras.Model):
    """A subclassed model: Keras builds its layers when fit first calls it."""

    def __init__(self, seed):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="tanh", kernel_initializer=eoi_keras.EOI(0.5, seed=seed))
        self.head = keras.layers.Dense(2, kernel_initializer=eoi_keras.EOI(0.5, seed=seed))

    def call(self, x):
        return self.head(self.hidden(x))


def check_seeding() -> dict[str, str]:
    shape = (3, 3, 4, 8)
    # An int seed is the core's rng: the same kernel on every backend, on every call.
    init = eoi_keras.EOI(0.25, seed=7, layout="conv")
    first = numpy(init(shape))
    require(np.array_equal(first, numpy(init(shape))), "int seed: repeated calls differ")
    core, _ = eoi_core.sparse_orthogonal((8, 4, 3, 3), 0.25, rng=7)
    require(np.array_equal(kernel_layout(shape, "conv").to_canonical(first), core), "int seed: not the core's")

    # Unseeded: keras.utils.set_random_seed makes models and sparsify reproducible.
    def unseeded(seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, kernel_initializer=eoi_keras.EOI(0.5)),
                                  keras.layers.Dense(4)])
        eoi_keras.sparsify(model, 0.5, include=model.layers[1].name)
        return list(kernels(model).values()) + list(eoi_keras.kernel_masks(model).values())

    a, b, c = unseeded(21), unseeded(21), unseeded(22)
    require(all(np.array_equal(p, q) for p, q in zip(a, b)), "set_random_seed: unseeded runs differ")
    require(any(not np.array_equal(p, q) for p, q in zip(a, c)), "different global seeds agree")

    # A SeedGenerator: new values per call, a reproducible sequence...
    generator = eoi_keras.EOI(0.25, seed=keras.random.SeedGenerator(99), layout="conv")
    draws = [numpy(generator(shape)) for _ in range(2)]
    require(not np.array_equal(*draws), "SeedGenerator: repeated calls agree")
    # ...also when Keras builds the model inside fit (traced; compiled with the
    # backend's default jit_compile="auto": XLA on JAX and TensorFlow), where the
    # generator's state has no value: the same kernels as an eager build.
    data = np.ones((8, 4), "float32"), np.ones((8, 2), "float32")
    eager = TwoLayers(keras.random.SeedGenerator(1))
    eager(data[0])
    expected = [numpy(eager.hidden.kernel), numpy(eager.head.kernel)]
    model = TwoLayers(keras.random.SeedGenerator(1))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.fit(*data, epochs=1, verbose=0)
    built = [numpy(model.hidden.kernel), numpy(model.head.kernel)]
    require(all(np.array_equal(p, q) for p, q in zip(built, expected)),
            "SeedGenerator: a fit-time build differs from an eager build")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        model = TwoLayers(keras.random.SeedGenerator(1))
        tf.function(model)(data[0])  # built inside a tf.function
        require(np.array_equal(numpy(model.hidden.kernel), expected[0]), "SeedGenerator: tf.function build differs")
    return {"int_seed_kernel": digest([first]), "seed_generator": digest(draws + expected)}


def check_dtypes() -> dict[str, str]:
    if keras.backend.backend() == "jax":
        # JAX holds float64 only with x64 enabled (its default is off); enable it for this last check.
        import jax

        jax.config.update("jax_enable_x64", True)
    result = {}
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        value = eoi_keras.EOI(0.5, seed=2)((6, 10), dtype=dtype)
        require(keras.backend.standardize_dtype(value.dtype) == dtype, f"{dtype}: got {value.dtype}")
        array = numpy(keras.ops.cast(value, "float64"))
        error = eoi_core.orthogonality_error(array.T)
        require(error <= ATOL[dtype], f"{dtype}: orthogonality error {error:.3g}")
        result[dtype] = digest([array])
    return result


def main() -> None:
    import time

    workdir = sys.argv[1]
    start = time.perf_counter()
    result = {"backend": keras.backend.backend(), "initializer_layouts": check_initializer_layouts()}
    result.update(check_seeding())
    print(f"initializer and seeding checks: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for name in MODELS:
        result[f"model_{name}"] = check_model(name, workdir)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    result.update(check_dtypes())
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
