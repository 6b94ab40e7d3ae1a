"""One contract, three frameworks: the same seed gives the core's bits, the same rules, the same errors.

Each framework is a small backend class (as einops tests its backends): it
builds the same models in its own idiom and speaks in NumPy arrays in its own
layout, so one test body checks PyTorch, Keras (whichever backend this
process runs) and JAX/Flax alike.
"""

from __future__ import annotations

import numpy as np
import pytest

import eoi_core
from eoi_core.layout import to_channels_last


class TorchBackend:
    name = "torch"

    def __init__(self):
        self.torch = pytest.importorskip("torch")
        import eoi_torch

        self.eoi = eoi_torch

    def initializer(self, canonical, density, seed, **kwargs):
        """(weight in the framework's layout, the core seed it used)."""
        torch = self.torch
        from eoi_torch.init import draw_seed

        core_seed = draw_seed(torch.Generator().manual_seed(seed))
        tensor = torch.empty(canonical, dtype=torch.float32)
        self.eoi.eoi_(tensor, density, generator=torch.Generator().manual_seed(seed), **kwargs)
        return tensor.numpy(), core_seed

    def to_framework(self, canonical_array):
        return canonical_array

    def dense_and_conv(self):
        nn = self.torch.nn
        return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 4 * 4, 64))

    def sparsify(self, model, density, **kwargs):
        return self.eoi.sparsify(model, density, **kwargs)

    def names(self, model):
        return {"conv": "0", "dense": "2"}

    def kernels(self, model):
        return {"conv": model[0].weight.detach().numpy(), "dense": model[2].weight.detach().numpy()}


class KerasBackend:
    name = "keras"

    def __init__(self):
        self.keras = pytest.importorskip("keras")
        import eoi_keras

        self.eoi = eoi_keras

    def initializer(self, canonical, density, seed, **kwargs):
        layout = "dense" if len(canonical) == 2 else "conv"
        shape = canonical[::-1] if layout == "dense" else tuple(canonical[2:]) + (canonical[1], canonical[0])
        weight = self.eoi.EOI(density, seed=seed, layout=layout, **kwargs)(shape, dtype="float32")
        return self.keras.ops.convert_to_numpy(weight), seed

    def to_framework(self, canonical_array):
        return to_channels_last(canonical_array)

    def dense_and_conv(self):
        layers = self.keras.layers
        model = self.keras.Sequential(
            [self.keras.Input((4, 4, 8)), layers.Conv2D(16, 3, padding="same", name="conv"),
             layers.Flatten(name="flatten"), layers.Dense(64, name="dense")]
        )
        return model

    def sparsify(self, model, density, **kwargs):
        return self.eoi.sparsify(model, density, **kwargs)

    def names(self, model):
        return {"conv": "conv", "dense": "dense"}

    def kernels(self, model):
        ops = self.keras.ops
        return {
            "conv": ops.convert_to_numpy(model.get_layer("conv").kernel),
            "dense": ops.convert_to_numpy(model.get_layer("dense").kernel),
        }


class JaxBackend:
    name = "jax"

    def __init__(self):
        self.jax = pytest.importorskip("jax")
        pytest.importorskip("flax")
        import eoi_jax

        self.eoi = eoi_jax

    def initializer(self, canonical, density, seed, **kwargs):
        layout = "dense" if len(canonical) == 2 else "conv"
        shape = canonical[::-1] if layout == "dense" else tuple(canonical[2:]) + (canonical[1], canonical[0])
        key = self.jax.random.key(seed)
        weight = self.eoi.eoi(density, layout=layout, **kwargs)(key, shape, self.jax.numpy.float32)
        return np.asarray(weight), self.eoi.key_seed(key)

    def to_framework(self, canonical_array):
        return to_channels_last(canonical_array)

    def dense_and_conv(self):
        from flax import linen as nn

        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.Conv(16, (3, 3), padding="SAME", name="conv")(x)
                return nn.Dense(64, name="dense")(x.reshape(x.shape[0], -1))

        model = Model()
        inputs = self.jax.numpy.zeros((1, 4, 4, 8))
        params = model.init(self.jax.random.key(0), inputs)["params"]
        return model, inputs, params

    def sparsify(self, built, density, **kwargs):
        model, inputs, params = built
        result = self.eoi.sparsify(params, density, self.jax.random.key(1), model=model, inputs=inputs, **kwargs)
        built[2] = result.params if hasattr(result, "params") else result[0]
        return result.report

    def names(self, built):
        return {"conv": "conv", "dense": "dense"}

    def kernels(self, built):
        params = built[2]
        return {"conv": np.asarray(params["conv"]["kernel"]), "dense": np.asarray(params["dense"]["kernel"])}


