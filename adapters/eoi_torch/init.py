r"""``eoi_``: Exact Orthogonal Initialization of one tensor, in the style of ``torch.nn.init``.

The adapter only translates: the weight and mask come from
:func:`eoi_core.sparse_orthogonal` (computed in float64 and cast once to the
tensor's dtype by the core), the seed comes from torch's RNG, and the result is
copied once to the tensor's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import eoi_core
from eoi_core.dtypes import DTYPES

from .distributed import as_dtensor, build_local, is_dtensor, local_bounds

__all__ = ["eoi_", "SUPPORTED_DTYPES"]

# torch dtype -> the core's dtype name (the core's one list, eoi_core.dtypes.DTYPES).  bfloat16
# goes by name: the core casts float64 -> bfloat16 itself (ml_dtypes), so there is one rounding.
_CORE_DTYPES: dict[torch.dtype, Any] = {getattr(torch, name): name for name in DTYPES}
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = tuple(_CORE_DTYPES)

# Largest seed torch.randint can draw (its `high` is exclusive and an int64).
_SEED_BOUND = 2**63 - 1


def check_tensor(tensor: Any, name: str = "tensor") -> torch.Tensor:
    """Return ``tensor`` if it is a floating tensor of rank 2 to 5, else raise naming ``name``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _CORE_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype, one of "
            f"{[str(dtype) for dtype in SUPPORTED_DTYPES]}, got {tensor.dtype}"
        )
    if tensor.is_meta:
        raise ValueError(
            f"{name} is on the meta device and has no values to initialise; build the model on "
            "'meta', call model.to_empty(device=...) and then initialise it"
        )
    if tensor.is_inference():
        raise ValueError(
            f"{name} is an inference tensor (created under torch.inference_mode()) and cannot be "
            "trained; build the model outside inference mode"
        )
    if not 2 <= tensor.dim() <= 5:
        raise ValueError(
            f"{name} must have 2 dims (out, in) (nn.Linear) or 3 to 5 dims "
            f"(out, in // groups, *kernel) (nn.Conv1d/2d/3d), got a {tensor.dim()}-D tensor "
            f"of shape {tuple(tensor.shape)}"
        )
    return tensor


def check_generator(generator: Any) -> torch.Generator | None:
    """Return ``generator`` if it is ``None`` or a ``torch.Generator``, else raise ``TypeError``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be None or a torch.Generator, got {type(generator).__name__}"
        )
    return generator


def draw_seed(generator: torch.Generator | None) -> int:
    """One non-negative 63-bit seed for the core, drawn from torch's RNG.

    With ``generator=None`` it comes from torch's default CPU generator, the one
    ``torch.manual_seed`` seeds; the draw does not depend on the target device, so
    a seed gives the same weight on every device.
    """
    device = "cpu" if generator is None else generator.device
    return int(torch.randint(0, _SEED_BOUND, (), dtype=torch.int64, generator=generator, device=device))


def generate(
    shape: tuple[int, ...],
    density: float,
    dtype: torch.dtype,
    *,
    seed: int,
    gain: float = 1.0,
    groups: int = 1,
    center_density: float | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The core's ``(weight, mask)`` for a torch ``dtype``, as NumPy arrays on the CPU.

    ``weight`` has the NumPy counterpart of ``dtype`` (``ml_dtypes.bfloat16`` for
    ``torch.bfloat16``); :func:`as_tensor` turns it into a torch tensor without a copy.
    """
    return eoi_core.sparse_orthogonal(
        shape,
        density,
        gain=gain,
        dtype=_CORE_DTYPES[dtype],
        rng=seed,
        groups=groups,
        center_density=center_density,
    )


