"""Public entry points of the core: NumPy in, NumPy out, canonical layout."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from .allocation import aligned_zeros
from .checks import ENGINES, check_density, check_engine, check_gain, check_int
from .budget import Budget, plan_budget
from .dtypes import check_gain_representable, resolve_dtype
from .layout import Layout, parse_layout
from .randomness import RotationStream, as_generator, fill_ranks, split

__all__ = ["sparse_orthogonal", "validate", "givens_compose", "orthogonality_error", "ENGINES"]

def _engine(name: Any) -> ModuleType:
    check_engine(name)
    # Imported on first use so that `import eoi_core` does not pay for Numba.
    return importlib.import_module(f".{'engine' if name == 'numba' else 'reference'}", __package__)


def _check_angle(angle: Any) -> float | None:
    if angle is None:
        return None
    if isinstance(angle, bool) or not isinstance(angle, (int, float, np.floating, np.integer)):
        raise TypeError(f"angle must be None or a real number of radians, got {angle!r}")
    if not np.isfinite(angle):
        raise ValueError(f"angle must be finite, got {angle!r}")
    return float(angle)


@dataclass(frozen=True)
class _Plan:
    layout: Layout
    density: float
    gain: float
    dtype: np.dtype
    budget: Budget


def _plan(shape, density, gain, dtype, groups, center_density) -> _Plan:
    layout = parse_layout(shape, groups)
    density = check_density(density)
    gain = check_gain(gain)
    dtype = resolve_dtype(dtype)
    check_gain_representable(gain, dtype)
    return _Plan(
        layout=layout,
        density=density,
        gain=gain,
        dtype=dtype,
        budget=plan_budget(layout, density, center_density),
    )


def validate(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    groups: int = 1,
    center_density: float | str | None = None,
) -> None:
    """Raise exactly the error :func:`sparse_orthogonal` would raise for these arguments.

    Builds nothing; for adapters that must fail early (at trace time in JAX,
    when Keras calls an initializer) before any randomness is drawn.

    Examples
    --------
    >>> validate((64, 32), 0.1)
    >>> validate((64, 32), 0.001)
    Traceback (most recent call last):
    ...
    ValueError: density=0.001 is infeasible for shape (64, 32) with groups=1: ...
    """
    _plan(shape, density, gain, dtype, groups, center_density)


def sparse_orthogonal(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: float | str | None = None,
    engine: str = "numba",
    angle: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact Orthogonal Initialization: a sparse orthogonal weight and its mask.

    Dense weights ``(out, in)``: random Givens rotations are composed from the
    identity until the support reaches the budget, so that

    .. math:: W^\top W = g^2 I \ (out \ge in), \qquad W W^\top = g^2 I \ (out < in).

    Convolution kernels ``(out, in // groups, *kernel)`` (rank 3 to 5) use the
    delta-orthogonal embedding: the spatial centre (index ``(k - 1) // 2`` on
    every axis) holds a sparse orthogonal ``H``, every other tap of the weight
    is zero, and the rest of the budget is zero-valued trainable entries at
    uniformly random zero positions anywhere in the kernel.  With
    ``groups > 1`` each of the ``groups`` blocks along ``out`` is an
    independent EOI.

    Parameters
    ----------
    shape : sequence of int
        Canonical (PyTorch) shape ``(out, in)`` or ``(out, in // groups, *kernel)``.
    density : float in (0, 1]
        Fraction of trainable entries.  Each group block gets exactly
        ``floor(density * block_size + 0.5)`` of them (round half up); it must
        be at least ``min(out/g, in/g)``, the floor of an orthogonal block.
    gain : float, optional
        Positive scale ``g`` of the orthogonal weight.
    dtype : dtype-like, optional
        float16, bfloat16 (needs ``ml_dtypes``), float32 or float64.  Values are
        computed in float64 and cast once.
    rng : None, int or numpy.random.Generator, optional
        Randomness (SPEC 7).  The same seed gives the same result on every
        engine and machine; the global NumPy state is never touched.
    groups : int, optional
        Number of independent blocks; must divide ``shape[0]``.
    center_density : None, float or "sqrt", optional
        Density of the centre ``H`` for kernels: ``None`` uses ``density`` (the
        paper's base variant), ``"sqrt"`` uses ``min(1, density * K,
        sqrt(density))`` with ``K`` the number of taps (the paper's second
        variant), a float sets it (it must fit the block budget).
    engine : {"numba", "reference"}, optional
        ``"numba"`` is fast; ``"reference"`` is the plain-NumPy specification.
        Both return the same mask and the same weight to float64 rounding.
    angle : float, optional
        Fix every rotation angle (radians) instead of drawing it uniformly;
        a research knob for the paper's angle ablation.

    Returns
    -------
    weight : ndarray of ``shape`` and ``dtype``
        Non-zero only on the Givens support (a subset of ``mask``).
    mask : ndarray of bool, ``shape``
        The trainable entries.

    Raises
    ------
    TypeError, ValueError
        For any invalid argument, naming it; nothing is allocated before all
        arguments are checked.

    Examples
    --------
    >>> weight, mask = sparse_orthogonal((256, 128), 0.1, rng=0)
    >>> bool(np.allclose(weight.T.astype(np.float64) @ weight, np.eye(128), atol=1e-5))
    True
    >>> int(mask.sum()) == round(0.1 * 256 * 128)
    True
    """
    plan = _plan(shape, density, gain, dtype, groups, center_density)
    layout, budget = plan.layout, plan.budget
    angle = _check_angle(angle)
    implementation = _engine(engine)
    generator = as_generator(rng)

    weight = aligned_zeros(layout.shape, plan.dtype)
    mask = aligned_zeros(layout.shape, bool)
    centre = layout.centre_index()
    cols = max(layout.out_per_group, layout.in_per_group)
    for group, child in enumerate(split(generator, layout.groups)):
        rotation_rng, fill_rng = split(child, 2)
        stream = RotationStream(rotation_rng, cols, angle) if cols > 1 else None
        block_weight = weight[layout.block(group)]
        block_mask = mask[layout.block(group)]
        _, nnz, row_support = implementation.write_givens(
            block_weight[centre], block_mask[centre], budget.centre, stream, plan.gain
        )
        ranks = fill_ranks(fill_rng, layout.block_size - nnz, budget.block - nnz)
        implementation.fill(block_mask.reshape(-1), ranks, row_support)
    return weight, mask


