"""Promise: ``expected_density`` is the exact Markov-chain law of a row's support size (docs/promises.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core


def brute_force_density(width: int, steps: int) -> float:
    """The chain by its transition matrix: P(k -> k+1) = 2 k (m - k) / (m (m - 1))."""
    transition = np.zeros((width + 1, width + 1))
    for k in range(1, width + 1):
        rate = 2 * k * (width - k) / (width * (width - 1))
        transition[k, k] = 1 - rate
        if k < width:
            transition[k, k + 1] = rate
    start = np.zeros(width + 1)
    start[1] = 1
    distribution = start @ np.linalg.matrix_power(transition, steps)
    return float(distribution @ np.arange(width + 1)) / width


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(2, 30), steps=st.integers(0, 400))
def test_matches_the_transition_matrix(rows, cols, steps):
    expected = eoi_core.expected_density(rows, cols, steps)
    assert expected == pytest.approx(brute_force_density(max(rows, cols), steps), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("rows", "cols", "steps"),
    [(8, 8, 10), (16, 64, 60), (64, 16, 150), (40, 40, 120), (12, 100, 400)],
)
def test_empirical_mean_density_is_within_four_standard_errors(rows, cols, steps):
    seeds = 400
    densities = np.array(
        [eoi_core.givens_compose(rows, cols, steps, rng=seed)[1].mean() for seed in range(seeds)]
    )
    standard_error = densities.std(ddof=1) / np.sqrt(seeds)
    assert abs(densities.mean() - eoi_core.expected_density(rows, cols, steps)) <= 4 * standard_error


def test_vectorised_over_rotation_counts():
    steps = np.array([[0, 5], [50, 5]])
    result = eoi_core.expected_density(20, 10, steps)
    assert result.shape == (2, 2)
    assert result[0, 0] == pytest.approx(1 / 20)
    assert result[0, 1] == result[1, 1]
    assert result[1, 0] == pytest.approx(brute_force_density(20, 50), rel=1e-12)


@pytest.mark.parametrize(("rows", "cols", "density"), [(64, 64, 0.1), (256, 1024, 0.05), (2048, 512, 0.3)])
def test_rotations_for_density_is_the_first_crossing(rows, cols, density):
    t = eoi_core.rotations_for_density(rows, cols, density)
    before, at = eoi_core.expected_density(rows, cols, [t - 1, t])
    assert before < density <= at


def test_rotations_for_density_at_the_start():
    assert eoi_core.rotations_for_density(10, 10, 0.1) == 0
    with pytest.raises(ValueError, match="asymptotically"):
        eoi_core.rotations_for_density(10, 10, 1.0)


def test_expected_density_is_monotone_and_tends_to_one():
    values = eoi_core.expected_density(32, 32, np.arange(0, 2000, 50))
    assert np.all(np.diff(values) >= -1e-15)  # non-decreasing up to float64 rounding
    assert np.all(np.diff(values[:6]) > 0)
    assert values[-1] == pytest.approx(1.0, abs=1e-6)