def as_tensor(weight: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A CPU torch tensor sharing ``weight``'s memory, reinterpreted as ``dtype``.

    NumPy has no native bfloat16, so its bits travel as uint16 and are viewed
    as ``torch.bfloat16`` (both are the top half of an IEEE float32): no second
    rounding.
    """
    if dtype == torch.bfloat16:
        return torch.from_numpy(weight.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(weight)


def copy_into(tensor: torch.Tensor, values: np.ndarray) -> None:
    """Write the core's ``values`` (NumPy, ``tensor``'s dtype and shape, any strides) into ``tensor``.

    A contiguous CPU tensor is written through a NumPy view (one memcpy on the
    calling thread: torch's OpenMP team costs more than the copy for small
    weights on a busy machine, and the thread may be one of sparsify's
    workers); anything else with ``Tensor.copy_``.  Outside autograd either way.
    """
    if tensor.device.type == "cpu" and tensor.is_contiguous() and not tensor.is_conj():
        destination = tensor.detach()
        if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: move the bits
            np.copyto(destination.view(torch.int16).numpy(), values.view(np.int16))
        else:
            np.copyto(destination.numpy(), values)
        return
    with torch.no_grad():
        tensor.copy_(as_tensor(np.ascontiguousarray(values), tensor.dtype))


def eoi_(
    tensor: torch.Tensor,
    density: float,
    *,
    gain: float = 1.0,
    groups: int = 1,
    center_density: float | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` in place with a sparse, exactly orthogonal weight; return its mask.

    Like :func:`torch.nn.init.orthogonal_`, but the result has exactly
    ``round(density * size)`` trainable entries (per group block), built by
    composing random Givens rotations (EOI, Nowak et al. 2024).  For a 2-D
    weight ``W`` (``nn.Linear``, layout ``(out, in)``)

    .. math:: W^\top W = g^2 I \ (out \ge in), \qquad W W^\top = g^2 I \ (out < in),

    to the rounding of ``tensor.dtype``.  A convolution weight
    ``(out, in // groups, *kernel)`` (``nn.Conv1d/2d/3d``) is delta-orthogonal:
    the spatial centre tap (index ``(k - 1) // 2`` on each axis) of each of the
    ``groups`` blocks along ``out`` is such a matrix and every other tap is
    zero; the rest of the density budget is zero-valued trainable entries at
    random positions of the kernel.

    A ``nn.ConvTranspose*d`` weight has layout ``(in, out // groups, *kernel)``
    and its groups split the first axis, so passing it as it is (with the
    layer's ``groups``) gives per-group centre blocks ``H`` of shape
    ``(in/g, out/g)``.  The layer computes ``y = H^T x`` at each position, which
    preserves norms when ``in <= out`` (then ``H H^T = g^2 I``), the same rule as
    for a convolution with ``out >= in``.

    Parameters
    ----------
    tensor : torch.Tensor
        Floating tensor (float16, bfloat16, float32 or float64) of rank 2 to 5,
        on any device; a ``Parameter`` is fine, ``torch.no_grad`` is not needed.
        A ``DTensor`` (``Shard(dim)`` / ``Replicate()`` placements on any mesh,
        e.g. a parameter after ``fully_shard``) is filled rank by rank: each
        rank builds only its local shard (:mod:`eoi_torch.distributed`), equal
        bit for bit to the same slice of the single-process result, and the
        mask is a ``DTensor`` laid out like ``tensor``.  Every rank must draw
        the same seed (the same ``torch.manual_seed`` / ``generator`` state).
    density : float in (0, 1]
        Fraction of trainable entries; at least :func:`eoi_core.min_density` of
        the shape (an orthogonal block needs ``min(out/g, in/g)`` non-zeros).
    gain : float, optional
        Positive scale ``g`` (e.g. ``torch.nn.init.calculate_gain("relu")``).
    groups : int, optional
        The layer's ``groups``; must divide ``tensor.shape[0]``.
    center_density : None, float or "sqrt", optional
        Density of the centre tap of a kernel: ``None`` uses ``density``,
        ``"sqrt"`` uses ``min(1, density * K, sqrt(density))`` (``K`` taps), a
        float sets it.  See :func:`eoi_core.sparse_orthogonal`.
    generator : torch.Generator, optional
        Source of the seed.  ``None`` draws it from torch's default CPU
        generator, so ``torch.manual_seed(s)`` makes the result reproducible
        exactly as it does for ``torch.nn.init``.

    Returns
    -------
    mask : torch.Tensor of bool, shape ``tensor.shape``, on ``tensor.device``
        The trainable entries; ``tensor`` is zero outside it.  A ``DTensor``
        with ``tensor``'s mesh and placements when ``tensor`` is one.

    Raises
    ------
    TypeError, ValueError
        For a non-floating tensor, a rank outside 2..5, a ``DTensor`` placement
        that is not one rectangle of it (``Partial``, strided shards) or any
        invalid argument; ``tensor`` is left untouched.

    Examples
    --------
    >>> import torch, eoi_torch
    >>> layer = torch.nn.Linear(128, 256)
    >>> mask = eoi_torch.eoi_(layer.weight, density=0.1)
    >>> int(mask.sum()) == round(0.1 * 256 * 128)
    True
    >>> w = layer.weight.detach().double()
    >>> bool(torch.allclose(w.T @ w, torch.eye(128, dtype=torch.float64), atol=1e-5))
    True
    """
    check_tensor(tensor)
    check_generator(generator)
    if not tensor.is_leaf:
        raise ValueError(
            "tensor is computed from another tensor (e.g. a parametrized layer.weight, recomputed on "
            "every access), so filling it would change nothing; initialise the parameter itself "
            "(layer.parametrizations.weight.original) or the layer before it is parametrized"
        )
    # Fail before the draw, so a bad call does not advance torch's RNG either.
    bounds = local_bounds(tensor) if is_dtensor(tensor) else None
    eoi_core.validate(
        tuple(tensor.shape),
        density,
        gain=gain,
        dtype=_CORE_DTYPES[tensor.dtype],
        groups=groups,
        center_density=center_density,
    )
    seed = draw_seed(generator)
    if is_dtensor(tensor):  # a sharded parameter: build this rank's rectangle only
        values, mask, _ = build_local(tuple(tensor.shape), bounds, density, seed=seed,
                                      dtype=_CORE_DTYPES[tensor.dtype], gain=gain, groups=groups,
                                      center_density=center_density)
        with torch.inference_mode(False), torch.no_grad():
            local = tensor.to_local()
            copy_into(local, values)
            return as_dtensor(torch.from_numpy(mask).to(local.device), tensor)
    weight, mask = generate(
        tuple(tensor.shape),
        density,
        tensor.dtype,
        seed=seed,
        gain=gain,
        groups=groups,
        center_density=center_density,
    )
    # Outside inference mode, so that the mask is an ordinary tensor training can use.
    with torch.inference_mode(False):
        copy_into(tensor, weight)
        return torch.from_numpy(mask).to(tensor.device)
