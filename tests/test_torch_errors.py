"""Bad input to eoi_torch gets a clear TypeError/ValueError and leaves tensors and models untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import eoi_torch


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert not any(parametrize.is_parametrized(module) for module in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], value) for key, value in before.items())


# --- eoi_ -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_eoi_rejects_non_float_dtypes(dtype):
    with pytest.raises(TypeError, match=f"floating dtype.*{dtype}"):
        eoi_torch.eoi_(torch.zeros(8, 8, dtype=dtype), 0.5)


@pytest.mark.parametrize("shape", [(8,), (), (2, 2, 2, 2, 2, 2)])
def test_eoi_rejects_ranks_outside_2_to_5(shape):
    with pytest.raises(ValueError, match=rf"{len(shape)}-D tensor"):
        eoi_torch.eoi_(torch.zeros(shape), 0.5)


def test_eoi_rejects_non_tensors_and_bad_generators():
    with pytest.raises(TypeError, match="torch.Tensor"):
        eoi_torch.eoi_([[0.0, 0.0]], 0.5)
    with pytest.raises(TypeError, match="generator"):
        eoi_torch.eoi_(torch.zeros(4, 4), 0.5, generator=3)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"density": 0.0}, ValueError, r"density must lie in \(0, 1\]"),
        ({"density": -0.1}, ValueError, "density"),
        ({"density": 1.5}, ValueError, "density"),
        ({"density": math.nan}, ValueError, "density must be a finite"),
        ({"density": "0.5"}, TypeError, "density"),
        ({"density": True}, TypeError, "density"),
        ({"density": 0.05}, ValueError, "infeasible.*min_density = 0.0625"),
        ({"density": 0.5, "gain": 0.0}, ValueError, "gain"),
        ({"density": 0.5, "gain": math.inf}, ValueError, "gain"),
        ({"density": 0.5, "groups": 3}, ValueError, "groups=3 must divide"),
        ({"density": 0.5, "groups": 0}, ValueError, "groups"),
        ({"density": 0.5, "center_density": "cube"}, ValueError, "center_density"),
    ],
)
def test_eoi_rejects_bad_arguments_and_leaves_the_tensor_alone(kwargs, error, pattern):
    tensor = torch.randn(16, 16)
    before = tensor.clone()
    with pytest.raises(error, match=pattern):
        eoi_torch.eoi_(tensor, **kwargs)
    assert torch.equal(tensor, before)


# --- sparsify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["erk2", "ERK", "normal", 3, None])
def test_sparsify_rejects_unknown_distributions(distribution):
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match="distribution must be one of"):
        eoi_torch.sparsify(model, 0.3, distribution=distribution)
    assert_untouched(model, before)


@pytest.mark.parametrize(
    "density, error, pattern",
    [
        (0.0, ValueError, "density"),
        (1.01, ValueError, "density"),
        (math.inf, ValueError, "density"),
        (None, TypeError, "density"),
        (0.01, ValueError, "infeasible for this model.*at least density"),
    ],
)
def test_sparsify_rejects_bad_densities(density, error, pattern):
    model = mlp()
    before = snapshot(model)
    with pytest.raises(error, match=pattern):
        eoi_torch.sparsify(model, density)
    assert_untouched(model, before)


def test_a_mapping_with_an_infeasible_layer_names_it_and_changes_nothing():
    model = mlp()  # layer "0" is fine at 0.5; layer "2" needs at least 4 / 128
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"layer '2' \(Linear\).*infeasible"):
        eoi_torch.sparsify(model, None, distribution={"0": 0.5, "2": 0.01})
    assert_untouched(model, before)


def test_mapping_errors():
    model = mlp()
    with pytest.raises(ValueError, match=r"no density for layers \['2'\]"):
        eoi_torch.sparsify(model, None, distribution={"0": 0.5})
    with pytest.raises(ValueError, match="not selected"):
        eoi_torch.sparsify(model, None, distribution={"0": 0.5, "2": 0.5, "1": 0.5})
    with pytest.raises(ValueError, match="density must be None when distribution is a mapping"):
        eoi_torch.sparsify(model, 0.5, distribution={"0": 0.5, "2": 0.5})


@pytest.mark.parametrize(
    "returned, error, pattern",
    [
        (None, TypeError, "gain returned for layer '0' \\(Linear\\)"),
        ("relu", TypeError, "gain returned for layer '0'"),
        (True, TypeError, "gain returned for layer '0'"),
        (torch.tensor(1.0), TypeError, "gain returned for layer '0'"),
        (math.nan, ValueError, "gain returned for layer '0'"),
        (-1.0, ValueError, "gain returned for layer '0'"),
        (0, ValueError, "gain returned for layer '0'"),
    ],
)
def test_a_gain_callable_returning_garbage(returned, error, pattern):
    model = mlp()
    before = snapshot(model)
    with pytest.raises(error, match=pattern):
        eoi_torch.sparsify(model, 0.3, gain=lambda module: returned)
    assert_untouched(model, before)


@pytest.mark.parametrize(
    "gain, error", [(0.0, ValueError), (-2, ValueError), ("relu", TypeError), (None, TypeError)]
)
def test_a_bad_gain_number(gain, error):
    with pytest.raises(error, match="gain"):
        eoi_torch.sparsify(mlp(), 0.3, gain=gain)


def test_selection_errors():
    model = mlp()
    with pytest.raises(ValueError, match="'3', which matches no layer"):
        eoi_torch.sparsify(model, 0.3, include="3")
    with pytest.raises(ValueError, match="'head', which matches no layer"):
        eoi_torch.sparsify(model, 0.3, exclude=["head"])
    with pytest.raises(ValueError, match="no layer to sparsify"):
        eoi_torch.sparsify(model, 0.3, include=nn.ReLU)
    with pytest.raises(ValueError, match="no layer to sparsify"):
        eoi_torch.sparsify(model, 0.3, include="1")  # a module, but no weight matrix in it
    with pytest.raises(TypeError, match="include entries"):
        eoi_torch.sparsify(model, 0.3, include=[0])
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        eoi_torch.sparsify(model, 0.3, include=int)
    with pytest.raises(ValueError, match="no layer to sparsify"):
        eoi_torch.sparsify(model, 0.3, exclude=nn.Linear)
    with pytest.raises(ValueError, match="no layer to sparsify"):
        eoi_torch.sparsify(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4)), 0.3)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        eoi_torch.sparsify(torch.zeros(4, 4), 0.3)
    with pytest.raises(TypeError, match="generator"):
        eoi_torch.sparsify(model, 0.3, generator=torch.get_rng_state())
    for argument, value in [("mode", "mask"), ("tied", "share"), ("patchify", True), ("verify", "full")]:
        with pytest.raises(ValueError, match=f"{argument} must be one of"):
            eoi_torch.sparsify(model, 0.3, **{argument: value})


def test_sparsifying_twice_lazy_layers_and_shared_weights():
    model = mlp()
    eoi_torch.sparsify(model, 0.3)
    with pytest.raises(ValueError, match="layer '0' \\(ParametrizedLinear\\) already has an EOI mask"):
        eoi_torch.sparsify(model, 0.3)
    hooked = mlp()
    eoi_torch.sparsify(hooked, 0.3, mode="hook")
    with pytest.raises(ValueError, match="already has an EOI mask"):
        eoi_torch.sparsify(hooked, 0.3)

    with pytest.raises(ValueError, match="layer '0' \\(LazyLinear\\) is lazy"):
        eoi_torch.sparsify(nn.Sequential(nn.LazyLinear(8)), 0.3)

    tied = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="'0' \\(Linear\\) shares its weight with '1.weight'"):
        eoi_torch.sparsify(tied, 0.3, tied="error")
    report = eoi_torch.sparsify(tied, 0.3)  # default: the tie is left dense and reported
    assert report["0"].status == "skipped" and "tied with '1.weight'" in report["0"].reason
    assert tied[1].weight is tied[0].weight


def test_an_infeasible_center_density_names_the_layer():
    # Layer "0" could take it (15 of its 40 entries); layer "1" holds 29 entries, its centre would need 30.
    model = nn.Sequential(nn.Conv2d(4, 4, 5), nn.Conv2d(4, 8, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match="layer '1' \\(Conv2d\\).*center_density"):
        eoi_torch.sparsify(model, 0.1, distribution="uniform", center_density=0.95)
    assert_untouched(model, before)
