"""Promise: per-layer densities whose parameter-weighted mean is the target, capped at 1,
never below a layer's orthogonal floor, and an error naming the smallest feasible target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from eoi_core import distributions

MODEL = [(256, 784), (256, 256, 3, 3), (128, 64, 3, 3), (10, 256), (512, 8)]
FUNCTIONS = [distributions.uniform, distributions.erdos_renyi, distributions.erk]


def weighted_total(shapes, densities):
    return sum(d * math.prod(shape) for d, shape in zip(densities, shapes))


def floors(shapes, groups=None):
    groups = groups or [1] * len(shapes)
    return [eoi_core.min_density(shape, g) for shape, g in zip(shapes, groups)]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("density", [0.02, 0.05, 0.1, 0.3, 0.9, 1.0])
def test_weighted_mean_is_the_target_within_one_parameter(function, density):
    densities = function(MODEL, density)
    size = sum(math.prod(shape) for shape in MODEL)
    assert abs(weighted_total(MODEL, densities) - density * size) < 1
    assert all(f - 1e-15 <= d <= 1.0 for d, f in zip(densities, floors(MODEL)))


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([(), (3,), (3, 3), (1, 5)])).map(
            lambda t: (t[0], t[1]) + t[2]
        ),
        min_size=1,
        max_size=6,
    ),
    fraction=st.floats(0, 1, allow_subnormal=False),  # FTZ set by some framework libraries
    function=st.sampled_from(FUNCTIONS),
)
def test_any_feasible_target_is_met_with_caps_and_floors(shapes, fraction, function):
    size = sum(math.prod(shape) for shape in shapes)
    smallest = sum(f * math.prod(s) for f, s in zip(floors(shapes), shapes)) / size
    density = max(smallest + fraction * (1 - smallest), 1e-9)
    densities = function(shapes, density)
    assert abs(weighted_total(shapes, densities) - density * size) < 1
    for d, f in zip(densities, floors(shapes)):
        assert f - 1e-12 <= d <= 1.0
    # every layer's density is feasible for the core
    for shape, d in zip(shapes, densities):
        eoi_core.sparse_orthogonal(shape, d, rng=0)


@pytest.mark.parametrize(
    "shapes", [[(4, 4, 5, 5), (8, 4, 3, 3)], [(11, 5), (11, 9)], [(3, 7), (70, 10), (5, 5, 3)]]
)
@pytest.mark.parametrize("density", [0.1, 0.9, 0.55])
def test_uniform_without_binding_floors_is_exactly_the_target(shapes, density):
    if any(eoi_core.min_density(shape) > density for shape in shapes):
        return
    assert distributions.uniform(shapes, density) == [density] * len(shapes)


def test_erk_caps_small_layers_and_redistributes():
    shapes = [(4, 4), (1000, 1000)]
    densities = distributions.erk(shapes, 0.05)
    assert densities[0] == 1.0
    assert abs(weighted_total(shapes, densities) - 0.05 * (16 + 10**6)) < 1


def test_erk_follows_rigl_scores_when_nothing_binds():
    shapes = [(300, 200), (100, 50, 3, 3)]
    densities = distributions.erk(shapes, 0.2)
    scores = [sum(s) / math.prod(s) for s in shapes]
    assert densities[0] / densities[1] == pytest.approx(scores[0] / scores[1])


def test_er_ignores_the_kernel():
    shapes = [(64, 64, 3, 3), (64, 64, 5, 5)]
    densities = distributions.erdos_renyi(shapes, 0.2)
    assert densities[0] == pytest.approx(densities[1])


def test_floor_takes_parameters_from_the_others():
    # a 512 x 8 layer needs density >= 8 / 4096; uniform 0.0015 is below it
    shapes = [(512, 8), (1000, 1000)]
    densities = distributions.uniform(shapes, 0.0015)
    assert densities[0] == pytest.approx(eoi_core.min_density((512, 8)))
    assert densities[1] < 0.0015
    assert abs(weighted_total(shapes, densities) - 0.0015 * (4096 + 10**6)) < 1


def test_infeasible_target_names_the_smallest_feasible():
    shapes = [(100, 100), (50, 100)]
    smallest = (100 + 50) / (10000 + 5000)
    with pytest.raises(ValueError, match=f"{smallest:.6g}"):
        distributions.erk(shapes, smallest / 2)


def test_grouped_layers_use_the_block_floor():
    densities = distributions.uniform([(64, 16, 3, 3)], 1 / 144, groups=[4])
    assert densities == [pytest.approx(1 / 144)]
    with pytest.raises(ValueError, match="infeasible"):
        distributions.uniform([(64, 16, 3, 3)], 1 / 200, groups=[4])


def test_layer_densities_resolves_names_and_mappings():
    shapes = [(32, 16), (8, 32)]
    assert distributions.layer_densities("erk", shapes, 0.3) == distributions.erk(shapes, 0.3)
    assert distributions.layer_densities("er", shapes, 0.3) == distributions.erdos_renyi(shapes, 0.3)
    mapping = {"a": 0.5, "b": 0.25}
    assert distributions.layer_densities(mapping, shapes, None, names=["a", "b"]) == [0.5, 0.25]
    with pytest.raises(ValueError, match="no density for layers"):
        distributions.layer_densities({"a": 0.5}, shapes, None, names=["a", "b"])
    with pytest.raises(ValueError, match="distribution must be one of"):
        distributions.layer_densities("gaussian", shapes, 0.3)
    with pytest.raises(ValueError, match=r"distribution\['a'\] must lie in"):
        distributions.layer_densities({"a": 1.5, "b": 0.2}, shapes, None, names=["a", "b"])
    assert np.isclose(sum(distributions.uniform([(10, 10)], 0.5)), 0.5)
