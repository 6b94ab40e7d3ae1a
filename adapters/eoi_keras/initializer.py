"""``EOI``: Exact Orthogonal Initialization as a Keras 3 initializer."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

import eoi_core
from eoi_core import layout
from eoi_core.checks import check_density, check_fraction, check_gain, check_int
from eoi_core.budget import CENTER_POLICIES

from .seeding import draw_core_seed, normalize_seed, serialize_seed

__all__ = ["EOI", "FLOAT_DTYPES", "float_dtype", "check_keras_shape"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
MAX_RANK = layout.MAX_RANK


def float_dtype(dtype: Any) -> str:
    """Keras' standard name of ``dtype`` (``None``: ``keras.config.floatx()``), which must be a float.

    Raises
    ------
    TypeError
        For a non-float or unknown dtype: an orthogonal weight is real-valued.
    """
    try:
        name = keras.backend.standardize_dtype(dtype)
    except ValueError as error:
        raise TypeError(f"dtype must be one of {FLOAT_DTYPES}, got dtype={dtype!r}") from error
    if name not in FLOAT_DTYPES:
        raise TypeError(
            f"EOI makes floating-point weights: dtype must be one of {FLOAT_DTYPES}, got dtype={name!r}"
        )
    return name


def check_keras_shape(shape: Any) -> tuple[int, ...]:
    """Validate a Keras weight shape: ``(in, out)`` or ``(*kernel, in // groups, out)``, rank 2 to 5."""
    try:
        dims = tuple(shape)
    except TypeError as error:
        raise TypeError(f"shape must be a sequence of ints, got shape={shape!r}") from error
    if not 2 <= len(dims) <= MAX_RANK:
        raise ValueError(
            "EOI initializes weight matrices (in, out) and convolution kernels "
            f"(*kernel, in // groups, out) of rank 2 to {MAX_RANK}; got shape={dims} of rank {len(dims)}"
            + (
                ". A rank-1 weight such as a bias has no orthogonal structure: initialize it with zeros"
                if len(dims) == 1
                else ""
            )
        )
    return tuple(check_int(d, f"shape[{axis}]") for axis, d in enumerate(dims))


def _check_center_density(center_density: Any) -> float | str | None:
    if center_density is None:
        return None
    if isinstance(center_density, str):
        if center_density not in CENTER_POLICIES:
            raise ValueError(
                f"center_density must be None, a float in (0, 1] or one of {CENTER_POLICIES}, "
                f"got center_density={center_density!r}"
            )
        return center_density
    return check_fraction(center_density, "center_density")


@keras.saving.register_keras_serializable(package="eoi")
class EOI(keras.initializers.Initializer):
    r"""Exact Orthogonal Initialization (Nowak et al., ICML 2024) of a sparse kernel.

    Builds, with :func:`eoi_core.sparse_orthogonal`, a kernel whose non-zeros
    fill exactly ``floor(density * size + 0.5)`` positions (per group block)
    and which is exactly orthogonal:

    * ``Dense`` / 2-D ``EinsumDense`` kernel ``W`` of shape ``(in, out)``:
      ``W W^T = gain^2 I`` when ``out >= in`` (the layer preserves norms up
      to ``gain``), ``W^T W = gain^2 I`` when ``out < in``;
    * ``Conv1D/2D/3D`` kernel of shape ``(*kernel, in // groups, out)``
      (delta-orthogonal): the spatial centre tap (index ``(k - 1) // 2``) of
      each of the ``groups`` blocks is a sparse orthogonal
      ``(in/g, out/g)`` matrix, every other tap is zero, so at stride 1 the
      convolution acts as an orthogonal 1x1 convolution.

    The remaining density budget consists of *zero-valued* trainable
    positions.  An initializer returns one tensor, so it cannot keep a
    mask: a layer initialized with ``EOI`` alone trains densely.  To keep the
    sparsity pattern fixed in ``fit``, use :func:`eoi_keras.sparsify` (which
    also initializes) or give the kernel a :class:`eoi_keras.MaskConstraint`.

    Parameters
    ----------
    density : float in (0, 1]
        Fraction of trainable entries of the kernel (per group block).  Must be
        at least :func:`eoi_core.min_density` of the kernel, checked when Keras
        calls the initializer.
    gain : float, optional
        Positive scale of the orthogonal matrix.
    center_density : None, float or "sqrt", optional
        Density of the centre tap of a conv kernel: ``None`` uses ``density``
        (the paper's base variant), ``"sqrt"`` uses ``min(1, density * K,
        sqrt(density))`` (its second variant), a float sets it.
    seed : None, int >= 0 or keras.random.SeedGenerator, optional
        As for Keras' own random initializers.  An ``int`` or ``None``
        (unseeded) gives the same values on every call of one instance; an
        ``int`` gives the same values on every backend (it is the core's
        ``rng``).  ``None`` draws the seed once from Python's ``random`` when
        the initializer is made, so ``keras.utils.set_random_seed`` makes
        unseeded models reproducible.  A ``SeedGenerator`` gives new values on
        every call.
    groups : int, optional
        Number of groups of the convolution whose kernel this initializes.
        Keras passes an initializer only the kernel shape, so a grouped
        ``Conv*D(groups=g)`` needs ``EOI(..., groups=g)`` for block-wise
        orthogonality (:func:`eoi_keras.sparsify` reads it from the layer).

    Raises
    ------
    TypeError, ValueError
        For bad arguments here, and, when Keras calls the initializer, for a
        shape of rank < 2 (a bias) or > 5, an infeasible density or a
        non-float dtype.

    Examples
    --------
    >>> import keras, eoi_keras
    >>> layer = keras.layers.Dense(256, kernel_initializer=eoi_keras.EOI(0.1, seed=0))
    >>> layer.build((None, 128))
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel)
    >>> bool(np.allclose(kernel @ kernel.T, np.eye(128), atol=1e-5))
    True
    """

    def __init__(
        self,
        density: float,
        gain: float = 1.0,
        center_density: float | str | None = None,
        seed: Any = None,
        groups: int = 1,
    ):
        self.density = check_density(density)
        self.gain = check_gain(gain)
        self.center_density = _check_center_density(center_density)
        self.groups = check_int(groups, "groups")
        # Kept as given so that get_config round-trips it, as Keras does.
        self._init_seed = seed
        self.seed = normalize_seed(seed)

    def weight_and_mask(self, shape: Sequence[int], dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """One EOI draw in Keras layout, as NumPy arrays.

        Parameters
        ----------
        shape : sequence of int
            Keras shape ``(in, out)`` or ``(*kernel, in // groups, out)``.
        dtype : dtype-like, optional
            A float dtype (default ``keras.config.floatx()``).

        Returns
        -------
        weight : ndarray of ``shape`` and ``dtype``
        mask : bool ndarray of ``shape``; the weight's non-zeros are a subset of it.
        """
        dims = check_keras_shape(shape)
        name = float_dtype(dtype)
        canonical = layout.canonical_shape(dims)
        rng = draw_core_seed(self.seed)
        try:
            weight, mask = eoi_core.sparse_orthogonal(
                canonical,
                self.density,
                gain=self.gain,
                dtype=name,
                rng=rng,
                groups=self.groups,
                center_density=self.center_density,
            )
        except ValueError as error:
            # The core speaks the canonical layout; say which Keras shape it was.
            raise ValueError(
                f"EOI cannot initialize the Keras weight of shape {dims} (canonical {canonical}): {error}"
            ) from error
        return layout.to_channels_last(weight), layout.to_channels_last(mask)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """A backend tensor of ``shape`` and ``dtype`` holding an EOI kernel (the mask is dropped)."""
        name = float_dtype(dtype)
        weight, _ = self.weight_and_mask(shape, name)
        return keras.ops.convert_to_tensor(np.ascontiguousarray(weight), dtype=name)

    def get_config(self) -> dict[str, Any]:
        return {
            "density": self.density,
            "gain": self.gain,
            "center_density": self.center_density,
            "seed": serialize_seed(self._init_seed),
            "groups": self.groups,
        }

    def __repr__(self) -> str:
        return (
            f"EOI(density={self.density}, gain={self.gain}, center_density={self.center_density!r}, "
            f"seed={self._init_seed!r}, groups={self.groups})"
        )
