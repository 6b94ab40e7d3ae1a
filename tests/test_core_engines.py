"""Promise: the Numba engine reproduces the reference engine (the specification):
identical masks and identical float64 weights, value for value (both apply the same float64
operations to every entry, in the same order), for every shape, density and seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _strategies import dense_shapes, feasible_density, kernel_shapes, seeds


def both_engines(shape, density, **kwargs):
    reference = eoi_core.sparse_orthogonal(shape, density, engine="reference", **kwargs)
    fast = eoi_core.sparse_orthogonal(shape, density, engine="numba", **kwargs)
    return reference, fast


@settings(max_examples=80, deadline=None)
@given(data=st.data(), shape=dense_shapes(max_dim=64), seed=seeds())
def test_engines_agree_on_dense_weights(data, shape, seed):
    density = data.draw(feasible_density(shape))
    gain = data.draw(st.sampled_from([1.0, 1.7]))
    (w_ref, m_ref), (w_fast, m_fast) = both_engines(shape, density, gain=gain, dtype=np.float64, rng=seed)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds(), centre=st.sampled_from([None, "sqrt"]))
def test_engines_agree_on_kernels(data, layer, seed, centre):
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    (w_ref, m_ref), (w_fast, m_fast) = both_engines(
        shape, density, groups=groups, center_density=centre, dtype=np.float64, rng=seed
    )
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


@settings(max_examples=20, deadline=None)
@given(shape=dense_shapes(max_dim=24), dtype=st.sampled_from(["float16", "bfloat16", "float32"]), seed=seeds())
def test_engines_cast_once_to_the_same_bits(shape, dtype, seed):
    density = eoi_core.min_density(shape) + 0.5 * (1 - eoi_core.min_density(shape))
    (w_ref, m_ref), (w_fast, m_fast) = both_engines(shape, density, dtype=dtype, rng=seed)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref.astype(np.float64), w_fast.astype(np.float64))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(2, 40), rotations=st.integers(0, 300), seed=seeds())
def test_engines_agree_on_exact_rotation_counts(rows, cols, rotations, seed):
    w_ref, m_ref = eoi_core.givens_compose(rows, cols, rotations, rng=seed, engine="reference")
    w_fast, m_fast = eoi_core.givens_compose(rows, cols, rotations, rng=seed, engine="numba")
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


def test_engines_agree_across_rotation_blocks():
    # large enough that the rotation stream is drawn in several blocks
    (w_ref, m_ref), (w_fast, m_fast) = both_engines((96, 384), 0.3, dtype=np.float64, rng=11)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


@pytest.mark.parametrize("hint", [0, 40])
@pytest.mark.parametrize(("shape", "density"), [((96, 384), 0.3), ((300, 300), 0.9), ((1, 600), 0.5)])
def test_pattern_records_do_not_depend_on_their_sizing(monkeypatch, hint, shape, density):
    # The pattern pass sizes its rotation records from a mean-field estimate (plus a tenth, to the
    # end of a block) and grows them when that falls short: force the growth, from nothing and
    # from part-way.
    from eoi_core import engine
    from eoi_core.randomness import RotationStream, as_generator

    rows, cols = shape
    budget = int(density * rows * cols)

    def run():
        return engine.pattern_pass(rows, cols, budget, RotationStream(as_generator(7), cols))

    expected = run()
    growths = []
    grown = engine._grown
    monkeypatch.setattr(engine, "_rotations_hint", lambda *args: hint)
    monkeypatch.setattr(engine, "_grown", lambda *args: growths.append(args[1:]) or grown(*args))
    pattern = run()
    assert growths and pattern.first.shape[0] > hint
    assert pattern.nnz == expected.nnz
    for name in ("bits", "counts", "first", "second", "cos", "sin", "touched"):
        assert np.array_equal(getattr(pattern, name), getattr(expected, name)), name
    (w_ref, m_ref), (w_fast, m_fast) = both_engines(shape, density, dtype=np.float64, rng=7)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


@pytest.mark.parametrize(("rows", "cols", "density"), [(1024, 1024, 0.1), (512, 2048, 0.01), (2048, 2048, 0.5)])
def test_the_sizing_hint_is_close_enough_to_need_no_growth(rows, cols, density):
    # Not a promise of the results (the test above shows they do not depend on it), but of the
    # speed: the mean-field hint plus a tenth covers the pass, so nothing is copied, and
    # it does not overshoot by much, so little memory is wasted.
    from eoi_core import engine
    from eoi_core.randomness import RotationStream, as_generator

    budget = int(density * rows * cols + 0.5)
    pattern = engine.pattern_pass(rows, cols, budget, RotationStream(as_generator(0), cols))
    hint = engine._rotations_hint(rows, cols, budget)
    applied = pattern.first.shape[0]
    assert applied <= hint * 11 // 10  # the records hold the whole pass
    assert hint <= 1.1 * applied  # and are not much larger than it


def test_engines_agree_when_the_wide_scatter_takes_several_bands(monkeypatch):
    from eoi_core import engine

    monkeypatch.setattr(engine, "BAND_ENTRIES", 64)  # many bands of columns, some of one column
    (w_ref, m_ref), (w_fast, m_fast) = both_engines((24, 200), 0.4, dtype=np.float64, rng=5)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


def _bits(arrays):
    return tuple(np.ascontiguousarray(a).view(np.uint8).tobytes() for a in arrays)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), rows=st.integers(1, 200), cols=st.one_of(st.integers(1, 200), st.sampled_from([64, 128, 192])),
       seed=seeds(),
       dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64"]), threads=st.integers(1, 3))
def test_streamed_writes_give_the_same_bits(data, rows, cols, seed, dtype, threads):
    # Large outputs are written whole rows at a time with non-temporal stores (G^T: rows >= cols), straight
    # when rows are whole 64-entry words on cache lines (64, 128, 192 columns), else through a staging row;
    # forced here on small ones, whole and in shards at any offset, they must give the per-entry writes' bits.
    from eoi_core import engine

    shape = (max(rows, cols), min(rows, cols))
    density = data.draw(feasible_density(shape))
    lo = data.draw(st.integers(0, shape[0]))
    hi = data.draw(st.integers(lo, shape[0]))
    left = data.draw(st.one_of(st.integers(0, shape[1]), st.just(0)))
    right = data.draw(st.one_of(st.integers(left, shape[1]), st.just(min(left + 64, shape[1]))))
    index = (slice(lo, hi), slice(left, right))
    results = []
    previous = eoi_core.get_num_threads()
    try:
        eoi_core.set_num_threads(threads)
        for stream_bytes in (0, 1 << 62):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(engine, "STREAM_BYTES", stream_bytes)
                patch.setattr(engine, "THREAD_ENTRIES", 1)
                whole = eoi_core.sparse_orthogonal(shape, density, rng=seed, dtype=dtype, gain=1.5)
                shard = eoi_core.sparse_orthogonal_shard(shape, density, index, rng=seed, dtype=dtype, gain=1.5)
                results.append(_bits(whole + shard))
    finally:
        eoi_core.set_num_threads(previous)
    assert results[0] == results[1]


@pytest.mark.parametrize("width", [16, 32, 64])
def test_permute_tables_spread_each_chunks_values_over_its_set_bits(width):
    # The AVX2 expand (engine._expand_codegen) loads a chunk's next values and shuffles them by these
    # tables: VPERMD on 32-bit indices, then zeros where the bit is clear; PSHUFB on bytes, 0x80 a zero.
    # Emulated here, so the tables are checked on every machine, whichever strategy it compiles.
    from eoi_core.engine import _PERMUTE_TABLES

    table = _PERMUTE_TABLES[width]
    lanes = 4 if width == 64 else 8
    values = np.arange(1, lanes + 1, dtype=f"u{width // 8}")  # distinct, non-zero
    loaded = values.view(np.uint8)
    for bits in range(1 << lanes):
        slots = [slot for slot in range(lanes) if bits >> slot & 1]
        expected = np.zeros(lanes, dtype=values.dtype)
        expected[slots] = values[: len(slots)]
        control = table[bits]
        if width == 16:
            spread = np.where(control & 0x80, 0, loaded[control & 0x0F]).astype(np.uint8).view(values.dtype)
        else:
            moved = loaded.view(np.uint32)[control].view(values.dtype)
            spread = np.where([bool(bits >> slot & 1) for slot in range(lanes)], moved, 0)
        assert np.array_equal(spread, expected), bits


@pytest.mark.parametrize(("shape", "groups"), [((96, 32, 3, 3), 1), ((48, 8, 3), 3), ((200, 72), 1), ((200, 128), 1)])
def test_streamed_writes_match_the_reference_and_leave_strided_outputs_to_the_per_entry_writes(
        monkeypatch, shape, groups):
    from eoi_core import engine

    monkeypatch.setattr(engine, "STREAM_BYTES", 0)
    (w_ref, m_ref), (w_fast, m_fast) = both_engines(shape, 0.3, groups=groups, dtype=np.float64, rng=2)
    assert np.array_equal(m_ref, m_fast)
    assert np.array_equal(w_ref, w_fast)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 30), length=st.integers(1, 70), offset=st.integers(0, 7), seed=seeds(),
       density=st.floats(0.0, 0.9, allow_subnormal=False), share=st.floats(0.0, 1.0, allow_subnormal=False))
def test_fill_with_row_counts_sets_the_same_entries(rows, length, offset, seed, density, share):
    # the row counts only let the fast fill skip rows; any alignment of the mask in memory
    from eoi_core import engine, reference

    rng = np.random.default_rng(seed)
    memory = np.zeros(rows * length + offset, dtype=bool)
    mask = memory[offset:]
    mask[:] = rng.random(rows * length) < density
    zeros = int((~mask).sum())
    ranks = np.sort(rng.choice(zeros, int(share * zeros), replace=False)).astype(np.int64)
    expected = mask.copy()
    reference.fill(expected, ranks)
    for hint in (None, mask.reshape(rows, length).sum(axis=1)):
        filled = np.zeros(memory.shape, dtype=bool)[offset:]  # misaligned like the input
        filled[:] = mask
        engine.fill(filled, ranks, hint)
        assert np.array_equal(filled, expected)
