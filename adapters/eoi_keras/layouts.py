"""Which weight matrices a Keras layer has, and the layout of each.

Keras hands an initializer only a shape, and the same shape means different
things in different layers: ``(64, 4, 16)`` is a ``Conv1D`` kernel ``(width,
in, out)`` or a ``MultiHeadAttention`` query kernel ``(in, heads, head_dim)``.
The layer decides, so this module maps each known layer type to its kernels
and their :func:`eoi_core.kernels.kernel_layout` kinds:

=================================  ==========================================  =================================
layer                              parameter                                   layout, blocks
=================================  ==========================================  =================================
``Dense``                          ``kernel``                                  dense
``EinsumDense``                    ``kernel``                                  einsum (input axes x output axes)
``MultiHeadAttention`` q/k/v/gate  ``kernel`` of each ``EinsumDense``          einsum, one block per head
``MultiHeadAttention`` output      ``kernel`` of ``attention_output``          einsum, one block
``Conv1D/2D/3D``                   ``kernel``                                  conv, ``groups``
``Conv1D/2D/3DTranspose``          ``kernel``                                  conv_transpose
``DepthwiseConv1D/2D``             ``kernel``                                  depthwise, one block per channel
``SeparableConv1D/2D``             ``depthwise_kernel``, ``pointwise_kernel``  depthwise; conv
``SimpleRNNCell``                  ``kernel``, ``recurrent_kernel``            dense
``LSTMCell`` / ``GRUCell``         ``kernel``, ``recurrent_kernel``            gates (4 / 3 blocks)
``ConvLSTM1D/2D/3D`` cells         ``kernel``, ``recurrent_kernel``            conv, 4 gate blocks
=================================  ==========================================  =================================

Every other float weight of rank >= 2 (embeddings, LoRA factors, layers of
unknown type) has no layout EOI can know; ``sparsify`` lists it as skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import keras

from eoi_core.kernels import KernelLayout, kernel_layout

__all__ = ["KernelSpec", "layer_specs", "spec_for_shape", "building_layer", "einsum_axes", "in_stateless_scope"]

_L = keras.layers
try:  # ConvLSTM*D's cell has no public name; its kernels are conv kernels with 4 gate blocks.
    from keras.src.layers.rnn.conv_lstm import ConvLSTMCell
except ImportError:  # pragma: no cover - another Keras layout of its sources
    ConvLSTMCell = ()
# Only the attention projections whose output axes are (heads, head_dim).
_PER_HEAD = ("query", "key", "value", "gate")


@dataclass(frozen=True)
class KernelSpec:
    """How one parameter of a layer is read.

    Attributes
    ----------
    parameter : str
        The variable's name in the layer (``"kernel"``, ``"recurrent_kernel"``...).
    constraint : str
        The layer attribute that holds the parameter's constraint (what its config saves).
    layout : str or None
        A :data:`eoi_core.kernels.KERNEL_LAYOUTS` kind, or ``None`` when the
        parameter cannot be initialised (then ``note`` says why).
    groups, gates, in_axes : int
        Passed to :func:`eoi_core.kernels.kernel_layout`.
    note : str
        Why the parameter is skipped, or how it is split into blocks.
    """

    parameter: str
    constraint: str
    layout: str | None
    groups: int = 1
    gates: int | None = None
    in_axes: int = 1
    note: str = ""

    def kernel_layout(self, shape: Sequence[int]) -> KernelLayout:
        """The :class:`~eoi_core.kernels.KernelLayout` of a kernel of ``shape``."""
        return kernel_layout(shape, self.layout, groups=self.groups, gates=self.gates, in_axes=self.in_axes)


def einsum_axes(equation: str) -> tuple[int | None, str]:
    """The number of leading input axes of an ``EinsumDense`` kernel, or ``(None, why not)``.

    The kernel's axes are read from the equation ``"input,kernel->output"``:
    an axis summed over (in the input, not the output) is an input axis, one
    that reaches the output (and is not in the input) is an output axis.  The
    einsum layout needs the input axes first and at least one of each.

    Examples
    --------
    >>> einsum_axes("abc,cde->abde")  # MultiHeadAttention query: (in, heads, head_dim)
    (1, '')
    >>> einsum_axes("abcd,cde->abe")  # its output projection: (heads, head_dim, out)
    (2, '')
    >>> einsum_axes("abc,cd->abd")[0], einsum_axes("ab,cb->ac")[0]
    (1, None)
    """
    match = re.fullmatch(r"\s*([\w.]*)\s*,\s*([\w.]*)\s*->\s*([\w.]*)\s*", equation)
    if match is None:
        return None, f"equation {equation!r} is not of the form 'input,kernel->output'"
    inputs, kernel, output = (part.replace("...", "") for part in match.groups())
    kinds = ["in" if a in inputs and a not in output else "out" if a in output and a not in inputs else "other"
             for a in kernel]
    if "other" in kinds:
        return None, f"kernel axes of {equation!r} are shared by input and output (a batched einsum)"
    in_axes = kinds.count("in")
    if not 0 < in_axes < len(kinds) or kinds != ["in"] * in_axes + ["out"] * (len(kinds) - in_axes):
        return None, f"kernel axes of {equation!r} are not (input axes..., output axes...)"
    return in_axes, ""


def _einsum_spec(layer: Any, parent: Any) -> KernelSpec:
    in_axes, why = einsum_axes(layer.equation)
    if in_axes is None:
        return KernelSpec("kernel", "kernel_constraint", None, note=why)
    if isinstance(parent, _L.MultiHeadAttention) and layer.name in _PER_HEAD and in_axes == 1:
        heads = int(parent.num_heads)
        return KernelSpec("kernel", "kernel_constraint", "einsum", groups=heads, in_axes=1,
                          note=f"{heads} heads")
    return KernelSpec("kernel", "kernel_constraint", "einsum", in_axes=in_axes)


def layer_specs(layer: Any, parent: Any = None) -> dict[str, KernelSpec]:
    """``{parameter: KernelSpec}`` for a Keras layer (``{}`` for an unknown type).

    ``parent`` is the layer that owns ``layer`` (a ``MultiHeadAttention`` for
    its projections), or ``None``.
    """
    if isinstance(layer, _L.EinsumDense):
        return {"kernel": _einsum_spec(layer, parent)}
    if isinstance(layer, _L.Dense):
        return {"kernel": KernelSpec("kernel", "kernel_constraint", "dense")}
    if isinstance(layer, (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)):
        return {"kernel": KernelSpec("kernel", "kernel_constraint", "conv_transpose")}
    if isinstance(layer, (_L.DepthwiseConv1D, _L.DepthwiseConv2D)):
        # Keras names this variable "kernel" (SeparableConv's is "depthwise_kernel").
        return {"kernel": KernelSpec("kernel", "depthwise_constraint", "depthwise", note="one block per channel")}
    if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
        return {
            "depthwise_kernel": KernelSpec("depthwise_kernel", "depthwise_constraint", "depthwise",
                                           note="one block per channel"),
            "pointwise_kernel": KernelSpec("pointwise_kernel", "pointwise_constraint", "conv"),
        }
    if isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D)):
        groups = int(getattr(layer, "groups", 1) or 1)
        return {"kernel": KernelSpec("kernel", "kernel_constraint", "conv", groups=groups,
                                     note=f"{groups} groups" if groups > 1 else "")}
    gates = _gates(layer)
    if gates is not None:
        kind, count = gates
        note = f"{count} gates" if count > 1 else ""
        return {
            name: KernelSpec(name, constraint, kind, groups=count if kind == "conv" else 1,
                             gates=count if kind == "gates" else None, note=note)
            for name, constraint in (("kernel", "kernel_constraint"), ("recurrent_kernel", "recurrent_constraint"))
        }
    return {}


def _gates(layer: Any) -> tuple[str, int] | None:
    if isinstance(layer, _L.LSTMCell):
        return "gates", 4
    if isinstance(layer, _L.GRUCell):
        return "gates", 3
    if isinstance(layer, _L.SimpleRNNCell):
        return "dense", 1
    if isinstance(layer, ConvLSTMCell):
        return "conv", 4
    return None


def spec_for_shape(layer: Any, parent: Any, shape: Sequence[int]) -> KernelSpec | None:
    """The spec of the parameter of ``layer`` that a kernel of ``shape`` must be, or ``None``.

    All parameters of a layer share a layout except ``SeparableConv``'s:
    its depthwise kernel is ``(*kernel_size, channels, depth_multiplier)``.
    """
    specs = layer_specs(layer, parent)
    if not specs:
        return None
    if "pointwise_kernel" in specs:
        dims = tuple(shape)
        depthwise = dims[:-2] == tuple(layer.kernel_size) and dims[-1] == layer.depth_multiplier
        return specs["depthwise_kernel" if depthwise else "pointwise_kernel"]
    return next(iter(specs.values()))


def building_layer() -> tuple[Any, Any]:
    """The Keras layer whose weights are being created now, and its parent: ``(layer, parent)``.

    Keras builds every layer inside ``backend.name_scope(layer.name,
    caller=layer)``, so the innermost scope whose caller is a layer names the
    layer that called the initializer.  ``(None, None)`` outside a build.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a Keras without the name-scope stack
        return None, None
    stack = global_state.get_global_attribute("name_scope_stack") or []
    layers = [scope.caller for scope in stack if isinstance(getattr(scope, "caller", None), _L.Layer)]
    if not layers:
        return None, None
    return layers[-1], (layers[-2] if len(layers) > 1 else None)


def in_stateless_scope() -> bool:
    """Whether Keras runs in a ``StatelessScope`` (where variables get no values)."""
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope as stateless
    except ImportError:  # pragma: no cover - a Keras without stateless scopes
        return False
    return bool(stateless())
