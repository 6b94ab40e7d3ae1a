"""The Numba engine: the reference's results, at close to the cost of writing them.

Same rotation stream, same stopping rule, same fill as :mod:`eoi_core.reference`;
the work is reorganised.  For the wide ``n x m`` Givens
matrix ``G`` (``n <= m``):

1. **Pattern pass** on bitsets.  The support of every column is a bitset of
   ``n`` bits; a rotation ORs two of them and its growth is a popcount.  The
   pattern does not depend on the angles, so this pass alone finds where the
   Givens phase stops and every column's final support, at O(n / 64) per
   rotation.  Its bitsets (``n * m / 8`` bytes) are kept: they size the value
   pass and locate the fill of any shard.  It also records which 64-row
   words each rotation touches (8 bytes per rotation per 4096 rows); while
   the two columns occupy few words, only those are merged.
2. **Value pass, 64 rows at a time.**  A rotation mixes two *columns*, so
   every row of ``G`` evolves on its own: the rows of one bitset word can be
   replayed alone, touching only their own entries, and get exactly the values
   the whole would (each entry sees the same float64 operations in the same
   order).  Within a word a column's current support is one ``uint64``; its
   entries sit in a slot sized by its final support, in row order, at the
   popcount of the final support below their bit.  Only the rotations that
   touch the word are replayed; each costs O(1) plus the word's entries in
   its two columns.  An entry in only one column (most of them) takes one
   branch-free step: its value is read once and both new values selected.  Words run on threads
   (:mod:`eoi_core.threads`; the kernels release the GIL).
3. **Write** of the values, cast once to the output dtype, and of the mask:
   when the weight is ``G`` (``out < in``) a word's values go straight into
   its 64 rows; when it is ``G^T`` (``out >= in``) every word's values are
   kept column by column and bands of output rows are then written left to
   right, one cursor per word; from before the pattern pass until the words
   are replayed, one thread maps the output's fresh pages (:func:`_warm`,
   :func:`warm_while`).  A large C-contiguous output is
   written a whole row at a time: the row is assembled, zeros included, a
   word's 64 entries without a branch (:func:`_expand_word`) and copied out with
   non-temporal stores, which write each cache line without first reading
   it.  Tasks never overlap, so the result does not depend on the number of
   threads.

The fill sets the zero positions whose rank was drawn.  For ``G^T`` the
pattern pass counted every output row's support, so only the rows holding a
drawn rank are walked; otherwise the walk skips 8 mask bytes at a time (a
popcount of their 0/1 bytes).  For a shard (:mod:`eoi_core.shard`) the number
of zeros before each of its rows follows from the bitsets, so only the
shard's own segments are walked.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import jit
from .randomness import RotationStream
from .threads import get_num_threads, run_all, start

# How many rotations ahead the passes prefetch a rotation's columns (the value pass: half that for its values).
AHEAD = 16
# The pattern pass walks only the occupied words of a rotation's columns when they are at most
# 1 / SPARSE_SHARE of all words (most rotations while the supports are small); otherwise it runs
# the vectorised loop over every word.
SPARSE_SHARE = 8
# Spare bytes after the last value an expand reads: the permuting expand (AVX2) loads a whole
# 32-byte vector from a chunk's first value (:func:`_expand_codegen`).
EXPAND_PAD = 32

__all__ = ["write_givens", "fill", "Pattern", "pattern_pass", "warm_while", "write_values", "support_before", "fill_shard"]


@intrinsic
def _popcount(typingctx, word):
    """LLVM's ``ctpop`` on a uint64 (a single POPCNT instruction on x86-64)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@jit(nogil=True)
def _pattern(bits, counts, occupied, nnz, budget, first, second, limit, touched):
    """Advance the support pattern through at most ``limit`` rotations.

    Returns ``(rotations applied, nnz, stopped)``; ``stopped`` is True when the
    next rotation would exceed ``budget`` or the support has reached it.
    ``occupied[j]`` is the set of bitset words where column ``j`` has a row
    (bit ``w % 64`` of ``occupied[j, w // 64]``), kept alongside ``bits`` at
    O(rows / 4096) per rotation; ``touched[t]`` gets the words rotation ``t``
    touches (those of either column): the value pass of word ``w`` replays
    only those rotations.  (Testing every word for zero inside the popcount
    loop would stop Numba from vectorising it, and double the pass.)
    """
    one = np.uint64(1)
    words = bits.shape[1]
    lanes = occupied.shape[1]
    for t in range(limit):
        if nnz == budget:
            return t, nnz, True
        if t + AHEAD < limit:  # the bitsets of a later rotation's columns (n * m / 8 bytes outgrow the caches)
            later_i = first[t + AHEAD]
            later_j = second[t + AHEAD]
            later = 0
            for lane in range(lanes):
                later += np.int64(_popcount(occupied[later_i, lane] | occupied[later_j, lane]))
            if later * SPARSE_SHARE <= words:  # the lines of their occupied words only
                for lane in range(lanes):
                    rest = occupied[later_i, lane] | occupied[later_j, lane]
                    while rest:
                        w = 64 * lane + np.int64(_trailing_zeros(rest))
                        rest &= rest - one
                        _prefetch(bits, later_i * words + w)
                        _prefetch(bits, later_j * words + w)
            else:
                for w in range(0, words, 8):
                    _prefetch(bits, later_i * words + w)
                    _prefetch(bits, later_j * words + w)
        i = first[t]
        j = second[t]
        count_i = counts[i]
        count_j = counts[j]
        if count_i == 0 and count_j == 0:
            continue  # two empty columns: the rotation changes nothing
        spread = 0
        for lane in range(lanes):
            touched[t, lane] = occupied[i, lane] | occupied[j, lane]
            spread += np.int64(_popcount(touched[t, lane]))
        union_bits = np.uint64(0)
        if nnz + count_i + count_j <= budget:
            # The rotation cannot overshoot (it grows the support by at most count_i + count_j):
            # merge while counting, one pass over the two bitsets.
            if spread * SPARSE_SHARE <= words:
                # Few occupied words (most rotations while the supports are small): only those; the
                # others are zero in both columns.
                for lane in range(lanes):
                    rest = touched[t, lane]
                    while rest:
                        w = 64 * lane + np.int64(_trailing_zeros(rest))
                        rest &= rest - one
                        merged = bits[i, w] | bits[j, w]
                        union_bits += _popcount(merged)
                        bits[i, w] = merged
                        bits[j, w] = merged
            else:
                for w in range(words):
                    merged = bits[i, w] | bits[j, w]
                    union_bits += _popcount(merged)
                    bits[i, w] = merged
                    bits[j, w] = merged
            union = np.int64(union_bits)
            grown = 2 * union - count_i - count_j
        else:  # near the budget: count first, merge only if the rotation fits
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
        if grown:
            for lane in range(lanes):
                occupied[i, lane] = touched[t, lane]
                occupied[j, lane] = touched[t, lane]
            counts[i] = union
            counts[j] = union
            nnz += grown
    return limit, nnz, False


