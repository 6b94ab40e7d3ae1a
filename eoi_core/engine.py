"""The Numba engine: the reference's results, at close to the cost of writing them.

Same rotation stream, same stopping rule, same fill as :mod:`eoi_core.reference`;
the work is reorganised (DESIGN.md section 4):

1. **Pattern pass** on bitsets.  The support of every column of the wide
   ``n x m`` block is a bitset of ``n`` bits; a rotation ORs two of them, and
   its growth is a popcount.  The pattern does not depend on the angles, so
   this pass alone finds where the Givens phase stops, at O(n / 64) per
   rotation, and the final support of every column.
2. **Value pass** in compressed-column storage laid out on those *final*
   supports, so memory is the output plus O(non-zeros) and never an
   ``m x m`` or dense float64 temporary.  A rotation only has to touch the
   rows both columns will ever hold (outside them both entries are zero at
   that moment and stay zero), found by merging two sorted row lists.
3. **Scatter** of the values (cast once to the output dtype, then copied as
   raw bits) and of the mask into the caller's output views.

The fill walks the block mask once, setting the zero positions whose rank
was drawn.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

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


@intrinsic
def _trailing_zeros(typingctx, word):
    """LLVM's ``cttz`` on a uint64 (undefined for 0; callers never pass 0)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def _pattern(bits, counts, nnz, budget, first, second, limit):
    """Advance the support pattern through at most ``limit`` rotations.

    Returns ``(rotations applied, nnz, stopped)``; ``stopped`` is True when the
    next rotation would exceed ``budget`` or the support reached it.
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


@njit(cache=True, nogil=True)
def _compress(bits, counts):
    """Compressed-column storage ``(starts, rows)`` of the final supports (rows sorted)."""
    cols = bits.shape[0]
    words = bits.shape[1]
    starts = np.empty(cols + 1, dtype=np.int64)
    starts[0] = 0
    for j in range(cols):
        starts[j + 1] = starts[j] + counts[j]
    rows = np.empty(starts[cols], dtype=np.int32)
    for j in range(cols):
        p = starts[j]
        for w in range(words):
            word = bits[j, w]
            while word:
                rows[p] = np.int32(w * 64 + np.int64(_trailing_zeros(word)))
                p += 1
                word &= word - np.uint64(1)
    return starts, rows


@njit(cache=True, nogil=True)
def _values(starts, rows, n, first, second, cos, sin):
    """Replay the applied rotations on float64 values stored on the final supports."""
    values = np.zeros(rows.shape[0], dtype=np.float64)
    for j in range(n):  # the identity: row j of column j holds 1
        p = starts[j]
        while rows[p] != j:
            p += 1
        values[p] = 1.0
    for t in range(first.shape[0]):
        i = first[t]
        j = second[t]
        c = cos[t]
        s = sin[t]
        p = starts[i]
        p_end = starts[i + 1]
        q = starts[j]
        q_end = starts[j + 1]
        while p < p_end and q < q_end:
            row_i = rows[p]
            row_j = rows[q]
            if row_i == row_j:
                a = values[p]
                b = values[q]
                values[p] = c * a - s * b
                values[q] = s * a + c * b
                p += 1
                q += 1
            elif row_i < row_j:
                p += 1
            else:
                q += 1
    return values


@njit(cache=True, nogil=True)
def _scatter(weight_bits, mask, starts, rows, value_bits):
    """``weight[r, j] = value``, ``mask[r, j] = True`` for every stored entry (wide view)."""
    for j in range(starts.shape[0] - 1):
        for p in range(starts[j], starts[j + 1]):
            r = rows[p]
            weight_bits[r, j] = value_bits[p]
            mask[r, j] = True


@njit(cache=True, nogil=True)
def _fill(flat_mask, ranks):
    """Set the zero positions of the given sorted ranks to True."""
    wanted = ranks.shape[0]
    if wanted == 0:
        return
    k = 0
    zero_rank = 0
    for p in range(flat_mask.shape[0]):
        if not flat_mask[p]:
            if zero_rank == ranks[k]:
                flat_mask[p] = True
                k += 1
                if k == wanted:
                    return
            zero_rank += 1


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


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
    tall = out > inp
    rows, cols = (inp, out) if tall else (out, inp)
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
    starts, support_rows = _compress(bits, counts)
    values = _values(starts, support_rows, rows, first, second, cos, sin)
    if gain != 1.0:
        values *= gain
    cast = values.astype(weight.dtype)
    uint = _UINT[weight.dtype.itemsize]
    wide_weight, wide_mask = (weight.T, mask.T) if tall else (weight, mask)
    _scatter(wide_weight.view(uint), wide_mask, starts, support_rows, cast.view(uint))
    return int(first.shape[0]), int(nnz)


def fill(flat_mask: np.ndarray, ranks: np.ndarray) -> None:
    """Same contract as :func:`eoi_core.reference.fill`."""
    _fill(flat_mask, ranks)