BACKENDS = [TorchBackend, KerasBackend, JaxBackend]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request):
    return request.param()


def _built(backend):
    built = backend.dense_and_conv()
    return list(built) if isinstance(built, tuple) else built


@pytest.mark.parametrize("canonical", [(64, 32), (32, 64), (16, 8, 3, 3)])
@pytest.mark.parametrize("density", [0.15, 0.5])
def test_the_same_seed_gives_the_cores_bits_in_each_layout(backend, canonical, density):
    weight, core_seed = backend.initializer(canonical, density, seed=3)
    expected, mask = eoi_core.sparse_orthogonal(canonical, density, rng=core_seed)
    np.testing.assert_array_equal(weight, backend.to_framework(expected))
    assert np.count_nonzero(weight) <= mask.sum() == eoi_core.mask_count(density, mask.size)


@pytest.mark.parametrize(
    "kwargs",
    [dict(density=1.5), dict(density=float("nan")), dict(density=0.2, gain=-1.0), dict(density=0.001)],
    ids=["density>1", "nan", "gain<0", "infeasible"],
)
def test_the_same_bad_input_gives_the_same_error_class_and_message(backend, kwargs):
    canonical = (64, 32)
    with pytest.raises((TypeError, ValueError)) as core_error:
        eoi_core.validate(canonical, kwargs["density"], gain=kwargs.get("gain", 1.0))
    with pytest.raises(type(core_error.value)) as framework_error:
        backend.initializer(canonical, seed=0, **kwargs)
    core_message = str(core_error.value)
    # The framework may name the shape in its own layout; the rest of the core's words are the same.
    head = core_message.split(" for shape ")[0] if "infeasible" in core_message else core_message
    assert head in str(framework_error.value)


def test_a_mapping_takes_no_model_wide_density(backend):
    built = _built(backend)
    names = backend.names(built)
    mapping = {names["conv"]: 0.3, names["dense"]: 0.2}
    with pytest.raises(ValueError, match="density must be None when distribution is a mapping"):
        backend.sparsify(built, 0.1, distribution=mapping)
    report = backend.sparsify(built, None, distribution=mapping)
    rows = {row.name: row for row in report.sparsified}
    assert rows[names["conv"]].density == 0.3 and rows[names["dense"]].density == 0.2


def test_center_density_applies_to_kernels_only(backend):
    built = _built(backend)
    names = backend.names(built)
    mapping = {names["conv"]: 0.2, names["dense"]: 0.2}
    report = backend.sparsify(built, None, distribution=mapping, center_density="sqrt")
    kernels = backend.kernels(built)
    rows = {row.name: row for row in report.sparsified}
    dense, conv = rows[names["dense"]], rows[names["conv"]]
    assert dense.mask_count == eoi_core.mask_count(0.2, dense.size)
    # The dense weight keeps its own density: its Givens support fills the budget to within one rotation.
    dense_nonzeros = np.count_nonzero(kernels["dense"])
    assert dense.mask_count - 64 < dense_nonzeros <= dense.mask_count
    # The conv centre follows the "sqrt" policy: min(1, 0.2 * 9, sqrt(0.2)) of the 16 x 8 centre.
    centre_budget = eoi_core.mask_count(min(1.0, 0.2 * 9, 0.2**0.5), 16 * 8)
    assert centre_budget - 8 < np.count_nonzero(kernels["conv"]) <= centre_budget


def test_an_infeasible_density_names_the_limiting_layer(backend):
    built = _built(backend)
    names = backend.names(built)
    with pytest.raises(ValueError, match=rf"limiting layer is '{names['conv']}'"):
        backend.sparsify(built, 0.0005, distribution="uniform")


def test_the_report_is_the_core_type_with_the_same_columns(backend):
    built = _built(backend)
    report = backend.sparsify(built, 0.2, distribution="erk")
    assert isinstance(report, eoi_core.SparsifyReport)
    names = backend.names(built)
    assert {names["conv"], names["dense"]} <= {row.name for row in report.sparsified}
    assert abs(report.density - 0.2) < 1e-3
    assert str(report).splitlines()[0].split()[:4] == ["layer", "type", "shape", "groups"]