def givens_compose(
    rows: int,
    cols: int,
    rotations: int,
    rng: Any = None,
    *,
    engine: str = "numba",
    angle: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Compose exactly ``rotations`` random Givens rotations, with no density budget.

    Starts from the identity padded to ``rows x cols`` (built wide and
    transposed when ``rows > cols``) and applies the rotation stream of
    :func:`sparse_orthogonal`.  Used to test and plot the density law
    (:func:`eoi_core.expected_density`).

    Returns
    -------
    weight : float64 ndarray ``(rows, cols)``, orthogonal as in :func:`sparse_orthogonal`.
    mask : bool ndarray ``(rows, cols)``, its structural support.
    """
    rows = check_int(rows, "rows")
    cols = check_int(cols, "cols")
    rotations = check_int(rotations, "rotations", minimum=0)
    angle = _check_angle(angle)
    implementation = _engine(engine)
    generator = as_generator(rng)
    width = max(rows, cols)
    if width < 2 and rotations:
        raise ValueError(f"a 1 x 1 matrix admits no Givens rotation, got rotations={rotations}")
    weight = np.zeros((rows, cols))
    mask = np.zeros((rows, cols), dtype=bool)
    stream = RotationStream(generator, width, angle) if width > 1 else None
    implementation.write_givens(weight, mask, None, stream, 1.0, max_rotations=rotations)
    return weight, mask


def orthogonality_error(
    weight: np.ndarray, *, gain: float = 1.0, groups: int = 1, relative: bool = False
) -> float:
    r"""Largest deviation from exact (semi-)orthogonality, in float64.

    For each group block's centre slice ``H`` (``out/g x in/g``; the whole
    matrix for a dense weight) returns ``max |H^T H - g^2 I|`` when
    ``out >= in`` and ``max |H H^T - g^2 I|`` otherwise, maximised over groups;
    with ``relative=True``, ``max |(H/g)^T (H/g) - I|`` instead (the same
    number divided by ``g^2``, computed without forming ``g^2``).

    Cost: one Gram matrix per block, ``O(out * in * min(out, in))``; meant
    for tests and checks, not for every layer of a large model.

    Raises
    ------
    ValueError
        When ``relative=False`` and ``g^2`` is not a normal float64 (below
        about 1.5e-154 or above 1.3e154 for ``g``): the absolute error would
        be meaningless (0 or inf); pass ``relative=True``.

    Examples
    --------
    >>> weight, _ = sparse_orthogonal((32, 16), 0.2, gain=2.0, rng=0, dtype=np.float64)
    >>> orthogonality_error(weight, gain=2.0) < 1e-12
    True
    >>> orthogonality_error(weight, gain=2.0, relative=True) < 1e-13
    True
    """
    array = np.asarray(weight)
    layout = parse_layout(array.shape, groups)
    gain = check_gain(gain)
    square = gain * gain  # a Python float: inf or 0.0 on overflow or underflow, never an exception
    if not relative and not (np.finfo(np.float64).tiny <= square < np.inf):
        raise ValueError(
            f"gain={gain!r}: gain**2 is not a normal float64, so the absolute error "
            "max|H^T H - gain^2 I| cannot be computed faithfully; pass relative=True"
        )
    # Absolute: the Gram of H against g^2 I as stored; relative: of H / g against I (no g^2 formed).
    scale, target = (gain, 1.0) if relative else (1.0, square)
    worst = 0.0
    for group in range(layout.groups):
        centre = array[layout.block(group)][layout.centre_index()].astype(np.float64) / scale
        gram = centre.T @ centre if centre.shape[0] >= centre.shape[1] else centre @ centre.T
        worst = max(worst, float(np.max(np.abs(gram - target * np.eye(gram.shape[0])))))
    return worst
