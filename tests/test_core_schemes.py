"""The scheme registry: one signature, exact mask counts, floors, and each scheme's promise."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from eoi_core import schemes
from eoi_core.isometry import approximate_isometry, isometry_loss
from eoi_core.layout import parse_layout

# Densities every scheme but SAO accepts for these shapes (at or above the orthogonal floor).
SHAPES = [(24, 40), (40, 24), (16, 8, 3), (16, 16, 3, 3)]
BUDGETED = ["eoi", "ai", "kaiming", "kaiming_fanin"]


def test_registry_names_and_lookup():
    assert sorted(schemes.SCHEMES) == ["ai", "eoi", "kaiming", "kaiming_fanin", "sao"]
    assert schemes.get("sao") is eoi_core.sao.sao
    custom = functools.partial(schemes.ai, steps=3)
    assert schemes.get(custom) is custom
    with pytest.raises(ValueError, match=r"\['ai', 'eoi', 'kaiming', 'kaiming_fanin', 'sao'\]"):
        schemes.get("orthogonal")
    with pytest.raises(TypeError, match="scheme must be"):
        schemes.get(3)


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("shape", SHAPES)
def test_mask_count_is_exact_and_weight_lives_on_the_mask(name, shape):
    weight, mask = schemes.get(name)(shape, 0.3, rng=0, dtype=np.float64)
    assert weight.shape == mask.shape == shape and mask.dtype == bool
    assert int(mask.sum()) == eoi_core.mask_count(0.3, int(np.prod(shape)))
    assert not weight[~mask].any()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(BUDGETED), st.integers(1, 4), st.floats(0.3, 1.0), st.integers(0, 10**6))
def test_groups_get_exact_counts_per_block(name, groups, density, seed):
    shape = (4 * groups, 6, 3)
    weight, mask = schemes.get(name)(shape, density, rng=seed, groups=groups, dtype=np.float64)
    block = parse_layout(shape, groups).block_size
    per_block = mask.reshape(groups, -1).sum(axis=1)
    assert per_block.tolist() == [eoi_core.mask_count(density, block)] * groups


@pytest.mark.parametrize("name", ["eoi", "ai"])
def test_orthogonal_schemes_refuse_densities_below_the_floor(name):
    with pytest.raises(ValueError, match="infeasible"):
        schemes.get(name)((64, 64), 0.01)


@pytest.mark.parametrize("name", ["kaiming", "kaiming_fanin"])
def test_random_schemes_have_no_floor_and_no_centre_policy(name):
    _, mask = schemes.get(name)((64, 64), 0.001, rng=0)
    assert int(mask.sum()) == 4
    with pytest.raises(ValueError, match="center_density"):
        schemes.get(name)((8, 8, 3), 0.5, center_density="sqrt")


@pytest.mark.parametrize("name", list(schemes.SCHEMES))
def test_same_seed_same_result(name):
    density = eoi_core.sao.feasible_densities((32, 16, 3))[1] if name == "sao" else 0.2
    first = schemes.get(name)((32, 16, 3), density, rng=11)
    second = schemes.get(name)((32, 16, 3), density, rng=np.random.default_rng(11))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_eoi_entry_is_sparse_orthogonal():
    expected = eoi_core.sparse_orthogonal((40, 24), 0.2, rng=5, gain=2.0)
    got = schemes.eoi((40, 24), 0.2, rng=5, gain=2.0)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_kaiming_scales_by_dense_fan_in_and_kaiming_fanin_by_the_actual_one():
    weight, mask = schemes.kaiming((600, 400, 3), 0.1, gain=2.0, rng=0, dtype=np.float64)
    assert weight[mask].std() == pytest.approx(2.0 / np.sqrt(1200), rel=0.05)
    weight, mask = schemes.kaiming_fanin((600, 400), 0.1, gain=2.0, rng=0, dtype=np.float64)
    # Each unit's pre-activation variance for unit-variance inputs is gain^2 on average.
    per_unit = (weight**2).sum(axis=1)
    assert per_unit.mean() == pytest.approx(4.0, rel=0.05)


def test_ai_descends_towards_isometry_and_keeps_its_mask():
    start, start_mask = approximate_isometry((48, 48), 0.4, rng=3, steps=0, dtype=np.float64)
    done, done_mask = approximate_isometry((48, 48), 0.4, rng=3, steps=300, dtype=np.float64)
    assert np.array_equal(start_mask, done_mask)
    assert isometry_loss(done) < 0.05 * isometry_loss(start)
    assert not done[~done_mask].any()


def test_ai_on_a_kernel_works_on_the_centre_and_fills_the_rest_with_zeros():
    shape = (32, 16, 3, 3)
    weight, mask = approximate_isometry(shape, 0.2, rng=0, steps=400, dtype=np.float64, center_density="sqrt")
    centre = weight[:, :, 1, 1]
    off = weight.copy()
    off[:, :, 1, 1] = 0
    assert not off.any()  # values only at the centre
    layout = parse_layout(shape)
    budget = eoi_core.budget.plan_budget(layout, 0.2, "sqrt")
    # The descent runs on `budget.centre` entries of the centre; the fill may add trainable zeros there too.
    assert np.count_nonzero(centre) <= budget.centre <= int(mask[:, :, 1, 1].sum())
    assert int(mask.sum()) == budget.block
    assert isometry_loss(centre) < 1e-2


def test_ai_learning_rate_and_steps_are_checked():
    with pytest.raises(ValueError, match="steps"):
        approximate_isometry((8, 8), 0.5, steps=-1)
    with pytest.raises(ValueError, match="learning_rate"):
        approximate_isometry((8, 8), 0.5, learning_rate=2.0)


def test_with_options_binds_keywords():
    fast = schemes.with_options("ai", steps=0)
    weight, _ = fast((16, 16), 0.5, rng=0, dtype=np.float64)
    start, _ = schemes.kaiming_fanin((16, 16), 0.5, rng=0, dtype=np.float64)
    assert np.allclose(weight, start)
