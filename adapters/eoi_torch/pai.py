r"""Pruning-at-initialisation (PaI) scores as density sources: SNIP, GraSP and SynFlow.

Each scorer scores every entry of the selected weights, keeps the global
top-``k`` entries (``k = mask_count(density, total)``) and so defines a mask.
The returned :class:`PruningScores` is used two ways:

* as a **distribution** for :func:`eoi_torch.sparsify`: the per-layer
  densities of that mask, raised to each layer's orthogonal floor with the
  weighted mean kept exact (the same rules as ERK;
  :func:`eoi_core.distributions.from_counts`), so that EOI (or any scheme)
  is initialised at the PaI method's densities;
* as the method's own mask (the paper's **Base** variant):
  :func:`apply_base` keeps the model's dense default-init values on the
  method's mask (no floor: a PaI mask may disconnect a layer).

The scores, with :math:`L` the loss on a batch and :math:`w` a weight:

``snip`` (Lee et al. 2019)
    :math:`|g \odot w|`, :math:`g = \partial L / \partial w`; keeps the highest.
``grasp`` (Wang et al. 2020)
    :math:`S = -w \odot (H g)`, :math:`H` the Hessian of :math:`L`; GraSP
    removes the weights whose removal least hurts the gradient flow, i.e.
    keeps the *lowest* :math:`S`.
``synflow`` (Tanaka et al. 2020), data-free
    on a copy of the model with every parameter and buffer replaced by its
    absolute value, in float64 (in float32 the product overflows on deep
    networks) and in eval mode, :math:`R = \mathbf 1^\top f(\mathbf 1)` and
    the score :math:`|w \odot \partial R / \partial w|`; pruned iteratively,
    ``iterations`` rounds at the exponentially shrinking densities
    :math:`d^{t/T}`, masked weights zeroed between rounds.

Scores are computed on a deep copy of the model (the model itself is never
touched: no BatchNorm statistics are updated, no ``.grad`` is written), the
first time a mask is asked for, at the model's weights of that moment.
Layers are found by their qualified name (``model.get_submodule(name).weight``).

Examples
--------
>>> import torch, eoi_torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
>>> scores = eoi_torch.pai.synflow(model, torch.zeros(1, 16), iterations=10)
>>> report = eoi_torch.sparsify(model, 0.3, distribution=scores)     # EOI at SynFlow's densities
>>> abs(report.density - 0.3) < 1e-3
True
>>> base = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
>>> rows = eoi_torch.pai.apply_base(base, eoi_torch.pai.synflow(base, torch.zeros(1, 16)), 0.3)
>>> sum(row.mask_count for row in rows) == round(0.3 * (16 * 32 + 32 * 32 + 32 * 4))
True
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from eoi_core.checks import check_density, check_int
from eoi_core.distributions import from_counts, top_k_masks

from eoi_core.report import LayerReport, SparsifyReport

from .mask import EOIMask
from .select import select_layers

__all__ = ["PruningScores", "snip", "grasp", "synflow", "apply_base", "METHODS"]

METHODS = ("snip", "grasp", "synflow")

Batch = Sequence[Any]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight a layer name refers to: ``model.get_submodule(name).weight``."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the model has no layer named {name!r}") from None
    if parametrize.is_parametrized(module, "weight"):
        raise ValueError(
            f"layer {name!r} is already parametrized (sparsified?): score the model before sparsifying it"
        )
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"layer {name!r} ({type(module).__name__}) has no weight Parameter to score")
    return weight


def _check_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch must be a pair (inputs, targets), got {type(batch).__name__}")
    return batch[0], batch[1]


class PruningScores:
    """A PaI method's scores on a model: a ``sparsify`` distribution and the method's own masks.

    Build it with :func:`snip`, :func:`grasp` or :func:`synflow`.  Calling it
    as ``scores(shapes, density, names=..., groups=...)`` returns one density
    per named layer (what ``distribution=`` takes); :meth:`masks` returns the
    method's mask per layer.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str,
        masks: Callable[[nn.Module, list[str], float], list[np.ndarray]],
        scores: Callable[[nn.Module, list[str]], list[torch.Tensor]],
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.method = method
        self._masks = masks
        self._scores = scores
        self._cache: dict[tuple[tuple[str, ...], float], list[np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"eoi_torch.pai.{self.method}(<{type(self.model).__name__}>)"

    def scores(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The method's raw score of every entry of each named layer (one round, the current weights).

        SNIP: ``|g * w|``; GraSP: ``-w * (H g)`` (lowest kept); SynFlow: the
        first round's ``|w * dR/dw|`` (float64).  Not cached.
        """
        names = list(names)
        for name in names:
            _weight(self.model, name)
        return dict(zip(names, self._scores(self.model, names)))

    def masks(self, density: float, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The method's mask (bool, the weight's shape) of each named layer, at global ``density``.

        Exactly ``mask_count(density, total)`` entries are kept over all named layers together.
        """
        density = check_density(density)
        names = tuple(names)
        if not names:
            raise ValueError("names must name at least one layer")
        key = (names, density)
        if key not in self._cache:
            for name in names:
                _weight(self.model, name)  # a clear error for a bad name before any work
            self._cache[key] = self._masks(self.model, list(names), density)
        return dict(zip(names, self._cache[key]))

    def __call__(
        self,
        shapes: Sequence[Sequence[int]],
        density: float | None,
        *,
        names: Sequence[str] | None = None,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        if names is None:
            raise ValueError(f"the {self.method} distribution needs the layer names to find the layers")
        if density is None:
            raise ValueError(f"the {self.method} distribution needs a model-wide density, got None")
        masks = self.masks(density, names)
        for name, shape in zip(names, shapes):
            if masks[name].shape != tuple(shape):
                raise ValueError(
                    f"layer {name!r}: the {self.method} mask has shape {masks[name].shape}, "
                    f"but the layer's shape is {tuple(shape)}"
                )
        counts = [int(masks[name].sum()) for name in names]
        return from_counts(counts, shapes, density, groups=groups)


def _saliency(kind: str, batch: Batch, loss_fn: LossFn):
    inputs, targets = _check_batch(batch)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (outputs, targets) -> loss, got {loss_fn!r}")

    def scores(model: nn.Module, names: list[str]) -> list[torch.Tensor]:
        work = copy.deepcopy(model)
        weights = [_weight(work, name) for name in names]
        loss = loss_fn(work(inputs), targets)
        if kind == "snip":
            grads = torch.autograd.grad(loss, weights)
            return [(g * w).abs().detach() for g, w in zip(grads, weights)]
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        # Hessian-gradient product by double backprop: H g = d/dw (g_const . dL/dw).
        product = sum((g * g.detach()).sum() for g in grads)
        hessian_grads = torch.autograd.grad(product, weights)
        return [(-w * hg).detach() for w, hg in zip(weights, hessian_grads)]

    def masks(model: nn.Module, names: list[str], density: float) -> list[np.ndarray]:
        raw = [s.double().cpu().numpy() for s in scores(model, names)]
        if kind == "grasp":
            raw = [-s for s in raw]  # GraSP keeps the lowest S
        return top_k_masks(raw, density)

    return scores, masks


def snip(model: nn.Module, batch: Batch, loss_fn: LossFn) -> PruningScores:
    r"""SNIP: connection sensitivity :math:`|\partial L/\partial w \odot w|` on one batch.

    Parameters
    ----------
    model : nn.Module
        The model as initialised (dense, default init).
    batch : (inputs, targets)
        ``loss_fn(model(inputs), targets)`` is the loss.
    loss_fn : callable
        E.g. ``torch.nn.functional.cross_entropy``.
    """
    scores, masks = _saliency("snip", batch, loss_fn)
    return PruningScores(model, "snip", masks, scores)


def grasp(model: nn.Module, batch: Batch, loss_fn: LossFn) -> PruningScores:
    r"""GraSP: :math:`S = -w \odot (H g)` on one batch; the lowest scores are kept.

    Arguments as in :func:`snip`.  (The authors also divide the logits by a
    temperature of 200; fold that into ``loss_fn`` to reproduce it.)
    """
    scores, masks = _saliency("grasp", batch, loss_fn)
    return PruningScores(model, "grasp", masks, scores)


def _synflow_scores(work: nn.Module, weights: list[torch.Tensor], ones: torch.Tensor) -> list[torch.Tensor]:
    total = work(ones).sum()
    grads = torch.autograd.grad(total, weights)
    return [(g * w).abs().detach() for g, w in zip(grads, weights)]


def _linearised(model: nn.Module) -> nn.Module:
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in work.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    return work


def synflow(model: nn.Module, example_input: torch.Tensor, *, iterations: int = 100) -> PruningScores:
    r"""SynFlow: data-free, iterative synaptic-flow pruning.

    Parameters
    ----------
    model : nn.Module
        The model as initialised.
    example_input : torch.Tensor
        An input batch; only its shape past the batch axis and its device are
        used (the input of :math:`R` is all ones, one sample).
    iterations : int, optional
        Pruning rounds ``T`` (the paper's default, 100); round ``t`` keeps the
        top :math:`d^{t/T}` of all entries.
    """
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if example_input.dim() < 1:
        raise ValueError("example_input must have a batch axis")
    iterations = check_int(iterations, "iterations")
    shape = (1,) + tuple(example_input.shape[1:])

    def first_round(model: nn.Module, names: list[str]) -> list[torch.Tensor]:
        work = _linearised(model)
        weights = [_weight(work, name) for name in names]
        ones = torch.ones(shape, dtype=torch.float64, device=example_input.device)
        return _synflow_scores(work, weights, ones)

    def masks(model: nn.Module, names: list[str], density: float) -> list[np.ndarray]:
        work = _linearised(model)
        weights = [_weight(work, name) for name in names]
        originals = [w.detach().clone() for w in weights]
        ones = torch.ones(shape, dtype=torch.float64, device=example_input.device)
        current = [np.ones(tuple(w.shape), dtype=bool) for w in weights]
        for step in range(1, iterations + 1):
            with torch.no_grad():
                for weight, original, mask in zip(weights, originals, current):
                    weight.copy_(original * torch.from_numpy(mask).to(weight.device))
            scores = _synflow_scores(work, weights, ones)
            # Pruned entries score -inf so that a tie at zero can never bring one back.
            raw = [np.where(mask, s.cpu().numpy(), -np.inf) for s, mask in zip(scores, current)]
            current = top_k_masks(raw, density ** (step / iterations))
        return current

    return PruningScores(model, "synflow", masks, first_round)


def apply_base(
    model: nn.Module,
    scores: PruningScores,
    density: float,
    *,
    include: Any = None,
    exclude: Any = None,
) -> SparsifyReport:
    """The paper's *Base* variant: the PaI method's own mask on the model's dense default init.

    Selects layers as :func:`eoi_torch.sparsify` does, asks ``scores`` for its
    masks at the global ``density`` and registers each with
    ``torch.nn.utils.parametrize`` (:class:`eoi_torch.EOIMask`), so the values
    the model was built with are kept on the mask and stay zero off it through
    training.  No orthogonal floor applies (a PaI mask may even empty a layer).

    Returns
    -------
    SparsifyReport
        One row per layer; ``density`` is the mask's own density there and the
        orthogonality error is not computed (``None``).
    """
    if not isinstance(scores, PruningScores):
        raise TypeError(
            f"scores must come from eoi_torch.pai.snip/grasp/synflow, got {type(scores).__name__}"
        )
    if scores.model is not model:
        raise ValueError("scores were computed on a different model than the one given")
    layers = select_layers(model, include, exclude)
    masks = scores.masks(density, [layer.name for layer in layers])
    rows = []
    for layer in layers:
        mask = masks[layer.name]
        weight = layer.module.weight
        parametrize.register_parametrization(
            layer.module, "weight", EOIMask(torch.from_numpy(mask).to(weight.device))
        )
        count = int(mask.sum())
        rows.append(
            LayerReport(
                name=layer.name,
                kind=layer.kind,
                shape=layer.shape,
                groups=layer.groups,
                dtype=str(weight.dtype),
                density=count / mask.size,
                mask_count=count,
                size=mask.size,
                gain=None,
                orthogonality_error=None,
                reason=f"{scores.method} mask on the default init",
            )
        )
    return SparsifyReport(rows)
