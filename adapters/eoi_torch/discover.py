"""Every weight matrix of a model, and the layout :func:`sparsify` gives it.

:func:`find_weights` walks ``model.named_modules()`` and returns one
:class:`Target` per distinct parameter of rank >= 2 (a tied parameter is one
target, listing every module that holds it).  A target either has a layout
the core understands (its canonical ``(out, in // groups, *kernel)`` shape and
``groups``: the number of independent orthogonal blocks along ``out``) or a
reason to be left alone:

===========================================  ===============================  ===========================
layer                                        parameter                        blocks
===========================================  ===============================  ===========================
``nn.Linear``                                ``weight (out, in)``             1 (or ``blocks=``)
``nn.Conv1d/2d/3d``                          ``weight (out, in/g, *k)``       ``groups`` (centre taps)
``nn.ConvTranspose1d/2d/3d``                 ``weight (in, out/g, *k)``       ``groups``
``nn.MultiheadAttention``                    ``in_proj_weight (3E, E)``       3 (q, k, v)
                                             ``q/k/v_proj_weight``            1 each
``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``        ``weight_ih_l*``, ``weight_hh_l*``  1 / 3 / 4 (one per gate)
``transformers`` ``Conv1D``                  ``weight (in, out)``, transposed 1, or 3 for a fused ``c_attn``
===========================================  ===============================  ===========================

Skipped (listed in the report with the reason): embeddings (a lookup table,
not a linear map), frozen parameters (``requires_grad=False``), patchify
convolutions (``kernel_size == stride``: the delta-orthogonal embedding would
leave one of the ``k^d`` taps of each patch live, so the layer would see one
pixel per patch), and any other parameter of rank >= 2 whose layout is unknown
(never guessed into dead rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from eoi_core.selection import matches

__all__ = ["SUPPORTED_LAYERS", "Target", "find_weights", "FUSED_NAMES"]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.MultiheadAttention,
    nn.RNN,
    nn.GRU,
    nn.LSTM,
)
"""Layer types :func:`sparsify` initialises (plus ``transformers``' ``Conv1D``, matched by name)."""

# Fused Q/K/V projections, recognised by their attribute name when the parent's ``embed_dim``
# shows the split (GPT-2's c_attn); elsewhere (timm's qkv) the user says so with ``blocks=``.
FUSED_NAMES = frozenset({"c_attn", "qkv", "qkv_proj", "query_key_value", "Wqkv", "in_proj"})

_GATES = {"LSTM": (4, "i, f, g, o"), "GRU": (3, "r, z, n"), "RNN_TANH": (1, ""), "RNN_RELU": (1, "")}


@dataclass
class Target:
    """One distinct weight matrix: where it lives and the core layout it gets.

    ``holders`` lists every ``(module name, module, parameter name)`` holding
    this very ``Parameter`` (more than one when it is tied); the first is the
    one whose layout is used.  ``skip`` is the reason it is left dense, or
    ``""``.
    """

    name: str
    module: nn.Module
    parameter: str
    kind: str
    groups: int = 1
    transposed: bool = False
    note: str = ""
    skip: str = ""
    holders: list[tuple[str, nn.Module, str]] = field(default_factory=list)

    @property
    def tensor(self) -> torch.Tensor:
        if self.parameter in self.module._parameters:
            return self.module._parameters[self.parameter]
        return getattr(self.module, self.parameter)  # parametrized or pruned: the effective weight

    @property
    def key(self) -> str:
        """The name densities and the report use: the layer, plus the parameter unless it is ``weight``."""
        if self.parameter == "weight":
            return self.name
        return f"{self.name}.{self.parameter}" if self.name else self.parameter

    @property
    def shape(self) -> tuple[int, ...]:
        """The core's canonical shape (the torch shape, transposed for ``(in, out)`` storage)."""
        shape = tuple(self.tensor.shape)
        return (shape[1], shape[0]) + shape[2:] if self.transposed else shape

    @property
    def supported(self) -> bool:
        return not self.skip


def _is_hf_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D (GPT-2 family): weight (nx, nf), y = x @ W + b.
    return _kind(module) == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def _kind(module: nn.Module) -> str:
    # parametrize renames the class "Parametrized<Name>"; report the layer's own name.
    # fully_shard (FSDP2) renames it "FSDP<Name>" (bases FSDPModule and the layer's class).
    cls = type(module)
    for prefix in ("Parametrized", "FSDP", "Parametrized"):
        if cls.__name__.startswith(prefix):
            cls = next((base for base in cls.__bases__ if base.__name__ == cls.__name__[len(prefix):]), cls)
    return cls.__name__


def _fused_blocks(name: str, out: int, parent: nn.Module | None) -> int:
    last = name.rsplit(".", 1)[-1]
    if last not in FUSED_NAMES:
        return 1
    embed = getattr(parent, "embed_dim", None) if parent is not None else None
    # Only when the parent states its width: a guess would scale W^T W by the block count.
    if isinstance(embed, int) and embed > 0 and out % embed == 0 and out // embed in (2, 3):
        return out // embed
    return 1


def _blocks_option(key: str, blocks: Mapping[str, int]) -> int | None:
    for selector, count in blocks.items():
        if matches(key, selector):
            return count
    return None


def _layout(name: str, module: nn.Module, parameter: str, tensor: torch.Tensor, parent: nn.Module | None,
            patchify: str) -> tuple[int, bool, str, str]:
    """``(groups, transposed, note, skip reason)`` for one parameter."""
    kind = _kind(module)
    if isinstance(module, nn.modules.conv._ConvNd) and parameter == "weight":
        kernel, stride = tuple(module.kernel_size), tuple(module.stride)
        if kernel == stride and math.prod(kernel) > 1 and patchify != "sparsify":
            return 1, False, "", (
                f"patchify conv (kernel_size == stride == {kernel}): delta init keeps 1 tap per patch; "
                "patchify='sparsify' to force"
            )
        note = "patchify: 1 live tap per patch" if kernel == stride and math.prod(kernel) > 1 else ""
        return int(module.groups), False, note, ""
    if isinstance(module, nn.Linear) and parameter == "weight":
        groups = _fused_blocks(name, tensor.shape[0], parent)
        return groups, False, (f"{groups} blocks (fused projection)" if groups > 1 else ""), ""
    if _is_hf_conv1d(module) and parameter == "weight":
        groups = _fused_blocks(name, tensor.shape[1], parent)
        note = "stored (in, out)" + (f"; {groups} blocks (q, k, v)" if groups == 3 else
                                     f"; {groups} blocks (fused)" if groups > 1 else "")
        return groups, True, note, ""
    if isinstance(module, nn.MultiheadAttention):
        if parameter == "in_proj_weight":
            return 3, False, "3 blocks (q, k, v)", ""
        if parameter in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return 1, False, "", ""
    if isinstance(module, nn.RNNBase):
        if parameter.startswith(("weight_ih_l", "weight_hh_l")):
            gates, names = _GATES.get(module.mode, (1, ""))
            return gates, False, (f"{gates} gate blocks ({names})" if gates > 1 else ""), ""
        if parameter.startswith("weight_hr_l"):
            return 1, False, "projection", ""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return 1, False, "", "embedding table (a lookup, not a linear map)"
    return 1, False, "", f"no known weight layout for {kind}.{parameter}"


def find_weights(model: nn.Module, *, blocks: Mapping[str, int] | None = None,
                 patchify: str = "skip") -> list[Target]:
    """Every distinct parameter of rank >= 2 of ``model``, with its layout or the reason it is skipped.

    Parameters
    ----------
    model : nn.Module
    blocks : mapping of selector to int, optional
        Independent orthogonal blocks along ``out`` for weights whose fusion
        cannot be seen, e.g. ``{"*.qkv": 3}`` for timm's fused ``qkv`` Linear.
        Keys match the weight's key (see :attr:`Target.key`) like ``include``.
    patchify : {"skip", "sparsify"}
        What to do with convolutions whose ``kernel_size == stride``.

    Examples
    --------
    >>> from torch import nn
    >>> targets = find_weights(nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 8)))
    >>> [(t.key, t.groups, t.skip[:9]) for t in targets]
    [('0', 1, 'embedding'), ('1.weight_ih_l0', 4, ''), ('1.weight_hh_l0', 4, '')]
    """
    blocks = dict(blocks or {})
    modules = dict(model.named_modules(remove_duplicate=False))
    targets: list[Target] = []
    seen: dict[int, Target] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for parameter, tensor in module._parameters.items():
            if isinstance(tensor, nn.parameter.UninitializedParameter):
                raise ValueError(
                    f"layer {name!r} ({_kind(module)}) is lazy and has no {parameter} shape yet; "
                    "run one forward pass before sparsify"
                )
            if tensor is None or tensor.dim() < 2:
                continue
            parent = modules.get(name.rsplit(".", 1)[0] if "." in name else "") if name else None
            if isinstance(module, parametrize.ParametrizationList) or parameter.endswith("_orig"):
                continue  # the original of a parametrized or pruned weight: reported with its layer
            groups, transposed, note, skip = _layout(name, module, parameter, tensor, parent, patchify)
            if id(tensor) in seen:
                target = seen[id(tensor)]
                if (name, module, parameter) not in target.holders:
                    target.holders.append((name, module, parameter))
                if target.skip and not skip:
                    # A tie of an embedding with a head: the head's layout is the one EOI can use.
                    target.name, target.module, target.parameter, target.kind = name, module, parameter, _kind(module)
                    target.groups, target.transposed, target.note, target.skip = groups, transposed, note, skip
                continue
            target = Target(name, module, parameter, _kind(module), groups, transposed, note, skip,
                            holders=[(name, module, parameter)])
            chosen = _blocks_option(target.key, blocks) if not skip else None
            if chosen is not None:
                if target.shape[0] % chosen:
                    raise ValueError(
                        f"blocks gives {target.key!r} {chosen} blocks, which do not divide its out "
                        f"axis of {target.shape[0]} (canonical shape {target.shape})"
                    )
                target.groups, target.note = chosen, f"{chosen} blocks (blocks=)"
            if not skip and not tensor.requires_grad:
                target.skip = "frozen (requires_grad=False)"
            seen[id(tensor)] = target
            targets.append(target)
        targets.extend(_masked_elsewhere(name, module))
    return targets


def _masked_elsewhere(name: str, module: nn.Module) -> list[Target]:
    """Rows for weights another tool already parametrizes or prunes (never re-initialised)."""
    rows = []
    if parametrize.is_parametrized(module):
        for tensor_name, chain in module.parametrizations.items():
            kinds = ", ".join(type(p).__name__ for p in chain)
            rows.append(Target(name, module, tensor_name, _kind(module),
                               skip=f"already parametrized ({kinds})", holders=[]))
    for parameter in module._parameters:
        if parameter.endswith("_orig") and parameter[:-5] + "_mask" in module._buffers:
            rows.append(Target(name, module, parameter[:-5], _kind(module),
                               skip="pruned (torch.nn.utils.prune)", holders=[]))
    return rows
