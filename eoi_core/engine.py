"""The Numba engine: the reference's results, at close to the cost of writing them.

Same rotation stream, same stopping rule, same fill as :mod:`eoi_core.reference`;
the work is reorganised.  For the wide ``n x m`` Givens
matrix ``G`` (``n <= m``):

1. **Pattern pass** on bitsets.  The support of every column is a bitset of
   ``n`` bits; a rotation ORs two of them and its growth is a popcount.  The
   pattern does not depend on the angles, so this pass alone finds where the
   Givens phase stops and every column's final support, at O(n / 64) per
   rotation.  Its bitsets (``n * m / 8`` bytes) are kept: they size the value
   pass and locate the fill of any shard.
2. **Value pass, 64 rows at a time.**  A rotation mixes two *columns*, so
   every row of ``G`` evolves on its own: the rows of one bitset word can be
   replayed alone, touching only their own entries, and get exactly the values
   the whole would (each entry sees the same float64 operations in the same
   order).  Within a word a column's current support is one ``uint64``; its
   entries sit in a slot sized by its final support, in row order, at the
   popcount of the final support below their bit.  A rotation costs O(1)
   plus the word's entries in its two columns; words run on threads
   (:mod:`eoi_core.threads`; the kernels release the GIL).
3. **Scatter** of a word's values, cast once to the output dtype and copied
   as raw bits, and of the mask, straight into its part of the output: 64
   rows of the weight when it is ``G`` (``out < in``), 64 columns when it is
   ``G^T`` (``out >= in``).  Words never overlap, so the result does not
   depend on the number of threads.

The fill skips 8 mask bytes at a time (a popcount of their 0/1 bytes) to the
zero positions whose rank was drawn.  For a shard (:mod:`eoi_core.shard`) the
number of zeros before each of its rows follows from the bitsets, so only the
shard's own segments are walked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import jit
from .randomness import RotationStream
from .threads import get_num_threads, run_all

__all__ = ["write_givens", "fill", "Pattern", "pattern_pass", "write_values", "support_before", "fill_shard"]


@intrinsic
def _popcount(typingctx, word):
    """LLVM's ``ctpop`` on a uint64 (a single POPCNT instruction on x86-64)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@jit(nogil=True)
def _pattern(bits, counts, nnz, budget, first, second, limit):
    """Advance the support pattern through at most ``limit`` rotations.

    Returns ``(rotations applied, nnz, stopped)``; ``stopped`` is True when the
    next rotation would exceed ``budget`` or the support has reached it.
    """
    words = bits.shape[1]
    for t in range(limit):
        if nnz == budget:
            return t, nnz, True
        i = first[t]
        j = second[t]
        count_i = counts[i]
        count_j = counts[j]
        if count_i == 0 and count_j == 0:
            continue  # two empty columns: the rotation changes nothing
        union_bits = np.uint64(0)
        for w in range(words):
            union_bits += _popcount(bits[i, w] | bits[j, w])
        union = np.int64(union_bits)
        grown = 2 * union - count_i - count_j
        if nnz + grown > budget:
            return t, nnz, True
        if grown:
            for w in range(words):
                merged = bits[i, w] | bits[j, w]
                bits[i, w] = merged
                bits[j, w] = merged
            counts[i] = union
            counts[j] = union
            nnz += grown
    return limit, nnz, False


