"""``EOI``: Exact Orthogonal Initialization as a Keras 3 initializer."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

import eoi_core
from eoi_core.checks import check_center_density, check_density, check_gain, check_int
from eoi_core.dtypes import DTYPES
from eoi_core.kernels import KERNEL_LAYOUTS, KernelLayout, kernel_layout

from .layouts import building_layer, in_stateless_scope, spec_for_shape
from .seeding import draw_core_seed, normalize_seed, serialize_seed

__all__ = ["EOI", "float_dtype", "resolve_layout"]


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
        raise TypeError(f"dtype must be one of {DTYPES}, got dtype={dtype!r}") from error
    if name not in DTYPES:
        raise TypeError(f"EOI makes floating-point weights: dtype must be one of {DTYPES}, got dtype={name!r}")
    return name


def _shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError as error:
        raise TypeError(f"shape must be a sequence of ints, got shape={shape!r}") from error
    if len(dims) < 2:
        raise ValueError(
            f"EOI initializes weight matrices and kernels of rank >= 2; got shape={dims} of rank {len(dims)}. "
            "A rank-1 weight such as a bias has no orthogonal structure: initialize it with zeros"
        )
    return tuple(check_int(d, f"shape[{axis}]") for axis, d in enumerate(dims))


def resolve_layout(
    shape: Sequence[int], layout: str | None, *, groups: int = 1, gates: int | None = None, in_axes: int = 1
) -> KernelLayout:
    """The layout of a Keras kernel of ``shape``: given, or read from the layer Keras is building.

    With ``layout=None`` the layer that called the initializer decides (see
    :mod:`eoi_keras.layouts`); outside a known layer a rank-2 kernel is
    ``"dense"`` and any other rank is an error asking for ``layout=``, since
    guessing (e.g. reading an attention kernel as a convolution) would leave
    rows of the kernel all zero.
    """
    dims = _shape(shape)
    if layout is not None:
        return kernel_layout(dims, layout, groups=groups, gates=gates, in_axes=in_axes)
    layer, parent = building_layer()
    spec = None if layer is None else spec_for_shape(layer, parent, dims)
    if spec is not None and spec.layout is not None:
        if groups != 1 and groups != spec.groups:
            raise ValueError(
                f"EOI(groups={groups}) initializes a kernel of {type(layer).__name__} {layer.name!r}, "
                f"which has {spec.groups} blocks; leave groups at 1 (the layer decides) or pass layout="
            )
        return spec.kernel_layout(dims)
    if len(dims) == 2:
        return kernel_layout(dims, "dense", groups=groups)
    where = "outside a layer" if layer is None else f"for {type(layer).__name__} {layer.name!r}"
    raise ValueError(
        f"EOI cannot tell the layout of the kernel of shape {dims} ({where}): pass layout= one of "
        f"{KERNEL_LAYOUTS} (Conv*D: 'conv', Conv*DTranspose: 'conv_transpose', DepthwiseConv*D: 'depthwise', "
        "EinsumDense / attention: 'einsum' with in_axes=, LSTM/GRU: 'gates' with gates=)"
        + ("" if spec is None else f"; {spec.note}")
    )


@keras.saving.register_keras_serializable(package="eoi")
class EOI(keras.initializers.Initializer):
    r"""Exact Orthogonal Initialization (Nowak et al., ICML 2024) of a sparse kernel.

    Builds, with :func:`eoi_core.sparse_orthogonal`, a kernel whose non-zeros
    fill exactly ``floor(density * block_size + 0.5)`` positions per
    orthogonal block and in which every block is exactly orthogonal.  Where the
    blocks are depends on the kernel's *layout*
    (:func:`eoi_core.kernels.kernel_layout`):

    * ``"dense"``: a ``Dense`` kernel ``W`` of shape ``(in, out)``:
      ``W W^T = gain^2 I`` when ``out >= in`` (the layer preserves norms up
      to ``gain``), ``W^T W = gain^2 I`` when ``out < in``;
    * ``"conv"``: ``Conv1D/2D/3D`` kernel ``(*kernel, in // groups, out)``
      (delta-orthogonal): the spatial centre tap (index ``(k - 1) // 2``) of
      each of the ``groups`` blocks is a sparse orthogonal ``(in/g, out/g)``
      matrix and every other tap is zero;
    * ``"conv_transpose"``: ``Conv*DTranspose`` kernel ``(*kernel, out, in)``,
      delta-orthogonal in the same way;
    * ``"depthwise"``: ``DepthwiseConv*D`` kernel ``(*kernel, channels,
      multiplier)``: one orthogonal block per channel;
    * ``"gates"``: ``LSTM`` / ``GRU`` kernel or recurrent kernel ``(in, gates *
      units)``: one orthogonal ``(in, units)`` block per gate (the sparse
      counterpart of Keras' default ``Orthogonal`` recurrent initializer);
    * ``"einsum"``: ``EinsumDense`` kernel ``(*in_axes, *out_axes)``, input and
      output axes flattened to a matrix, ``groups`` blocks along the output
      (one per head for attention projections).

    With ``layout=None`` (the default) the layer Keras is building decides:
    every layer in :mod:`eoi_keras.layouts` (``Dense``, ``EinsumDense``,
    ``MultiHeadAttention``, ``Conv*``, ``Conv*Transpose``, ``DepthwiseConv*``,
    ``SeparableConv*``, ``SimpleRNN``, ``LSTM``, ``GRU``, ``ConvLSTM*``) gets
    its own layout and blocks.  Called outside such a layer, a rank-2 shape
    is dense and any other shape needs ``layout=`` (an error says so):
    EOI never guesses a layout into dead rows.

    The remaining density budget consists of *zero-valued* trainable
    positions.  An initializer returns one tensor, so it cannot keep a
    mask: a layer initialized with ``EOI`` alone trains densely.  To keep the
    sparsity pattern fixed in ``fit``, use :func:`eoi_keras.sparsify` (which
    also initializes) or give the kernel a :class:`eoi_keras.MaskConstraint`.

    Parameters
    ----------
    density : float in (0, 1]
        Fraction of trainable entries of each block.  Must be at least the
        block's orthogonal floor (:func:`eoi_core.min_density`), checked when
        Keras calls the initializer.
    gain : float, optional
        Positive scale of the orthogonal blocks.
    center_density : None, float or "sqrt", optional
        Density of the centre tap of a conv kernel: ``None`` uses ``density``
        (the paper's base variant), ``"sqrt"`` uses ``min(1, density * K,
        sqrt(density))`` (its second variant), a float sets it.  A float on a
        rank-2 kernel is an error, as in :func:`eoi_core.sparse_orthogonal`.
    seed : None, int >= 0 or keras.random.SeedGenerator, optional
        As for Keras' own random initializers (see :mod:`eoi_keras.seeding`).
        An ``int`` or ``None`` gives the same values on every call of one
        instance; an ``int`` gives the same values on every backend (it is
        the core's ``rng``).  ``None`` draws the seed once from Python's
        ``random`` when the initializer is made, so
        ``keras.utils.set_random_seed`` makes unseeded models reproducible.
        A ``SeedGenerator`` gives new values on every call, also when Keras
        builds the model inside a traced function.
    groups : int, optional
        Blocks along the output for ``layout="conv"`` or ``"einsum"`` (with
        ``layout=None`` the layer's own ``groups`` is used).
    layout : None or one of :data:`eoi_core.kernels.KERNEL_LAYOUTS`, optional
        How to read the kernel (see above).
    gates : int, optional
        Number of gate blocks for ``layout="gates"`` (LSTM 4, GRU 3).
    in_axes : int, optional
        Leading input axes of the kernel for ``layout="einsum"``.

    Raises
    ------
    TypeError, ValueError
        For bad arguments here, and, when Keras calls the initializer, for a
        shape of rank < 2 (a bias) or an unknown layout, an infeasible density
        or a non-float dtype.

    Examples
    --------
    >>> import keras, eoi_keras
    >>> layer = keras.layers.Dense(256, kernel_initializer=eoi_keras.EOI(0.1, seed=0))
    >>> layer.build((None, 128))
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel)
    >>> bool(np.allclose(kernel @ kernel.T, np.eye(128), atol=1e-5))
    True
    >>> lstm = keras.layers.LSTM(8, recurrent_initializer=eoi_keras.EOI(0.5, seed=1))
    >>> lstm.build((None, 5, 3))
    >>> gates = keras.ops.convert_to_numpy(lstm.cell.recurrent_kernel).reshape(8, 4, 8)
    >>> all(np.allclose(g.T @ g, np.eye(8), atol=1e-5) for g in gates.transpose(1, 0, 2))
    True
    """

    def __init__(
        self,
        density: float,
        gain: float = 1.0,
        center_density: float | str | None = None,
        seed: Any = None,
        groups: int = 1,
        layout: str | None = None,
        gates: int | None = None,
        in_axes: int = 1,
    ):
        self.density = check_density(density)
        self.gain = check_gain(gain)
        self.center_density = check_center_density(center_density)
        self.groups = check_int(groups, "groups")
        if layout is not None and layout not in KERNEL_LAYOUTS:
            raise ValueError(f"layout must be None or one of {KERNEL_LAYOUTS}, got layout={layout!r}")
        self.layout = layout
        self.gates = None if gates is None else check_int(gates, "gates")
        self.in_axes = check_int(in_axes, "in_axes")
        # Kept as given so that get_config round-trips it, as Keras does.
        self._init_seed = seed
        self.seed = normalize_seed(seed)

    def kernel_layout(self, shape: Sequence[int]) -> KernelLayout:
        """The :class:`~eoi_core.kernels.KernelLayout` this initializer uses for ``shape`` now."""
        return resolve_layout(shape, self.layout, groups=self.groups, gates=self.gates, in_axes=self.in_axes)

    def _plan(self, shape: Sequence[int], dtype: str) -> tuple[KernelLayout, dict[str, Any]]:
        kernel = self.kernel_layout(shape)
        arguments = dict(gain=self.gain, dtype=dtype, groups=kernel.groups, center_density=self.center_density)
        try:
            # Fail before the draw, so a bad call does not advance a SeedGenerator.
            eoi_core.validate(kernel.canonical, self.density, **arguments)
        except ValueError as error:
            # The core speaks the canonical layout; say which Keras shape it was.
            raise ValueError(
                f"EOI cannot initialize the Keras {kernel.kind} kernel of shape {kernel.shape} "
                f"(canonical {kernel.canonical}): {error}"
            ) from error
        return kernel, arguments

    def weight_and_mask(self, shape: Sequence[int], dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """One EOI draw in Keras layout, as NumPy arrays.

        Parameters
        ----------
        shape : sequence of int
            The Keras kernel shape.
        dtype : dtype-like, optional
            A float dtype (default ``keras.config.floatx()``).

        Returns
        -------
        weight : ndarray of ``shape`` and ``dtype``
        mask : bool ndarray of ``shape``; the weight's non-zeros are a subset of it.
        """
        kernel, arguments = self._plan(shape, float_dtype(dtype))
        weight, mask = eoi_core.sparse_orthogonal(
            kernel.canonical, self.density, rng=draw_core_seed(self.seed), **arguments
        )
        return kernel.from_canonical(weight), kernel.from_canonical(mask)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """A backend tensor of ``shape`` and ``dtype`` holding an EOI kernel (the mask is dropped)."""
        name = float_dtype(dtype)
        if in_stateless_scope():
            # Keras creates no variable value in a stateless scope: it calls the
            # initializer there only for a placeholder of an uninitialized
            # variable, used for shape inference (a model built by `fit`), and
            # initializes the variable later, outside it.  The placeholder takes
            # no draw, so a SeedGenerator gives the same kernels however the
            # model is built.
            self._plan(shape, name)
            return keras.ops.zeros(tuple(shape), dtype=name)
        weight, _ = self.weight_and_mask(shape, name)
        return keras.ops.convert_to_tensor(weight, dtype=name)

    def get_config(self) -> dict[str, Any]:
        return {
            "density": self.density,
            "gain": self.gain,
            "center_density": self.center_density,
            "seed": serialize_seed(self._init_seed),
            "groups": self.groups,
            "layout": self.layout,
            "gates": self.gates,
            "in_axes": self.in_axes,
        }

    def __repr__(self) -> str:
        return (
            f"EOI(density={self.density}, gain={self.gain}, center_density={self.center_density!r}, "
            f"seed={self._init_seed!r}, groups={self.groups}, layout={self.layout!r})"
        )
