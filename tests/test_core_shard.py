"""Promise: any rectangle of a weight can be built alone, bit-identical to the slice of the
whole (weight bits and mask), for every engine, shape, density, dtype, seed and thread count;
and a shard needs memory for itself and the support pattern, not for the whole weight."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _strategies import DTYPES, feasible_density, kernel_shapes, seeds
from eoi_core import engine, threads


@st.composite
def shapes(draw, max_dim: int = 72) -> tuple[int, int]:
    """Square, tall and wide dense shapes (wide ones have a free axis 0, the others 1)."""
    aspect = draw(st.sampled_from(["square", "tall", "wide", "any"]))
    small, large = draw(st.integers(1, max_dim // 3)), draw(st.integers(1, max_dim))
    return {"square": (large, large), "tall": (large + small, small), "wide": (small, large + small),
            "any": (small, large)}[aspect]


@st.composite
def rectangles(draw, shape: tuple[int, ...], kernel_axes: bool = True) -> tuple:
    """A random shard index: slices or (start, stop) pairs, empty ones allowed, kernel axes optional."""
    index = []
    for axis, size in enumerate(shape):
        start = draw(st.integers(0, size))
        stop = draw(st.integers(start, size))
        if axis >= 2 and not (kernel_axes and draw(st.booleans())):
            start, stop = 0, size
        index.append(slice(start, stop) if draw(st.booleans()) else (start, stop))
    rank = draw(st.integers(2, len(shape)))
    return tuple(index[:rank])


def _region(index, shape):
    full = list(index) + [slice(None)] * (len(shape) - len(index))
    return tuple(item if isinstance(item, slice) else slice(*item) for item in full)


def assert_same_bits(shard, whole, index):
    (weight, mask), (full_weight, full_mask) = shard, whole
    expected = full_weight[_region(index, full_weight.shape)]
    assert weight.shape == expected.shape and weight.dtype == expected.dtype
    assert np.array_equal(weight.view(np.uint8), np.ascontiguousarray(expected).view(np.uint8))
    assert np.array_equal(mask, full_mask[_region(index, full_mask.shape)])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=shapes(), seed=seeds(), dtype=st.sampled_from(DTYPES))
def test_dense_shard_is_the_slice_of_the_whole(data, shape, seed, dtype):
    density = data.draw(feasible_density(shape))
    gain = data.draw(st.sampled_from([1.0, 0.7]))
    whole = eoi_core.sparse_orthogonal(shape, density, rng=seed, dtype=dtype, gain=gain)
    for _ in range(3):
        index = data.draw(rectangles(shape))
        shard = eoi_core.sparse_orthogonal_shard(shape, density, index, rng=seed, dtype=dtype, gain=gain)
        assert_same_bits(shard, whole, index)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds(), centre=st.sampled_from([None, "sqrt"]))
def test_kernel_shard_is_the_slice_of_the_whole(data, layer, seed, centre):
    # groups split the out axis, so a shard may cover parts of several group blocks;
    # kernel axes may be sliced too (the fill lands anywhere in the kernel)
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    whole = eoi_core.sparse_orthogonal(shape, density, rng=seed, groups=groups, center_density=centre)
    for _ in range(3):
        index = data.draw(rectangles(shape))
        shard = eoi_core.sparse_orthogonal_shard(
            shape, density, index, rng=seed, groups=groups, center_density=centre
        )
        assert_same_bits(shard, whole, index)


@settings(max_examples=10, deadline=None)
@given(data=st.data(), shape=shapes(max_dim=24), seed=seeds())
def test_reference_engine_shard_is_its_slice(data, shape, seed):
    density = data.draw(feasible_density(shape))
    index = data.draw(rectangles(shape))
    whole = eoi_core.sparse_orthogonal(shape, density, rng=seed, engine="reference")
    shard = eoi_core.sparse_orthogonal_shard(shape, density, index, rng=seed, engine="reference")
    assert_same_bits(shard, whole, index)


@pytest.mark.parametrize("shape", [(96, 320), (320, 96), (200, 200), (24, 16, 3, 3)])
@pytest.mark.parametrize("world", [1, 3, 4])
def test_shards_of_every_rank_tile_the_whole(shape, world):
    # the default split of the free axis, as a distributed adapter would use it
    density = max(0.1, eoi_core.min_density(shape))
    weight, mask = eoi_core.sparse_orthogonal(shape, density, rng=9)
    axis = eoi_core.free_axis(shape)
    pieces = []
    for start, stop in eoi_core.shard_bounds(shape[axis], world):
        index = [slice(None)] * 2
        index[axis] = slice(start, stop)
        pieces.append(eoi_core.sparse_orthogonal_shard(shape, density, tuple(index), rng=9))
    assert np.array_equal(np.concatenate([w for w, _ in pieces], axis=axis).view(np.uint8), weight.view(np.uint8))
    assert np.array_equal(np.concatenate([m for _, m in pieces], axis=axis), mask)


@pytest.fixture
def many_tasks(monkeypatch):
    """Make even small weights split into many words and threads, to exercise the pool."""
    monkeypatch.setattr(engine, "BAND_ENTRIES", 64)
    monkeypatch.setattr(engine, "THREAD_ENTRIES", 1)
    monkeypatch.setattr(engine, "WARM_BYTES", 1)  # one thread maps the output's pages, even here
    previous = eoi_core.get_num_threads()
    yield
    eoi_core.set_num_threads(previous)


@pytest.mark.parametrize("shape", [(300, 700), (700, 300), (512, 512), (48, 40, 3, 3)])
def test_results_do_not_depend_on_the_thread_count(many_tasks, shape):
    outputs = []
    for count in (1, 2, 3):
        eoi_core.set_num_threads(count)
        weight, mask = eoi_core.sparse_orthogonal(shape, 0.2, rng=4, gain=1.5)
        shard = eoi_core.sparse_orthogonal_shard(shape, 0.2, (slice(7, 250), slice(3, 290)), rng=4, gain=1.5)
        outputs.append((weight.tobytes(), mask.tobytes(), shard[0].tobytes(), shard[1].tobytes()))
    assert outputs[0] == outputs[1] == outputs[2]


def test_a_started_task_runs_beside_the_caller_and_hands_back_its_result_or_error():
    from eoi_core.threads import start

    assert start(lambda: 6 * 7, 2).result(timeout=10) == 42

    def fails():
        raise ValueError("from the pool")

    with pytest.raises(ValueError, match="from the pool"):
        start(fails, 2).result(timeout=10)


def test_generator_is_consumed_as_by_the_whole_call():
    whole = eoi_core.sparse_orthogonal((40, 90), 0.2, rng=np.random.default_rng(3))
    generator = np.random.default_rng(3)
    shard = eoi_core.sparse_orthogonal_shard((40, 90), 0.2, ((10, 30), (0, 90)), rng=generator)
    assert_same_bits(shard, whole, ((10, 30), (0, 90)))
    after_whole = np.random.default_rng(3)
    eoi_core.sparse_orthogonal((40, 90), 0.2, rng=after_whole)
    assert generator.integers(1 << 62) == after_whole.integers(1 << 62)


@pytest.mark.parametrize("index", [(slice(5, 5), slice(None)), ((0, 40), (7, 7)), (slice(None), slice(None), (1, 1))])
def test_empty_shard_is_an_empty_array(index):
    weight, mask = eoi_core.sparse_orthogonal_shard((40, 30, 3), 0.3, index, rng=0, dtype="float16")
    expected = np.zeros((40, 30, 3))[_region(index, (40, 30, 3))].shape
    assert weight.shape == mask.shape == expected and weight.dtype == np.float16 and mask.dtype == np.bool_


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        ((slice(0, 4),), ValueError, "first two axes"),
        ((slice(0, 4), slice(0, 4), slice(None)), ValueError, "at most all 2"),
        ((slice(0, 8, 2), slice(None)), ValueError, "step 1"),
        (((0, 41), (0, 3)), ValueError, r"0 <= start <= stop <= shape\[0\]=40"),
        (((3, 1), (0, 3)), ValueError, "start <= stop"),
        (((0.0, 4), (0, 3)), TypeError, "pair of ints"),
        ((0, slice(None)), TypeError, "index\\[0\\]"),
        (slice(0, 4), TypeError, "tuple of slices"),
    ],
)
def test_bad_index_is_an_error_naming_it(index, error, match):
    with pytest.raises(error, match=match):
        eoi_core.sparse_orthogonal_shard((40, 30), 0.3, index, rng=0)


def test_shard_errors_come_from_the_same_checks_as_the_whole():
    with pytest.raises(ValueError, match="infeasible"):
        eoi_core.sparse_orthogonal_shard((64, 32), 0.001, (slice(0, 4), slice(None)), rng=0)
    with pytest.raises(ValueError, match="rng=None"):
        eoi_core.sparse_orthogonal_shard((64, 32), 0.1, (slice(0, 4), slice(None)))
    with pytest.raises(ValueError, match="engine"):
        eoi_core.sparse_orthogonal_shard((64, 32), 0.1, (slice(0, 4), slice(None)), rng=0, engine="fast")


def test_shard_memory_is_the_shard_and_the_pattern_not_the_whole():
    # NumPy reports its allocations to tracemalloc; the engine's per-word buffers are
    # O(columns + 64 rows' entries), far below the bound.
    shape, density = (1024, 8192), 0.1
    eoi_core.sparse_orthogonal_shard(shape, density, (slice(0, 64), slice(None)), rng=1)  # compile first
    index = (slice(256, 384), slice(None))
    shard_bytes = 128 * 8192 * 5
    pattern_bytes = 1024 * 8192 // 8
    tracemalloc.start()
    try:
        weight, _ = eoi_core.sparse_orthogonal_shard(shape, density, index, rng=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weight.shape == (128, 8192)
    assert peak <= 1.5 * shard_bytes + 2 * pattern_bytes + (4 << 20)
    assert peak < 1024 * 8192 * 5 / 2  # far from the whole weight + mask


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, 10_000), parts=st.integers(1, 64))
def test_shard_bounds_cover_the_axis_in_near_equal_pieces(size, parts):
    bounds = eoi_core.shard_bounds(size, parts)
    assert len(bounds) == parts and bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_free_axis_is_the_rows_of_the_wide_givens_matrix():
    assert eoi_core.free_axis((100, 300)) == 0
    assert eoi_core.free_axis((300, 100)) == 1
    assert eoi_core.free_axis((64, 64)) == 1
    assert eoi_core.free_axis((96, 64, 3, 3), groups=3) == 0  # 32 out per group < 64 in


def test_thread_count_setting_and_environment(monkeypatch):
    previous = eoi_core.get_num_threads()
    try:
        eoi_core.set_num_threads(3)
        assert eoi_core.get_num_threads() == 3
        with pytest.raises(ValueError, match="threads"):
            eoi_core.set_num_threads(0)
        with pytest.raises(TypeError, match="threads"):
            eoi_core.set_num_threads(1.5)
    finally:
        eoi_core.set_num_threads(previous)
    monkeypatch.setenv("EOI_NUM_THREADS", "5")
    assert threads._default() == 5
    monkeypatch.setenv("EOI_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="EOI_NUM_THREADS"):
        threads._default()
    monkeypatch.delenv("EOI_NUM_THREADS")
    assert 1 <= threads._default() <= threads.MAX_DEFAULT_THREADS


def test_a_failing_task_is_raised_after_the_others_finish():
    done = []

    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        threads.run_all([lambda: done.append(1), fail, lambda: done.append(2)], threads=2)
    assert sorted(done) == [1, 2]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_engine_threads_work_in_a_forked_child(many_tasks):
    import multiprocessing

    eoi_core.set_num_threads(2)
    expected = eoi_core.sparse_orthogonal((200, 300), 0.2, rng=1)[0]  # the pool exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        weight = pool.apply_async(eoi_core.sparse_orthogonal, ((200, 300), 0.2), {"rng": 1}).get(timeout=120)[0]
    assert np.array_equal(weight, expected)


def test_warming_pages_changes_no_bit(monkeypatch):
    monkeypatch.setattr(engine, "WARM_BYTES", 1)
    monkeypatch.setattr(engine, "THREAD_ENTRIES", 1)
    previous = eoi_core.get_num_threads()
    try:
        outputs = []
        for count in (1, 2, 3):
            eoi_core.set_num_threads(count)
            outputs.append(tuple(a.tobytes() for a in eoi_core.sparse_orthogonal((512, 300), 0.1, rng=8)))
    finally:
        eoi_core.set_num_threads(previous)
    assert outputs[0] == outputs[1] == outputs[2]
    weight, mask = np.zeros((40, 30), np.float32), np.zeros((40, 30), bool)
    engine._warm(weight, mask, np.zeros((9, 9), np.float32)[:, ::2])  # the strided one is left alone
    assert not weight.any() and not mask.any()