@intrinsic
def _trailing_zeros(typingctx, word):
    """LLVM's ``cttz`` on a non-zero uint64 (a single TZCNT/BSF instruction on x86-64)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@jit(nogil=True, inline="always")
def _masked_popcount(bits, j, lo, hi):
    """Number of set bits ``lo <= r < hi`` in the bitset ``bits[j]``."""
    if hi <= lo:
        return 0
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    first_word = lo // 64
    last_word = (hi - 1) // 64
    total = np.uint64(0)
    for w in range(first_word, last_word + 1):
        word = bits[j, w]
        if w == first_word:
            word &= ones << np.uint64(lo % 64)
        if w == last_word:
            word &= ones >> np.uint64(63 - (hi - 1) % 64)
        total += _popcount(word)
    return np.int64(total)


@jit(nogil=True, inline="always")
def _below_lowest(word):
    """The bits below the lowest set bit of a non-zero ``word``."""
    return (word & (np.uint64(0) - word)) - np.uint64(1)


@jit(nogil=True)
def _word_values(bits, w, keep, first, second, cos, sin):
    """Replay the rotations on the rows ``64 w + b`` (``b`` a set bit of ``keep``) only.

    Column ``j``'s entries among these rows are the set bits of
    ``final[j] = bits[j, w] & keep``, stored in row order in the slot
    ``values[starts[j]:starts[j + 1]]``: the entry of row ``64 w + b`` sits at
    ``starts[j] + popcount(final[j] & (2^b - 1))``.  The current support of
    each column among them is one word, so a rotation costs O(1) plus its
    entries, and every entry sees the same float64 operations as in a replay
    of all rows.  Returns ``(final, starts, values)``.
    """
    one = np.uint64(1)
    cols = bits.shape[0]
    final = np.empty(cols, dtype=np.uint64)
    starts = np.empty(cols + 1, dtype=np.int64)
    starts[0] = 0
    for j in range(cols):
        word = bits[j, w] & keep
        final[j] = word
        starts[j + 1] = starts[j] + np.int64(_popcount(word))
    values = np.empty(starts[cols], dtype=np.float64)
    current = np.zeros(cols, dtype=np.uint64)
    rest = keep
    while rest:  # the identity: column r holds row r
        low = rest & (np.uint64(0) - rest)
        r = 64 * w + np.int64(_trailing_zeros(rest))
        current[r] = low
        values[starts[r] + np.int64(_popcount(final[r] & (low - one)))] = 1.0
        rest &= rest - one
    for t in range(first.shape[0]):
        i = first[t]
        j = second[t]
        support_i = current[i]
        support_j = current[j]
        if (support_i | support_j) == 0:
            continue  # neither column holds one of these rows yet
        c = cos[t]
        s = sin[t]
        final_i = final[i]
        final_j = final[j]
        base_i = starts[i]
        base_j = starts[j]
        rest = support_i & support_j
        while rest:
            below = _below_lowest(rest)
            p = base_i + np.int64(_popcount(final_i & below))
            q = base_j + np.int64(_popcount(final_j & below))
            a = values[p]
            b = values[q]
            values[p] = c * a - s * b
            values[q] = s * a + c * b
            rest &= rest - one
        rest = support_i & ~support_j
        while rest:  # only in column i: column j gains the row
            below = _below_lowest(rest)
            p = base_i + np.int64(_popcount(final_i & below))
            q = base_j + np.int64(_popcount(final_j & below))
            a = values[p]
            values[q] = s * a
            values[p] = c * a
            rest &= rest - one
        rest = support_j & ~support_i
        while rest:  # only in column j: column i gains the row
            below = _below_lowest(rest)
            p = base_i + np.int64(_popcount(final_i & below))
            q = base_j + np.int64(_popcount(final_j & below))
            b = values[q]
            values[p] = -(s * b)
            values[q] = c * b
            rest &= rest - one
        union = support_i | support_j
        current[i] = union
        current[j] = union
    return final, starts, values


@jit(nogil=True)
def _scatter_word(weight_bits, mask, final, starts, value_bits, w, row0, col0, col1, transposed):
    """Write the columns ``[col0, col1)`` of one word's rows into the output.

    ``value_bits[p - starts[col0]]`` is the cast value of slot entry ``p``;
    the output holds ``G[row0:, col0:col1]`` (its transpose when
    ``transposed``).  Columns are walked in order and rows within a column in
    order, so only a few cache lines per output row are in flight.
    """
    one = np.uint64(1)
    base = starts[col0]
    for j in range(col0, col1):
        rest = final[j]
        p = starts[j] - base
        while rest:
            r = 64 * w + np.int64(_trailing_zeros(rest)) - row0
            if transposed:
                weight_bits[j - col0, r] = value_bits[p]
                mask[j - col0, r] = True
            else:
                weight_bits[r, j - col0] = value_bits[p]
                mask[r, j - col0] = True
            p += 1
            rest &= rest - one


@jit(nogil=True)
def _word_counts(bits, first_word, keeps, col0, col1):
    """Entries of each word (``keeps[k]`` of word ``first_word + k``) in the columns ``[col0, col1)``."""
    counts = np.zeros(keeps.shape[0], dtype=np.int64)
    for j in range(col0, col1):
        for k in range(keeps.shape[0]):
            counts[k] += np.int64(_popcount(bits[j, first_word + k] & keeps[k]))
    return counts


@jit(nogil=True)
def _gather_rows(weight_bits, mask, bits, first_word, keeps, starts, offsets, value_bits, row0, col0, j0, j1):
    """Weight is ``G^T``: write its rows ``j0 .. j1 - 1`` (columns of ``G``) one after another.

    Word ``k``'s entries of column ``j`` are the set bits of
    ``bits[j, first_word + k] & keeps[k]``, in row order, from
    ``value_bits[offsets[k] + starts[k, j - col0]]`` on; each output row is
    written from left to right.
    """
    one = np.uint64(1)
    for j in range(j0, j1):
        for k in range(keeps.shape[0]):
            rest = bits[j, first_word + k] & keeps[k]
            p = offsets[k] + starts[k, j - col0]
            base = 64 * (first_word + k) - row0
            while rest:
                r = base + np.int64(_trailing_zeros(rest))
                weight_bits[j - col0, r] = value_bits[p]
                mask[j - col0, r] = True
                p += 1
                rest &= rest - one


@jit(nogil=True)
def _support_before_wide(bits, lo, hi, col0, col1):
    """For ``G`` rows ``lo <= r < hi``: support entries in earlier rows and in row ``r`` left of ``col0``, and inside ``[col0, col1)``.

    Returns ``(below, left, inside)``: ``below[r - lo]`` counts the entries
    of rows ``< r``, ``left`` those of row ``r`` in columns ``< col0``,
    ``inside`` those in ``[col0, col1)``.  Walks the set bits of rows ``< hi``.
    """
    cols = bits.shape[0]
    span = hi - lo
    total = np.zeros(span, dtype=np.int64)
    left = np.zeros(span, dtype=np.int64)
    inside = np.zeros(span, dtype=np.int64)
    earlier = 0
    last_word = (hi - 1) // 64
    for j in range(cols):
        for w in range(last_word + 1):
            word = bits[j, w]
            while word:
                r = 64 * w + np.int64(_trailing_zeros(word))
                word &= word - np.uint64(1)
                if r < lo:
                    earlier += 1
                elif r < hi:
                    total[r - lo] += 1
                    if j < col0:
                        left[r - lo] += 1
                    elif j < col1:
                        inside[r - lo] += 1
    below = np.empty(span, dtype=np.int64)
    for k in range(span):
        below[k] = earlier
        earlier += total[k]
    return below, left, inside


@jit(nogil=True)
def _support_before_tall(bits, counts, lo, hi, col0, col1):
    """As :func:`_support_before_wide` for rows of ``G^T`` (columns ``lo <= j < hi`` of ``G``)."""
    span = hi - lo
    below = np.empty(span, dtype=np.int64)
    left = np.empty(span, dtype=np.int64)
    inside = np.empty(span, dtype=np.int64)
    earlier = 0
    for j in range(lo):
        earlier += counts[j]
    for j in range(lo, hi):
        below[j - lo] = earlier
        earlier += counts[j]
        left[j - lo] = _masked_popcount(bits, j, 0, col0)
        inside[j - lo] = _masked_popcount(bits, j, col0, col1)
    return below, left, inside


@jit(nogil=True)
def _fill_segments(mask, first_zero, zeros, ranks):
    """Set the zero entries of ``mask`` (one segment per row) whose rank is drawn.

    Row ``k`` of ``mask`` is a segment of a block's row-major order; its first
    entry follows ``first_zero[k]`` zeros of the block, and it holds
    ``zeros[k]`` zeros.  ``ranks`` is sorted; segments come in block order.
    """
    wanted = ranks.shape[0]
    k = 0
    for row in range(mask.shape[0]):
        start = first_zero[row]
        stop = start + zeros[row]
        while k < wanted and ranks[k] < start:
            k += 1
        if k == wanted:
            return
        if ranks[k] >= stop:
            continue
        zero_rank = start
        for q in range(mask.shape[1]):
            if not mask[row, q]:
                if zero_rank == ranks[k]:
                    mask[row, q] = True
                    k += 1
                    if k == wanted or ranks[k] >= stop:
                        break
                zero_rank += 1


@jit(nogil=True)
def _fill(flat, words, head, ranks):
    """Set the zero bytes of ``flat`` with the given sorted ranks to True.

    ``words`` is the uint64 view of ``flat[head:head + 8 * len(words)]``; a
    word of 0/1 bytes holds ``8 - popcount(word)`` zeros, which lets the walk
    skip whole words that hold no wanted rank.
    """
    wanted = ranks.shape[0]
    k = 0
    zero_rank = 0
    p = 0
    size = flat.shape[0]
    word_end = head + 8 * words.shape[0]
    while k < wanted and p < size:
        if p >= head and p < word_end and (p - head) % 8 == 0:
            zeros = 8 - np.int64(_popcount(words[(p - head) // 8]))
            if zero_rank + zeros <= ranks[k]:
                zero_rank += zeros
                p += 8
                continue
        if not flat[p]:
            if zero_rank == ranks[k]:
                flat[p] = True
                k += 1
            zero_rank += 1
        p += 1


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# Entries one task replays (64 rows at a time) before writing them out.
BAND_ENTRIES = 1 << 19
# Below this many entries, everything runs on the caller's thread: hand-offs would cost more.
THREAD_ENTRIES = 1 << 16


@dataclass(frozen=True)
class Pattern:
    """The Givens phase of a wide ``rows x cols`` matrix ``G``, without its values.

    ``bits[j]`` is the final support of column ``j`` (a bitset of ``rows``
    bits), ``counts[j]`` its size, ``nnz`` their sum; ``first``, ``second``,
    ``cos``, ``sin`` are the rotations applied, in order.
    """

    rows: int
    cols: int
    bits: np.ndarray
    counts: np.ndarray
    nnz: int
    first: np.ndarray
    second: np.ndarray
    cos: np.ndarray
    sin: np.ndarray


def pattern_pass(
    rows: int, cols: int, budget: int | None, stream: RotationStream | None, max_rotations: int | None = None
) -> Pattern:
    """Run the rotation stream on the support of the wide ``rows x cols`` identity (``rows <= cols``).

    Stops at the last rotation that keeps the support within ``budget``
    (``None``: no budget) or after ``max_rotations``, as the reference does.
    """
    words = (rows + 63) // 64
    bits = np.zeros((cols, words), dtype=np.uint64)
    diagonal = np.arange(rows)
    bits[diagonal, diagonal // 64] = np.left_shift(np.uint64(1), (diagonal % 64).astype(np.uint64))
    counts = np.zeros(cols, dtype=np.int64)
    counts[:rows] = 1
    nnz = rows
    limit_budget = rows * cols + 1 if budget is None else budget
    remaining = np.iinfo(np.int64).max if max_rotations is None else max_rotations
    blocks = []
    stopped = nnz == limit_budget or remaining == 0 or stream is None
    while not stopped:
        first, second, cos, sin = stream.next_block()
        limit = min(first.shape[0], remaining)
        applied, nnz, stopped = _pattern(bits, counts, nnz, limit_budget, first, second, limit)
        blocks.append((first[:applied], second[:applied], cos[:applied], sin[:applied]))
        remaining -= applied
        stopped = stopped or remaining == 0
    if blocks:
        first, second, cos, sin = (np.concatenate(parts) for parts in zip(*blocks))
    else:
        first = second = np.empty(0, dtype=np.int64)
        cos = sin = np.empty(0, dtype=np.float64)
    return Pattern(rows, cols, bits, counts, int(nnz), first, second, cos, sin)


def _tasks(pattern: Pattern, lo: int, hi: int, threads: int) -> list[tuple[int, int]]:
    """Split the bitset words that cover the rows ``[lo, hi)`` of ``G`` into runs of about ``BAND_ENTRIES`` entries.

    With several threads there are at least as many runs as threads when the
    work is worth sharing.  Returns ``(first word, last word + 1)`` pairs.
    """
    first_word, last_word = lo // 64, (hi + 63) // 64
    words = last_word - first_word
    entries = pattern.nnz * (hi - lo) / max(pattern.rows, 1)
    count = max(1, int(np.ceil(entries / BAND_ENTRIES)))
    if threads > 1 and entries >= THREAD_ENTRIES:
        count = max(count, 4 * threads)  # several per thread: the words' costs differ
    count = min(count, words)
    edges = [first_word + (words * k) // count for k in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _keep(w: int, lo: int, hi: int) -> np.uint64:
    """The bits of word ``w`` that are rows in ``[lo, hi)``."""
    low = max(lo - 64 * w, 0)
    high = min(hi - 64 * w, 64)
    return np.uint64(((1 << high) - 1) ^ ((1 << low) - 1))


def _write_words(pattern, word0, word1, lo, hi, col0, col1, weight_bits, mask, transposed, gain, dtype):
    for w in range(word0, word1):
        final, starts, values = _word_values(
            pattern.bits, w, _keep(w, lo, hi), pattern.first, pattern.second, pattern.cos, pattern.sin
        )
        values = values[starts[col0] : starts[col1]]
        if gain != 1.0:
            values *= gain
        value_bits = values.astype(dtype).view(weight_bits.dtype)
        _scatter_word(weight_bits, mask, final, starts, value_bits, w, lo, col0, col1, transposed)


def _replay_word(pattern, k, w, keep, col0, col1, starts, offsets, value_bits, gain, dtype):
    """Replay word ``w`` and keep its cast values of the columns ``[col0, col1)`` (for :func:`_gather_rows`)."""
    _, word_starts, values = _word_values(pattern.bits, w, keep, pattern.first, pattern.second, pattern.cos, pattern.sin)
    base = word_starts[col0]
    starts[k] = word_starts[col0:col1] - base
    values = values[base : word_starts[col1]]
    if gain != 1.0:
        values *= gain
    value_bits[offsets[k] : offsets[k] + values.shape[0]] = values.astype(dtype).view(value_bits.dtype)


def _write_transposed(pattern, weight_bits, mask, rows, cols, gain, dtype, threads):
    """``G^T``: replay every word first (values only), then write the output row after row.

    Rows of the weight are contiguous, so writing them in order streams
    through the output instead of visiting every row once per word; the
    price is holding the rectangle's cast values (one output item per
    non-zero) and their slot offsets (8 bytes per column per word) until then.
    """
    (lo, hi), (col0, col1) = rows, cols
    if pattern.nnz * (hi - lo) / max(pattern.rows, 1) < THREAD_ENTRIES:
        threads = 1  # hand-offs would cost more than the work
    first_word, last_word = lo // 64, (hi + 63) // 64
    keeps = np.array([_keep(w, lo, hi) for w in range(first_word, last_word)], dtype=np.uint64)
    counts = _word_counts(pattern.bits, first_word, keeps, col0, col1)
    offsets = np.zeros(keeps.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    starts = np.empty((keeps.shape[0], col1 - col0), dtype=np.int64)
    value_bits = np.empty(offsets[-1], dtype=weight_bits.dtype)
    replay = [
        partial(_replay_word, pattern, k, first_word + k, keeps[k], col0, col1, starts, offsets, value_bits, gain,
                dtype)
        for k in range(keeps.shape[0])
    ]
    run_all(replay, threads)
    parts = max(1, min(4 * threads, (col1 - col0) // 64)) if threads > 1 else 1
    edges = [col0 + ((col1 - col0) * k) // parts for k in range(parts + 1)]
    write = [
        partial(_gather_rows, weight_bits, mask, pattern.bits, first_word, keeps, starts, offsets, value_bits, lo,
                col0, j0, j1)
        for j0, j1 in zip(edges[:-1], edges[1:])
        if j1 > j0
    ]
    run_all(write, threads)


def write_values(
    pattern: Pattern,
    weight: np.ndarray,
    mask: np.ndarray,
    *,
    transposed: bool,
    rows: tuple[int, int],
    cols: tuple[int, int],
    gain: float,
    threads: int | None = None,
) -> None:
    """Write ``G[rows[0]:rows[1], cols[0]:cols[1]]`` (times ``gain``, cast) into ``weight`` and its support into ``mask``.

    ``weight`` and ``mask`` are 2-D views of that rectangle (transposed when
    ``transposed``), all zero on entry.  The rows are replayed 64 at a time;
    the rotations still run over every column, so a narrow ``cols`` saves
    memory but not time.
    """
    threads = get_num_threads() if threads is None else threads
    if rows[0] >= rows[1] or cols[0] >= cols[1]:
        return
    weight_bits = weight.view(_UINT[weight.dtype.itemsize])
    if transposed:
        _write_transposed(pattern, weight_bits, mask, rows, cols, gain, weight.dtype, threads)
        return
    tasks = [
        partial(_write_words, pattern, word0, word1, rows[0], rows[1], cols[0], cols[1], weight_bits, mask,
                transposed, gain, weight.dtype)
        for word0, word1 in _tasks(pattern, rows[0], rows[1], threads)
    ]
    run_all(tasks, threads)


def write_givens(
    weight: np.ndarray,
    mask: np.ndarray,
    budget: int | None,
    stream: RotationStream | None,
    gain: float,
    max_rotations: int | None = None,
) -> tuple[int, int]:
    """Same contract as :func:`eoi_core.reference.write_givens`."""
    out, inp = weight.shape
    transposed = out >= inp
    rows, cols = (inp, out) if transposed else (out, inp)
    pattern = pattern_pass(rows, cols, budget, stream, max_rotations)
    write_values(pattern, weight, mask, transposed=transposed, rows=(0, rows), cols=(0, cols), gain=gain)
    return int(pattern.first.shape[0]), pattern.nnz


def fill(flat_mask: np.ndarray, ranks: np.ndarray) -> None:
    """Same contract as :func:`eoi_core.reference.fill`."""
    if ranks.shape[0] == 0:
        return
    head = (-flat_mask.ctypes.data) % 8
    whole = max(0, (flat_mask.shape[0] - head) // 8)
    words = flat_mask[head : head + 8 * whole].view(np.uint64)
    _fill(flat_mask, words, head, ranks)


def support_before(
    pattern: Pattern, transposed: bool, rows: tuple[int, int], cols: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support entries of the centre ``H`` before and inside a rectangle, row by row.

    For each row ``r`` of ``H`` in ``[rows[0], rows[1])`` (``H = G^T`` when
    ``transposed``): ``below`` counts the entries in rows ``< r``, ``left``
    those of row ``r`` in columns ``< cols[0]``, ``inside`` those in
    ``[cols[0], cols[1])``.
    """
    (lo, hi), (col0, col1) = rows, cols
    if transposed:
        return _support_before_tall(pattern.bits, pattern.counts, lo, hi, col0, col1)
    return _support_before_wide(pattern.bits, lo, hi, col0, col1)


def fill_shard(
    mask: np.ndarray, pattern: Pattern, transposed: bool, rows: tuple[int, int], cols: tuple[int, int],
    in_features: int, taps: int, ranks: np.ndarray,
) -> None:
    """The fill of one group block, restricted to its rows ``rows`` and columns ``cols``.

    ``mask`` is ``(rows, (cols[1] - cols[0]) * taps)``: each row the contiguous
    segment of the block's row-major order that the rectangle covers, holding
    the centre's support and nothing else.  ``ranks`` are the block's sorted
    fill ranks; the ones that fall in the segments are set, exactly as
    :func:`fill` sets them in the whole block.
    """
    if ranks.shape[0] == 0 or mask.shape[0] == 0:
        return
    below, left, inside = support_before(pattern, transposed, rows, cols)
    starts = np.arange(rows[0], rows[1], dtype=np.int64) * (in_features * taps) + cols[0] * taps
    first_zero = starts - below - left
    zeros = (cols[1] - cols[0]) * taps - inside
    _fill_segments(mask, first_zero, zeros, ranks)