@intrinsic
def _prefetch(typingctx, array, index):
    """LLVM's ``prefetch`` (read, keep in all cache levels) of ``array[index]``: a hint, never a fault."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data, position = args
        pointer = builder.gep(context.make_array(signature.args[0])(context, builder, value=data).data, [position])
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]), "llvm.prefetch.p0i8"
        )
        builder.call(function, [builder.bitcast(pointer, byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def _select(typingctx, condition, if_true, if_false):
    """LLVM's ``select``: ``if_true if condition else if_false`` without a branch (two float64 or two uint64)."""
    if condition != types.boolean or if_true != if_false or if_true not in (types.float64, types.uint64):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(*args)

    return if_true(types.boolean, if_true, if_false), codegen


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
    low = ones << np.uint64(lo % 64)
    high = ones >> np.uint64(63 - (hi - 1) % 64)
    if first_word == last_word:
        return np.int64(_popcount(bits[j, first_word] & low & high))
    total = _popcount(bits[j, first_word] & low) + _popcount(bits[j, last_word] & high)
    # Unsigned indices: Numba adds no negative-index wraparound, and the loop vectorises (4 to 5 times faster).
    for w in range(np.uint64(first_word + 1), np.uint64(last_word)):
        total += _popcount(bits[j, w])
    return np.int64(total)


@jit(nogil=True)
def _scratch(cols, rotations):
    """Fresh scratch buffers for :func:`_word_values`: ``(meta, current, order, spare)``."""
    return (np.empty((cols + 1, 2), dtype=np.uint64), np.empty(cols, dtype=np.uint64),
            np.zeros(rotations + AHEAD, dtype=np.uint32), np.zeros(0, dtype=np.float64))


