"""Promise: SPEC 7 randomness; the same seed gives the same bits, different seeds differ,
and NumPy's global state is never touched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _strategies import seeds

SHAPES = [(40, 24), (24, 40), (32, 32), (16, 8, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_same_seed_same_bits(shape):
    first = eoi_core.sparse_orthogonal(shape, 0.3, rng=123)
    second = eoi_core.sparse_orthogonal(shape, 0.3, rng=123)
    assert first[0].tobytes() == second[0].tobytes()
    assert np.array_equal(first[1], second[1])


@settings(max_examples=30, deadline=None)
@given(seed=seeds(), other=seeds())
def test_different_seeds_differ(seed, other):
    if seed == other:
        return
    first, _ = eoi_core.sparse_orthogonal((32, 32), 0.2, rng=seed)
    second, _ = eoi_core.sparse_orthogonal((32, 32), 0.2, rng=other)
    assert not np.array_equal(first, second)


def test_generator_gives_the_same_as_its_seed_and_advances():
    by_int = eoi_core.sparse_orthogonal((20, 30), 0.3, rng=7)[0]
    generator = np.random.default_rng(7)
    first = eoi_core.sparse_orthogonal((20, 30), 0.3, rng=generator)[0]
    second = eoi_core.sparse_orthogonal((20, 30), 0.3, rng=generator)[0]
    assert np.array_equal(by_int, first)
    assert not np.array_equal(first, second)


def test_none_draws_fresh_entropy():
    first = eoi_core.sparse_orthogonal((32, 32), 0.2)[0]
    second = eoi_core.sparse_orthogonal((32, 32), 0.2)[0]
    assert not np.array_equal(first, second)


def test_global_numpy_state_is_untouched():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    eoi_core.sparse_orthogonal((16, 16), 0.5, rng=None)
    eoi_core.givens_compose(8, 8, 10, rng=None)
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("engine", eoi_core.ENGINES)
def test_known_answer_is_stable_across_versions(engine):
    # A fixed seed must keep giving the same mask: this pins the random-stream
    # protocol (spawned children, blocks of rotations, fill ranks).
    _, mask = eoi_core.sparse_orthogonal((6, 4), 0.5, rng=2024, engine=engine)
    assert mask.sum() == 12
    assert np.array_equal(mask, KNOWN_MASK)


# sha256 (first 16 hex digits) of np.packbits(mask) for rng=2024, and the mask count: masks
# depend only on integer draws (pairs, fill ranks), so they are the same on every machine;
# these pin the stream protocol across several rotation blocks, groups, kernels and a fixed angle.
KNOWN_MASK_DIGESTS = [
    ((96, 80), 0.3, {}, "7e3aae07a9083d8d", 2304),
    ((80, 200), 0.2, {}, "6ae9ee3cebdfb312", 3200),
    ((32, 16, 3, 3), 0.2, {"groups": 2}, "e3c1694d183a80b6", 922),
    ((300, 300), 0.1, {}, "e6b8c656e60e9d75", 9000),
    ((130, 70), 0.5, {"angle": np.pi / 4}, "bbc9671723c6dd61", 4550),
    ((1024, 700), 0.05, {}, "2e58be24bc07fe7e", 35840),
]


@pytest.mark.parametrize("shape, density, options, digest, count", KNOWN_MASK_DIGESTS)
def test_known_masks_are_stable_across_versions(shape, density, options, digest, count):
    _, mask = eoi_core.sparse_orthogonal(shape, density, rng=2024, **options)
    assert int(mask.sum()) == count
    assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16] == digest


KNOWN_MASK = np.array(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 1, 1]], dtype=bool
)
