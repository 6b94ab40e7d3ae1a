"""The Numba engine: the reference's results, at close to the cost of writing them.

Same rotation stream, same stopping rule, same fill as :mod:`eoi_core.reference`;
the work is reorganised (DESIGN.md section 4).  For the wide ``n x m`` Givens
matrix ``G`` (``n <= m``):

1. **Pattern pass** on bitsets.  The support of every column is a bitset of
   ``n`` bits; a rotation ORs two of them and its growth is a popcount.  The
   pattern does not depend on the angles, so this pass alone finds where the
   Givens phase stops and every column's final support size, at O(n / 64)
   per rotation.
2. **Value pass** in compressed-column storage whose slots are sized by those
   final supports, so memory is the output plus O(non-zeros): no ``m x m``
   and no dense float64 temporary.  Each column keeps its *current* support
   as a prefix of its slot (rows in order of arrival), so a rotation costs
   O(|S_i| + |S_j|) of the supports it actually has, found with a stamped
   row-position scratch of ``n`` entries that stays in cache.  Rows present in
   one column only get ``c*a`` / ``s*a`` (or ``-s*b`` / ``c*b``), which are
   exactly what the reference computes from ``c*a - s*0`` etc.
3. **Scatter** of the values, cast once to the output dtype and copied as raw
   bits, and of the mask.  When the weight is ``G^T`` (``out >= in``) a column
   of ``G`` is a contiguous row of the weight; when it is ``G`` (``out < in``)
   the entries of a band of columns are bucketed by row (a counting sort in a
   cache-sized buffer) so that the writes stream along rows instead of
   striding down columns.

The fill skips 8 mask bytes at a time (a popcount of their 0/1 bytes) to the
zero positions whose rank was drawn.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import intrinsic

from ._jit import jit
from .randomness import RotationStream

__all__ = ["write_givens", "fill"]


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


@jit(nogil=True)
def _values(starts, n, first, second, cos, sin):
    """Replay the rotations on values stored in slots sized by the final supports.

    Returns ``(rows, values)``: slot ``starts[j]:starts[j+1]`` of column ``j``
    holds its rows (in order of arrival) and float64 values.
    """
    cols = starts.shape[0] - 1
    rows = np.empty(starts[cols], dtype=np.int32)
    values = np.empty(starts[cols], dtype=np.float64)
    length = np.zeros(cols, dtype=np.int64)
    for j in range(n):  # the identity: column j holds row j
        rows[starts[j]] = j
        values[starts[j]] = 1.0
        length[j] = 1
    # tag[r] = (stamp << 32) | offset of row r in column i; stamp 2t+2 means "row r is
    # in column i at rotation t", 2t+3 "and also in column j".  One array, one lookup.
    tag = np.zeros(n, dtype=np.int64)
    for t in range(first.shape[0]):
        i = first[t]
        j = second[t]
        c = cos[t]
        s = sin[t]
        base_i = starts[i]
        base_j = starts[j]
        old_i = length[i]
        old_j = length[j]
        mark = np.int64(2 * t + 2)
        for p in range(old_i):
            tag[rows[base_i + p]] = (mark << 32) | p
        new_i = old_i
        matched = 0
        for q in range(base_j, base_j + old_j):
            r = rows[q]
            b = values[q]
            entry = tag[r]
            if (entry >> 32) == mark:
                p = base_i + (entry & 0xFFFFFFFF)
                a = values[p]
                values[p] = c * a - s * b
                values[q] = s * a + c * b
                tag[r] = (mark + 1) << 32
                matched += 1
            else:  # only in column j: column i gains row r
                slot = base_i + new_i
                rows[slot] = r
                values[slot] = -(s * b)
                values[q] = c * b
                new_i += 1
        new_j = old_j
        if matched < old_i:
            for p in range(base_i, base_i + old_i):
                r = rows[p]
                if (tag[r] >> 32) == mark:  # only in column i: column j gains row r
                    a = values[p]
                    slot = base_j + new_j
                    rows[slot] = r
                    values[slot] = s * a
                    values[p] = c * a
                    new_j += 1
        length[i] = new_i
        length[j] = new_j
    return rows, values


@jit(nogil=True)
def _scatter_columns(weight_bits, mask, starts, rows, value_bits):
    """Weight is ``G^T``: column ``j`` of ``G`` is the contiguous row ``j``."""
    for j in range(starts.shape[0] - 1):
        for p in range(starts[j], starts[j + 1]):
            r = rows[p]
            weight_bits[j, r] = value_bits[p]
            mask[j, r] = True


@jit(nogil=True)
def _scatter_rows(weight_bits, mask, starts, rows, value_bits, capacity):
    """Weight is ``G``: write row by row, a band of columns at a time.

    The entries of a band of consecutive columns (at most ``capacity`` of them,
    or one column) are bucketed by row with a counting sort, then written row
    by row, so the writes stream through each row's segment instead of
    striding down columns; the buckets stay small enough to live in cache.
    """
    n = weight_bits.shape[0]
    cols = starts.shape[0] - 1
    row_starts = np.empty(n + 1, dtype=np.int64)
    cursor = np.empty(n, dtype=np.int64)
    bucket_cols = np.empty(capacity, dtype=np.int32)
    bucket_bits = np.empty(capacity, dtype=value_bits.dtype)
    first = 0
    while first < cols:
        last = first + 1
        while last < cols and starts[last + 1] - starts[first] <= capacity:
            last += 1
        row_starts[:] = 0
        for p in range(starts[first], starts[last]):
            row_starts[rows[p] + 1] += 1
        for r in range(n):
            row_starts[r + 1] += row_starts[r]
            cursor[r] = row_starts[r]
        for j in range(first, last):
            for p in range(starts[j], starts[j + 1]):
                r = rows[p]
                d = cursor[r]
                bucket_cols[d] = j
                bucket_bits[d] = value_bits[p]
                cursor[r] = d + 1
        for r in range(n):
            for d in range(row_starts[r], row_starts[r + 1]):
                weight_bits[r, bucket_cols[d]] = bucket_bits[d]
                mask[r, bucket_cols[d]] = True
        first = last


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

# Entries bucketed at once when the weight is G (out < in): 2^18 entries of
# 4 + 8 bytes at most stay in cache and bound the extra memory.
BAND_ENTRIES = 1 << 18


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
    stopped = nnz == limit_budget or remaining == 0
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
    del bits
    starts = np.zeros(cols + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    support_rows, values = _values(starts, rows, first, second, cos, sin)
    if gain != 1.0:
        values *= gain
    value_bits = values.astype(weight.dtype).view(_UINT[weight.dtype.itemsize])
    del values
    weight_bits = weight.view(_UINT[weight.dtype.itemsize])
    if transposed:
        _scatter_columns(weight_bits, mask, starts, support_rows, value_bits)
    else:
        # Bands hold at most an eighth of the entries (so they weigh little on a
        # small output) and at least the largest column.
        capacity = max(min(BAND_ENTRIES, nnz // 8), int(counts.max(initial=0)))
        _scatter_rows(weight_bits, mask, starts, support_rows, value_bits, capacity)
    return int(first.shape[0]), int(nnz)


def fill(flat_mask: np.ndarray, ranks: np.ndarray) -> None:
    """Same contract as :func:`eoi_core.reference.fill`."""
    if ranks.shape[0] == 0:
        return
    head = (-flat_mask.ctypes.data) % 8
    whole = max(0, (flat_mask.shape[0] - head) // 8)
    words = flat_mask[head : head + 8 * whole].view(np.uint64)
    _fill(flat_mask, words, head, ranks)