@jit(nogil=True)
def _word_values(bits, w, keep, first, second, cos, sin, touched, meta, current, order, spare):
    """Replay the rotations on the rows ``64 w + b`` (``b`` a set bit of ``keep``) only.

    Column ``j``'s entries among these rows are the set bits of
    ``final[j] = bits[j, w] & keep``, stored in row order in the slot
    ``values[start[j]:start[j + 1]]``: the entry of row ``64 w + b`` sits at
    ``start[j] + popcount(final[j] & (2^b - 1))``.  The current support of
    each column among them is one word, so a rotation costs O(1) plus its
    entries, and every entry sees the same float64 operations as in a replay
    of all rows.  Only the rotations that touch word ``w`` (bit ``w`` of
    ``touched[t]``) are replayed.  The entries in both columns (a few percent)
    take the rotation's two products each; an entry in one column only, which
    spreads to the other, takes one branch-free step (read once, both new
    values selected): ``(c a, s a)`` from column ``i``, ``(-(s b), c b)`` from
    ``j``, exactly the reference's results.

    ``meta`` (``(cols + 1, 2)`` uint64), ``current`` (``cols`` uint64),
    ``order`` (``len(first) + AHEAD`` uint32) and ``spare`` (float64, reused
    for the values when large enough) are scratch buffers of the caller's,
    reused from word to word (see :func:`_scratch`): allocating them per word
    costs page faults, which contend with the thread mapping the output.

    Returns ``(meta, values)``: ``meta[j] = (final[j], start[j])`` for
    ``j <= cols`` (``start[cols]`` is the number of entries), ``values`` the
    buffer the slots are in.  Indices are unsigned so that Numba adds no
    negative-index wraparound.
    """
    one = np.uint64(1)
    cols = bits.shape[0]
    start = np.uint64(0)
    for j in range(cols):
        word = bits[j, w] & keep
        meta[j, 0] = word
        meta[j, 1] = start
        start += _popcount(word)
    meta[cols, 0] = 0
    meta[cols, 1] = start
    # A step reads the slot it is about to fill and throws the read away: the slots need only hold
    # finite numbers (a fresh buffer is zeroed; a reused one holds the last word's values).
    values = spare if spare.shape[0] >= start else np.zeros(start + start // 4, dtype=np.float64)
    current[:] = 0
    rest = keep
    while rest:  # the identity: column r holds row r
        low = rest & (np.uint64(0) - rest)
        r = np.uint64(64 * w) + _trailing_zeros(rest)
        current[r] = low
        values[meta[r, 1] + _popcount(meta[r, 0] & (low - one))] = 1.0
        rest &= rest - one
    lane = w >> 6
    shift = np.uint64(w & 63)
    rotations = first.shape[0]
    # order is padded: the prefetches look AHEAD rotations on (stale entries are valid rotations)
    count = 0
    for t in range(rotations):  # branch-free compaction of the rotations that touch this word
        order[count] = t
        count += np.int64((touched[t, lane] >> shift) & one)
    for k in range(count):
        # The columns of a later rotation: their (final, start) now, their first slot once that is known.
        ahead = np.uint64(order[k + AHEAD])
        _prefetch(meta, 2 * first[ahead])
        _prefetch(meta, 2 * second[ahead])
        _prefetch(current, first[ahead])
        _prefetch(current, second[ahead])
        soon = np.uint64(order[k + AHEAD // 2])
        _prefetch(values, meta[np.uint64(first[soon]), 1])
        _prefetch(values, meta[np.uint64(second[soon]), 1])
        t = np.uint64(order[k])
        i = np.uint64(first[t])
        j = np.uint64(second[t])
        support_i = current[i]
        support_j = current[j]
        c = cos[t]
        s = sin[t]
        final_i = meta[i, 0]
        final_j = meta[j, 0]
        base_i = meta[i, 1]
        base_j = meta[j, 1]
        # Slots exist for every row of the union: it lies inside both final supports.
        rest = support_i & support_j
        while rest:  # in both columns (a few percent of the steps)
            below = (rest & (np.uint64(0) - rest)) - one
            p = base_i + _popcount(final_i & below)
            q = base_j + _popcount(final_j & below)
            a = values[p]
            b = values[q]
            values[p] = c * a - s * b
            values[q] = s * a + c * b
            rest &= rest - one
        rest = support_i ^ support_j
        while rest:  # in one column only: it spreads to the other, (c a, s a) or (-(s b), c b)
            low = rest & (np.uint64(0) - rest)
            below = low - one
            p = base_i + _popcount(final_i & below)
            q = base_j + _popcount(final_j & below)
            in_i = (support_i & low) != 0
            x = values[_select(in_i, p, q)]
            cx = c * x
            sx = s * x
            values[p] = _select(in_i, cx, -sx)
            values[q] = _select(in_i, sx, cx)
            rest &= rest - one
        union = support_i | support_j
        current[i] = union
        current[j] = union
    return meta, values


@jit(nogil=True)
def _scatter_word(weight_bits, mask, meta, value_bits, w, row0, col0, col1, transposed):
    """Write the columns ``[col0, col1)`` of one word's rows into the output.

    ``meta`` is :func:`_word_values`' ``(final, start)`` table;
    ``value_bits[p - start[col0]]`` is the cast value of slot entry ``p``;
    the output holds ``G[row0:, col0:col1]`` (its transpose when
    ``transposed``).  Columns are walked in order and rows within a column in
    order, so only a few cache lines per output row are in flight.
    """
    one = np.uint64(1)
    base = meta[col0, 1]
    for j in range(col0, col1):
        rest = meta[j, 0]
        p = meta[j, 1] - base
        while rest:
            r = 64 * w + np.int64(_trailing_zeros(rest)) - row0
            if transposed:
                weight_bits[j - col0, r] = value_bits[p]
                mask[j - col0, r] = True
            else:
                weight_bits[r, j - col0] = value_bits[p]
                mask[r, j - col0] = True
            p += one
            rest &= rest - one


@jit(nogil=True)
def _band_counts(bits, first_word, keeps, edges):
    """Entries of each word before each band edge: ``table[b, k]`` counts word ``first_word + k``'s entries
    (``bits[j, first_word + k] & keeps[k]``) in the columns ``edges[0] <= j < edges[b]``."""
    words = keeps.shape[0]
    stride = bits.shape[1]
    table = np.zeros((edges.shape[0], words), dtype=np.int64)
    running = np.zeros(words, dtype=np.int64)
    for b in range(1, edges.shape[0]):
        for j in range(edges[b - 1], edges[b]):
            if j + AHEAD < edges[-1]:  # a later column's words: one column's are a few lines, far from the last
                for k in range(0, words, 8):
                    _prefetch(bits, (j + AHEAD) * stride + first_word + k)
            row = bits[j, first_word : first_word + words]  # indices from 0: no wraparound, so it vectorises
            for k in range(words):
                running[k] += np.int64(_popcount(row[k] & keeps[k]))
        table[b, :] = running
    return table


@jit(nogil=True)
def _gather_band(weight_bits, mask, bits, first_word, keeps, cursor, value_bits, row0, col0, j0, j1):
    """Weight is ``G^T``: write its rows ``j0 .. j1 - 1`` (columns of ``G``) one after another.

    Word ``k``'s cast values sit in ``value_bits`` column after column, each
    column's in row order, so one cursor per word walks forward as the rows
    are written: ``cursor[k]`` (advanced in place) is where column ``j0``'s
    entries of word ``first_word + k`` start.  The entries of column ``j``
    are the set bits of ``bits[j, first_word + k] & keeps[k]``; each output
    row is written from left to right.  (Assembling a row in a buffer and
    copying it out whole measured slower: at density 0.1 most cache lines of
    a float32 row hold an entry anyway, and the copy writes every byte.)
    """
    one = np.uint64(1)
    for j in range(j0, j1):
        out_row = j - col0
        for k in range(keeps.shape[0]):
            rest = bits[j, first_word + k] & keeps[k]
            if rest == 0:
                continue
            p = cursor[k]
            base = 64 * (first_word + k) - row0
            while rest:
                r = base + np.int64(_trailing_zeros(rest))
                weight_bits[out_row, r] = value_bits[p]
                mask[out_row, r] = True
                p += 1
                rest &= rest - one
            cursor[k] = p


def _nontemporal_store(builder, value, pointer, align=64):
    """An aligned store of ``value`` through ``pointer`` marked non-temporal (write the line without reading it)."""
    store = builder.store(value, pointer, align=align)
    store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))


@intrinsic
def _stream_line(typingctx, destination, at, source, start):
    """Copy the 64 bytes ``source[start:start + 64]`` to ``destination[at:at + 64]`` (uint8 arrays) with one
    non-temporal store; ``destination[at]`` must be 64-byte aligned, ``source`` need not be."""
    if not (isinstance(destination, types.Array) and isinstance(source, types.Array)
            and destination.dtype == types.uint8 and source.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        target, target_at, origin, origin_at = args
        line = ir.VectorType(ir.IntType(8), 64)
        target_pointer = builder.gep(context.make_array(signature.args[0])(context, builder, value=target).data,
                                     [target_at])
        origin_pointer = builder.gep(context.make_array(signature.args[2])(context, builder, value=origin).data,
                                     [origin_at])
        value = builder.load(builder.bitcast(origin_pointer, line.as_pointer()), align=1)
        _nontemporal_store(builder, value, builder.bitcast(target_pointer, line.as_pointer()))
        return context.get_dummy_value()

    return types.void(destination, at, source, start), codegen


@intrinsic
def _store_fence(typingctx):
    """A sequentially consistent fence: orders this thread's non-temporal stores before what follows."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@jit(nogil=True)
def _stream_copy(destination, at, source):
    """``destination[at:at + len(source)] = source`` (uint8), every whole aligned 64-byte line of it streamed.

    Non-temporal stores write a whole cache line without reading it first:
    half the memory traffic of ordinary stores into memory not in cache.
    """
    size = source.shape[0]
    head = min(np.int64((64 - (destination.ctypes.data + at) % 64) % 64), size)
    for p in range(head):
        destination[at + p] = source[p]
    p = head
    while p + 64 <= size:
        _stream_line(destination, at + p, source, p)
        p += 64
    for q in range(p, size):
        destination[at + q] = source[q]


def _target_features() -> frozenset[str]:
    """The CPU features Numba compiles for (``NUMBA_CPU_FEATURES``, else the host's), e.g. ``{"avx2", ...}``."""
    from numba.core import codegen, config

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return frozenset(flag[1:] for flag in features.split(",") if flag.startswith("+"))


def _expand_strategy(width: int, features: frozenset[str]) -> str:
    """How :func:`_expand_word` spreads ``width``-bit items: ``"expandload"`` or ``"permute"``.

    ``"expandload"`` is LLVM's ``masked.expandload``: one ``VPEXPAND`` per 64
    bytes with AVX-512 (16-bit items need VBMI2), and the portable choice on
    other architectures.  Without those x86 instructions LLVM turns it into a
    branch per item, which made the streamed write 4.6x a ``memset`` on an
    AVX2 machine; there ``"permute"`` looks up, for each 8 (4 for 64-bit)
    items, which value each slot takes, and moves them with one shuffle.

    Examples
    --------
    >>> _expand_strategy(32, frozenset({"avx2", "avx512f"})), _expand_strategy(32, frozenset({"avx2"}))
    ('expandload', 'permute')
    >>> _expand_strategy(16, frozenset({"avx2", "avx512f"})), _expand_strategy(64, frozenset({"neon"}))
    ('permute', 'expandload')
    """
    native = "avx512f" in features and (width > 16 or "avx512vbmi2" in features)
    if native or "avx2" not in features:
        return "expandload"
    return "permute"


def _permute_tables() -> dict[int, np.ndarray]:
    """Per item width, the shuffle that spreads one chunk's values over its set bits, for every chunk of bits.

    32-bit items: 8 per chunk, ``table[bits, slot]`` is the index among the
    loaded values (``VPERMD``); 64-bit items: 4 per chunk, as pairs of 32-bit
    indices; 16-bit items: 8 per chunk, as byte indices for ``PSHUFB``, whose
    0x80 writes a zero.  Unset slots of the 32- and 64-bit shuffles read item
    0 and are zeroed by a select.
    """
    tables = {32: np.zeros((256, 8), np.uint32), 64: np.zeros((16, 8), np.uint32),
              16: np.full((256, 16), 0x80, np.uint8)}
    for bits in range(256):
        rank = 0
        for slot in range(8):
            if bits >> slot & 1:
                tables[32][bits, slot] = rank
                tables[16][bits, 2 * slot : 2 * slot + 2] = (2 * rank, 2 * rank + 1)
                if bits < 16 and slot < 4:
                    tables[64][bits, 2 * slot : 2 * slot + 2] = (2 * rank, 2 * rank + 1)
                rank += 1
    return tables


_PERMUTE_TABLES = _permute_tables()


def _table_global(module, width):
    """The module's constant copy of ``_PERMUTE_TABLES[width]`` (made once per module)."""
    name = f"eoi_expand_table_{width}"
    if name in module.globals:
        return module.globals[name]
    table = _PERMUTE_TABLES[width]
    element = ir.IntType(8 * table.itemsize)
    row = ir.ArrayType(element, table.shape[1])
    constant = ir.Constant(ir.ArrayType(row, table.shape[0]),
                           [ir.Constant(row, [int(v) for v in line]) for line in table])
    data = cgutils.global_constant(module, name, constant)
    data.align = 64
    return data


def _expand_codegen(streamed):
    """Code of :func:`_expand_word` (``streamed=False``) and :func:`_stream_word` (``streamed=True``)."""
    int64 = ir.IntType(64)

    def codegen(context, builder, signature, args):
        items_value, items_at, flags_value, flags_at, values_value, start_value, word_value = args
        width = signature.args[4].dtype.bitwidth
        items_pointer = context.make_array(signature.args[0])(context, builder, value=items_value).data
        flags_pointer = context.make_array(signature.args[2])(context, builder, value=flags_value).data
        values_pointer = context.make_array(signature.args[4])(context, builder, value=values_value).data
        permute = _expand_strategy(width, _target_features()) == "permute"
        lanes = (128 if width == 16 else 256) // width if permute else 512 // width
        item = ir.IntType(width)
        vector = ir.VectorType(item, lanes)

        def store(value, pointer, align):
            if streamed:
                _nontemporal_store(builder, value, pointer, align=lanes * width // 8)
            else:
                builder.store(value, pointer, align=align)

        if permute:
            table = _table_global(builder.module, width)
            if width == 16:
                shuffle_type = ir.VectorType(ir.IntType(8), 16)
                shuffle = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(shuffle_type, [shuffle_type, shuffle_type]),
                    "llvm.x86.ssse3.pshuf.b.128")
            else:
                shuffle_type = ir.VectorType(ir.IntType(32), 8)
                shuffle = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(shuffle_type, [shuffle_type, shuffle_type]),
                    "llvm.x86.avx2.permd")

            def spread_chunk(source_pointer, part):
                # Load the next ``lanes`` values (reading past the chunk's own: the value arrays carry
                # EXPAND_PAD spare bytes), move each to its slot, zero the others.
                loaded = builder.load(builder.bitcast(source_pointer, shuffle_type.as_pointer()), align=1)
                order = builder.load(builder.bitcast(
                    builder.gep(table, [int64(0), builder.zext(part, int64)]), shuffle_type.as_pointer()),
                    align=shuffle_type.count * shuffle_type.element.width // 8)
                moved = builder.bitcast(builder.call(shuffle, [loaded, order]), vector)
                if width == 16:
                    return moved  # PSHUFB wrote the zeros
                return builder.select(builder.bitcast(part, ir.VectorType(ir.IntType(1), lanes)), moved,
                                      ir.Constant(vector, None))
        else:
            lane_bits = ir.VectorType(ir.IntType(1), lanes)
            expand = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [item.as_pointer(), lane_bits, vector]),
                f"llvm.masked.expandload.v{lanes}i{width}")

            def spread_chunk(source_pointer, part):
                return builder.call(expand, [source_pointer, builder.bitcast(part, lane_bits), ir.Constant(vector, None)])

        # items_at counts items of ``items`` (its own dtype), or bytes when streamed into a byte array
        step = lanes * width // 8 if streamed else lanes
        source = start_value
        for chunk in range(64 // lanes):
            part = builder.trunc(builder.lshr(word_value, int64(chunk * lanes)), ir.IntType(lanes))
            spread = spread_chunk(builder.gep(values_pointer, [source]), part)
            target = builder.gep(items_pointer, [builder.add(items_at, int64(chunk * step))])
            store(spread, builder.bitcast(target, vector.as_pointer()), width // 8)
            source = builder.add(source, builder.zext(builder.ctpop(part), int64))
        line = ir.VectorType(ir.IntType(8), 64)
        as_bytes = builder.zext(builder.bitcast(word_value, ir.VectorType(ir.IntType(1), 64)), line)
        flags_target = builder.bitcast(builder.gep(flags_pointer, [flags_at]), line.as_pointer())
        if streamed:
            _nontemporal_store(builder, as_bytes, flags_target)
        else:
            builder.store(as_bytes, flags_target, align=1)
        return context.get_dummy_value()

    return codegen


def _expand_types(items, flags, values, word, streamed):
    unsigned = (types.uint16, types.uint32, types.uint64)
    if not (isinstance(items, types.Array) and isinstance(flags, types.Array) and isinstance(values, types.Array)
            and values.dtype in unsigned and flags.dtype == types.uint8 and word == types.uint64):
        return False
    return items.dtype == types.uint8 if streamed else items.dtype == values.dtype


@intrinsic
def _expand_word(typingctx, items, at, flags, flags_at, values, start, word):
    """Spread ``values[start:]`` over the set bits of ``word``: ``items[at + b]`` is the next value where bit ``b``
    is set and 0 elsewhere (``b < 64``); ``flags[flags_at + b]`` is bit ``b`` as a 0/1 byte.

    ``items`` and ``values`` are unsigned integer arrays of one width, ``flags``
    uint8.  No branch per entry: LLVM's ``masked.expandload`` (one
    ``VPEXPAND`` per 64 bytes with AVX-512) or, with AVX2, a table-driven
    shuffle per 8 entries (:func:`_expand_strategy`), which loads whole
    vectors past ``values``' last item: value arrays carry ``EXPAND_PAD``
    spare bytes.
    """
    if not _expand_types(items, flags, values, word, streamed=False):
        return None
    return types.void(items, at, flags, flags_at, values, start, word), _expand_codegen(streamed=False)


@intrinsic
def _stream_word(typingctx, items, at, flags, flags_at, values, start, word):
    """:func:`_expand_word` written with non-temporal stores straight into the output: ``items`` and ``flags``
    are uint8 arrays, ``at`` and ``flags_at`` byte offsets, both 64-byte aligned addresses."""
    if not _expand_types(items, flags, values, word, streamed=True):
        return None
    return types.void(items, at, flags, flags_at, values, start, word), _expand_codegen(streamed=True)


@jit(nogil=True)
def _stream_band(weight_bytes, mask_bytes, width, row_items, row_bytes, row_flags, bits, first_word, keeps, cursor,
                 value_bits, row0, col0, j0, j1):
    """As :func:`_gather_band`, for a C-contiguous weight and mask given as flat byte arrays of rows ``width`` wide.

    Every output row is written whole, zeros included, 64 entries at a time
    (:func:`_expand_word`), with non-temporal stores: writing every cache
    line whole costs less than reading the lines an entry falls in and
    writing them back.  When every word of every row starts on a 64-byte
    boundary the entries go straight to the output (:func:`_stream_word`);
    otherwise each row is assembled in staging buffers (``row_items``,
    ``64 * len(keeps)`` items, ``row_bytes`` the same memory as bytes, and
    ``row_flags``, its 0/1 mask bytes) and copied out (:func:`_stream_copy`).
    """
    size = row_items.itemsize
    skip = row0 - 64 * first_word  # staging slot of the row's first column
    direct = (skip == 0 and width % 64 == 0 and weight_bytes.ctypes.data % 64 == 0
              and mask_bytes.ctypes.data % 64 == 0)
    for j in range(j0, j1):
        out_row = j - col0
        for k in range(keeps.shape[0]):
            word = bits[j, first_word + k] & keeps[k]
            if direct:
                _stream_word(weight_bytes, (out_row * width + 64 * k) * size, mask_bytes, out_row * width + 64 * k,
                             value_bits, cursor[k], word)
            else:
                _expand_word(row_items, 64 * k, row_flags, 64 * k, value_bits, cursor[k], word)
            cursor[k] += np.int64(_popcount(word))
        if not direct:
            _stream_copy(weight_bytes, out_row * width * size, row_bytes[skip * size : (skip + width) * size])
            _stream_copy(mask_bytes, out_row * width, row_flags[skip : skip + width])
    _store_fence()


@jit(nogil=True)
def _support_before_wide(bits, lo, hi, col0, col1):
    """For ``G`` rows ``lo <= r < hi``: support entries in earlier rows and in row ``r`` left of ``col0``, and inside ``[col0, col1)``.

    Returns ``(below, left, inside)``: ``below[r - lo]`` counts the entries
    of rows ``< r``, ``left`` those of row ``r`` in columns ``< col0``,
    ``inside`` those in ``[col0, col1)``.  The rows before ``lo`` are only
    counted (a popcount per word, as cheap for the last shard as for the
    first); the set bits of rows ``lo .. hi - 1`` are walked one by one.
    """
    cols = bits.shape[0]
    span = hi - lo
    total = np.zeros(span, dtype=np.int64)
    left = np.zeros(span, dtype=np.int64)
    inside = np.zeros(span, dtype=np.int64)
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    first_word = lo // 64
    last_word = (hi - 1) // 64
    # the rows of word `first_word` below `lo`
    partial = (np.uint64(1) << np.uint64(lo % 64)) - np.uint64(1)
    earlier_bits = np.uint64(0)
    for j in range(cols):
        for w in range(first_word):
            earlier_bits += _popcount(bits[j, w])
        earlier_bits += _popcount(bits[j, first_word] & partial)
        for w in range(first_word, last_word + 1):
            word = bits[j, w]
            if w == first_word:
                word &= ones ^ partial
            while word:
                r = 64 * w + np.int64(_trailing_zeros(word))
                word &= word - np.uint64(1)
                if r < hi:
                    total[r - lo] += 1
                    if j < col0:
                        left[r - lo] += 1
                    elif j < col1:
                        inside[r - lo] += 1
    earlier = np.int64(earlier_bits)
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
    stride = bits.shape[1]
    end = 64 * stride
    # Count the shorter side of the rectangle: the other follows from the column's support count.
    before = col0 <= end - col1
    first_word = 0 if before else col0 // 64
    last_word = (col1 + 63) // 64 if before else stride
    for j in range(lo, hi):
        if j + AHEAD < hi:
            for w in range(first_word, last_word, 8):
                _prefetch(bits, (j + AHEAD) * stride + w)
        below[j - lo] = earlier
        earlier += counts[j]
        inside[j - lo] = _masked_popcount(bits, j, col0, col1)
        if before:
            left[j - lo] = _masked_popcount(bits, j, 0, col0)
        else:
            left[j - lo] = counts[j] - inside[j - lo] - _masked_popcount(bits, j, col1, end)
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
def _fill_from(flat, words, head, start, zero_rank, ranks, k, stop_rank):
    """Set the zero bytes of ``flat`` with ranks ``ranks[k:]`` below ``stop_rank`` to True, walking from ``start``.

    ``zero_rank`` zeros precede ``flat[start]``.  ``words`` is the uint64 view
    of ``flat[head:head + 8 * len(words)]``; a word of 0/1 bytes holds
    ``8 - popcount(word)`` zeros, which lets the walk skip whole words that
    hold no wanted rank.  Returns the index of the first rank not set.
    """
    wanted = ranks.shape[0]
    p = start
    size = flat.shape[0]
    word_end = head + 8 * words.shape[0]
    while k < wanted and ranks[k] < stop_rank and p < size:
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
    return k


@jit(nogil=True)
def _fill(flat, words, head, ranks):
    """Set the zero bytes of ``flat`` with the given sorted ranks to True (a walk from the start)."""
    _fill_from(flat, words, head, 0, 0, ranks, 0, np.iinfo(np.int64).max)


@jit(nogil=True)
def _fill_rows(flat, words, head, length, row_support, ranks):
    """As :func:`_fill` for ``flat`` made of rows of ``length`` bytes, row ``r`` holding ``row_support[r]`` ones.

    The zeros before each row follow from the counts, so only the rows that
    hold a drawn rank are walked.
    """
    k = 0
    zero_rank = 0
    for r in range(row_support.shape[0]):
        if k == ranks.shape[0]:
            return
        zeros = length - row_support[r]
        if ranks[k] < zero_rank + zeros:
            k = _fill_from(flat, words, head, r * length, zero_rank, ranks, k, zero_rank + zeros)
        zero_rank += zeros


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# Tasks per thread when the work is shared (they take turns from one counter, so small tasks balance).
TASKS_PER_THREAD = 4
# Entries one task replays (64 rows at a time) before writing them out.
BAND_ENTRIES = 1 << 19
# Below this many entries, everything runs on the caller's thread: hand-offs would cost more.
THREAD_ENTRIES = 1 << 16


@dataclass(frozen=True)
class Pattern:
    """The Givens phase of a wide ``rows x cols`` matrix ``G``, without its values.

    ``bits[j]`` is the final support of column ``j`` (a bitset of ``rows``
    bits), ``counts[j]`` its size, ``nnz`` their sum; ``first``, ``second``,
    ``cos``, ``sin`` are the rotations applied, in order; bit ``w % 64`` of
    ``touched[t, w // 64]`` says whether rotation ``t`` touches bitset word
    ``w`` (8 bytes per rotation per 4096 rows).
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
    touched: np.ndarray


def _rotations_hint(rows: int, cols: int, budget: int) -> int:
    """About how many rotations the pattern pass applies within ``budget``: a size for its records, never a limit.

    The mean-field picture of the support: the mean column support ``k``
    starts at ``rows / cols``; a rotation picks two of the ``cols`` columns
    and, if their supports were independent, grows their total by
    ``2 k (1 - k / rows)``.  So ``k`` follows the logistic
    ``dk/dt = (2 / cols) k (1 - k / rows)`` and reaches ``budget / cols``
    after ``t = (cols / 2) ln((rows / k_0 - 1) / (rows / k - 1))`` rotations.
    The supports are in fact correlated: the true count runs 0.1 to 5 % above
    ``t`` from density 0.01 to 0.5 at 16384 x 16384, up to 15 % above on
    small shapes (``theory.rotations_for_density`` gives the exact
    expectation, at a cost this pass cannot afford).
    """
    start = rows / cols
    target = budget / cols
    if target <= start or cols < 2:
        return 0
    end = max(rows / target - 1.0, 1.0 / rows)  # at full density the logistic never arrives: cap it
    return int(0.5 * cols * np.log((rows / start - 1.0) / end)) + 1


def _grown(record: tuple[np.ndarray, ...], used: int, capacity: int) -> tuple[np.ndarray, ...]:
    """The rotation records with room for ``capacity`` rotations, their first ``used`` kept (the rest zero)."""
    grown = []
    for part in record:
        bigger = np.zeros((capacity,) + part.shape[1:], dtype=part.dtype)
        bigger[:used] = part[:used]
        grown.append(bigger)
    return tuple(grown)


def pattern_pass(
    rows: int, cols: int, budget: int | None, stream: RotationStream | None, max_rotations: int | None = None
) -> Pattern:
    """Run the rotation stream on the support of the wide ``rows x cols`` identity (``rows <= cols``).

    Stops at the last rotation that keeps the support within ``budget``
    (``None``: no budget) or after ``max_rotations``, as the reference does.
    The rotations are recorded in arrays sized once (from
    :func:`_rotations_hint` plus a tenth, or ``max_rotations``, up to the end
    of the stream's block): each block the stream draws is copied in while
    still in cache, and the blocks are never concatenated (that took 7 % of
    the pass at 16384 x 16384); the arrays grow, doubling, only if the hint
    falls short.
    """
    words = (rows + 63) // 64
    lanes = (words + 63) // 64
    bits = np.zeros((cols, words), dtype=np.uint64)
    diagonal = np.arange(rows)
    bits[diagonal, diagonal // 64] = np.left_shift(np.uint64(1), (diagonal % 64).astype(np.uint64))
    counts = np.zeros(cols, dtype=np.int64)
    counts[:rows] = 1
    occupied = np.zeros((cols, lanes), dtype=np.uint64)
    occupied[diagonal, diagonal // 4096] = np.left_shift(np.uint64(1), ((diagonal // 64) % 64).astype(np.uint64))
    nnz = rows
    limit_budget = rows * cols + 1 if budget is None else budget
    remaining = np.iinfo(np.int64).max if max_rotations is None else max_rotations
    stopped = nnz == limit_budget or remaining == 0 or stream is None
    expected = (max_rotations or 0) if budget is None else _rotations_hint(rows, cols, budget) * 11 // 10
    if max_rotations is not None:
        expected = min(expected, max_rotations)
    capacity = 0 if stopped else stream.drawn_after(expected)
    # first, second, cos, sin, touched (zero: a rotation of two empty columns touches no word)
    record = (np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64), np.empty(capacity),
              np.empty(capacity), np.zeros((capacity, lanes), dtype=np.uint64))
    used = 0
    while not stopped:
        block = stream.next_block()
        size = block[0].shape[0]
        if used + size > capacity:
            capacity = max(2 * capacity, used + size)
            record = _grown(record, used, capacity)
        for part, drawn in zip(record, block):
            part[used : used + size] = drawn
        del block
        first, second, touched = record[0][used:], record[1][used:], record[4][used:]
        applied, nnz, stopped = _pattern(
            bits, counts, occupied, nnz, limit_budget, first, second, min(size, remaining), touched
        )
        used += applied
        remaining -= applied
        stopped = stopped or remaining == 0
    first, second, cos, sin, touched = (part[:used] for part in record)
    return Pattern(rows, cols, bits, counts, int(nnz), first, second, cos, sin, touched)


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
        count = max(count, TASKS_PER_THREAD * threads)  # several per thread: the words' costs differ
    count = min(count, words)
    edges = [first_word + (words * k) // count for k in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


@jit(nogil=True)
def _keep_bits(w, lo, hi):
    """The bits of word ``w`` that are rows in ``[lo, hi)``."""
    low = max(lo - 64 * w, 0)
    high = min(hi - 64 * w, 64)
    one = np.uint64(1)
    upper = np.uint64(0xFFFFFFFFFFFFFFFF) if high == 64 else (one << np.uint64(high)) - one
    return upper & ~((one << np.uint64(low)) - one)


@jit(nogil=True)
def _write_rows(weight, mask, bits, word0, word1, lo, hi, col0, col1, first, second, cos, sin, touched, gain):
    """Weight is ``G``: replay the words ``[word0, word1)`` and write their rows, cast, straight into ``weight``.

    ``weight`` (float32 or float64) and ``mask`` hold ``G[lo:hi, col0:col1]``;
    each value is ``value * gain`` in float64, cast once on the store (as
    NumPy's ``astype`` rounds), so one call does a task's whole work.
    """
    one = np.uint64(1)
    meta, current, order, values = _scratch(bits.shape[0], first.shape[0])
    for w in range(word0, word1):
        meta, values = _word_values(bits, w, _keep_bits(w, lo, hi), first, second, cos, sin, touched, meta, current,
                                    order, values)
        for j in range(col0, col1):
            rest = meta[j, 0]
            p = np.int64(meta[j, 1])
            while rest:
                r = 64 * w + np.int64(_trailing_zeros(rest)) - lo
                weight[r, j - col0] = values[p] * gain if gain != 1.0 else values[p]
                mask[r, j - col0] = True
                p += 1
                rest &= rest - one


@jit(nogil=True)
def _replay_words(out, offsets, bits, first_word, keeps, word0, word1, col0, col1, first, second, cos, sin, touched,
                  gain):
    """Replay the words ``[word0, word1)``; word ``w``'s values of the columns ``[col0, col1)`` (times ``gain``,
    cast to ``out``'s dtype on the store) go to ``out[offsets[k]:offsets[k + 1]]``, ``k = w - first_word``."""
    meta, current, order, values = _scratch(bits.shape[0], first.shape[0])
    for w in range(word0, word1):
        k = w - first_word
        meta, values = _word_values(bits, w, keeps[k], first, second, cos, sin, touched, meta, current, order, values)
        start = np.int64(meta[col0, 1])
        stop = np.int64(meta[col1, 1])
        # Whole-slice copies, which Numba vectorises (an indexed loop with a branch cost a third of the replay).
        target = out[offsets[k] : offsets[k] + stop - start]
        source = values[start:stop]
        if gain == 1.0:
            target[:] = source
        else:
            for q in range(source.shape[0]):  # (indices from 0: no wraparound, so it vectorises)
                target[q] = source[q] * gain


# Output dtypes Numba stores directly; the others (float16, bfloat16) are cast by NumPy.
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def _write_words(pattern, word0, word1, lo, hi, col0, col1, weight_bits, mask, transposed, gain, dtype):
    for w in range(word0, word1):
        meta, values = _word_values(
            pattern.bits, w, np.uint64(_keep_bits(w, lo, hi)), pattern.first, pattern.second, pattern.cos, pattern.sin,
            pattern.touched, *_scratch(pattern.cols, pattern.first.shape[0]),
        )
        values = values[meta[col0, 1] : meta[col1, 1]]
        if gain != 1.0:
            values *= gain
        value_bits = values.astype(dtype).view(weight_bits.dtype)
        _scatter_word(weight_bits, mask, meta, value_bits, w, lo, col0, col1, transposed)


def _write_transposed(pattern, weight_bits, mask, rows, cols, gain, dtype, threads, warm, stream, warming):
    """``G^T``: replay every word first (values only), then write the output row after row.

    Rows of the weight are contiguous, so writing them in order streams
    through the output instead of visiting every row once per word; the
    price is holding the rectangle's cast values (one output item per
    non-zero) until then.  Bands of output rows run on threads, each with its
    own cursors into the words' values.
    """
    (lo, hi), (col0, col1) = rows, cols
    if pattern.nnz * (hi - lo) / max(pattern.rows, 1) < THREAD_ENTRIES:
        threads = 1  # hand-offs would cost more than the work
    first_word, last_word = lo // 64, (hi + 63) // 64
    keeps = np.array([_keep_bits(w, lo, hi) for w in range(first_word, last_word)], dtype=np.uint64)
    parts = max(1, min(TASKS_PER_THREAD * threads, col1 - col0)) if threads > 1 else 1
    edges = np.array([col0 + ((col1 - col0) * b) // parts for b in range(parts + 1)], dtype=np.int64)
    table = _band_counts(pattern.bits, first_word, keeps, edges)
    offsets = np.zeros(keeps.shape[0] + 1, dtype=np.int64)
    np.cumsum(table[-1], out=offsets[1:])
    # EXPAND_PAD spare bytes at the end: the permuting expand loads whole vectors past a word's last value.
    value_bits = np.empty(offsets[-1] + EXPAND_PAD // weight_bits.itemsize, dtype=weight_bits.dtype)
    # float16 and bfloat16 are replayed into float64 and cast once by NumPy afterwards.
    values = value_bits[: offsets[-1]].view(dtype) if dtype in _NATIVE else np.empty(offsets[-1], dtype=np.float64)
    replay = [
        partial(_replay_words, values, offsets, pattern.bits, first_word, keeps, word0, word1, col0, col1,
                pattern.first, pattern.second, pattern.cos, pattern.sin, pattern.touched, gain)
        for word0, word1 in _tasks(pattern, lo, hi, threads)
    ]
    if threads > 1 and warm and warming is None:
        replay.insert(0, partial(_warm, weight_bits, mask))  # one thread maps the output meanwhile
    run_all(replay, threads)
    if warming is not None:
        warming.result()  # the pages are mapped (and nothing writes zeros into them any more)
    if dtype not in _NATIVE:
        value_bits[: offsets[-1]] = values.astype(dtype).view(value_bits.dtype)
    if stream and weight_bits.flags.c_contiguous and mask.flags.c_contiguous:
        weight_bytes, mask_bytes = weight_bits.reshape(-1).view(np.uint8), mask.reshape(-1).view(np.uint8)
        slots = 64 * keeps.shape[0]

        def band(b):
            row_bytes = np.empty(slots * weight_bits.itemsize, dtype=np.uint8)
            return partial(_stream_band, weight_bytes, mask_bytes, hi - lo, row_bytes.view(weight_bits.dtype),
                           row_bytes, np.empty(slots, dtype=np.uint8), pattern.bits, first_word, keeps,
                           offsets[:-1] + table[b], value_bits, lo, col0, edges[b], edges[b + 1])
    else:
        def band(b):
            return partial(_gather_band, weight_bits, mask, pattern.bits, first_word, keeps, offsets[:-1] + table[b],
                           value_bits, lo, col0, edges[b], edges[b + 1])
    run_all([band(b) for b in range(parts) if edges[b + 1] > edges[b]], threads)


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
    warming: Future | None = None,
) -> None:
    """Write ``G[rows[0]:rows[1], cols[0]:cols[1]]`` (times ``gain``, cast) into ``weight`` and its support into ``mask``.

    ``weight`` and ``mask`` are 2-D views of that rectangle (transposed when
    ``transposed``), all zero on entry.  The rows are replayed 64 at a time;
    the rotations still run over every column, so a narrow ``cols`` saves
    memory but not time.  ``warming``: :func:`_warm` of ``weight`` and
    ``mask`` already running (:func:`warm_while`); it is waited for before
    anything is written.
    """
    threads = get_num_threads() if threads is None else threads
    if rows[0] >= rows[1] or cols[0] >= cols[1]:
        if warming is not None:
            warming.result()
        return
    weight_bits = weight.view(_UINT[weight.dtype.itemsize])
    warm = weight.nbytes >= WARM_BYTES
    if transposed:
        stream = weight.nbytes >= STREAM_BYTES
        _write_transposed(pattern, weight_bits, mask, rows, cols, gain, weight.dtype, threads, warm, stream, warming)
        return
    if warming is not None:
        warming.result()  # G's rows are written while they are replayed
    if weight.dtype in _NATIVE:
        tasks = [
            partial(_write_rows, weight, mask, pattern.bits, word0, word1, rows[0], rows[1], cols[0], cols[1],
                    pattern.first, pattern.second, pattern.cos, pattern.sin, pattern.touched, gain)
            for word0, word1 in _tasks(pattern, rows[0], rows[1], threads)
        ]
    else:
        tasks = [
            partial(_write_words, pattern, word0, word1, rows[0], rows[1], cols[0], cols[1], weight_bits, mask,
                    transposed, gain, weight.dtype)
            for word0, word1 in _tasks(pattern, rows[0], rows[1], threads)
        ]
    run_all(tasks, threads)


@jit(nogil=True)
def _touch(memory, start, stop):
    """Write a zero into every page of ``memory[start:stop]`` (a zeroed byte view): the kernel maps them now."""
    for p in range(start, stop, PAGE):
        memory[p] = 0


PAGE = 4096


# Outputs from this size on are mapped by one thread while the others replay (G^T only).
WARM_BYTES = 1 << 22
# Outputs from this size on (they outgrow the caches) are written with non-temporal stores (G^T only).
STREAM_BYTES = 1 << 22


def _warm(*arrays: np.ndarray) -> None:
    """Map the pages of fresh zeroed ``arrays`` (the C-contiguous ones) by writing a zero into each.

    The kernel zeroes a page on its first write, which is most of the cost
    of producing a large output (the benchmark's floor).  Run as one task,
    on one thread, while the other threads replay words: page faults taken
    by several threads at once contend in the kernel (measured slower than
    one thread taking them all), and the replay works in its own cache.
    """
    for array in arrays:
        if array.flags.c_contiguous and array.size:
            memory = array.reshape(-1).view(np.uint8)
            _touch(memory, 0, memory.shape[0])


def warm_while(weight: np.ndarray, mask: np.ndarray, transposed: bool, threads: int | None = None) -> Future | None:
    """Start mapping a large ``G^T`` output's pages on the thread pool now, or None when not worth it.

    Called before the pattern pass, whose single thread would otherwise leave
    the others idle: the mapping then overlaps it, and what is left of it the
    replay (:func:`write_values` takes the future and waits for it before it
    writes).  Only for ``G^T``: ``G``'s rows are written during the replay.
    """
    threads = get_num_threads() if threads is None else threads
    if threads <= 1 or not transposed or weight.nbytes < WARM_BYTES:
        return None
    return start(partial(_warm, weight.view(_UINT[weight.dtype.itemsize]), mask), threads)


def write_givens(
    weight: np.ndarray,
    mask: np.ndarray,
    budget: int | None,
    stream: RotationStream | None,
    gain: float,
    max_rotations: int | None = None,
) -> tuple[int, int, np.ndarray | None]:
    """Same contract as :func:`eoi_core.reference.write_givens`."""
    out, inp = weight.shape
    transposed = out >= inp
    rows, cols = (inp, out) if transposed else (out, inp)
    warming = warm_while(weight, mask, transposed)
    pattern = pattern_pass(rows, cols, budget, stream, max_rotations)
    write_values(pattern, weight, mask, transposed=transposed, rows=(0, rows), cols=(0, cols), gain=gain,
                 warming=warming)
    # A row of G^T is a column of G, whose support size the pattern pass counted.
    return int(pattern.first.shape[0]), pattern.nnz, pattern.counts if transposed else None


def fill(flat_mask: np.ndarray, ranks: np.ndarray, row_support: np.ndarray | None = None) -> None:
    """Same contract as :func:`eoi_core.reference.fill`.

    With ``row_support`` only the rows that hold a drawn rank are walked (the
    zeros before each row follow from the counts); without it, the walk
    skips 8 mask bytes at a time from the start.  Reading a large mask back
    costs about as much as writing it, so the counts matter.
    """
    if ranks.shape[0] == 0:
        return
    head = (-flat_mask.ctypes.data) % 8
    whole = max(0, (flat_mask.shape[0] - head) // 8)
    words = flat_mask[head : head + 8 * whole].view(np.uint64)
    if row_support is not None:
        length = flat_mask.shape[0] // row_support.shape[0]
        _fill_rows(flat_mask, words, head, length, row_support.astype(np.int64, copy=False), ranks)
    else:
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
