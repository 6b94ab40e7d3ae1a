r"""Per-layer densities for a whole model.

Given the canonical shapes of a model's weights and a target density ``d``,
each function returns one density per layer such that the parameter-weighted
mean equals ``d`` (to within one parameter):

.. math:: \sum_l d_l\, n_l = d \sum_l n_l, \qquad d_l = \mathrm{clip}(\varepsilon\, r_l,\ f_l,\ 1),

with ``n_l`` the layer size, ``f_l`` its orthogonal floor
(:func:`eoi_core.min_density`: ``min(out, in) / size`` for a dense layer, the
centre's floor for a kernel) and ``r_l`` the raw score of the distribution:

* ``uniform``: ``r_l = 1``;
* ``erdos_renyi`` (Mocanu et al. 2018): ``r_l = (out + in) / (out * in)``;
* ``erk`` (Evci et al. 2020, RigL): ``r_l = (out + in + sum(kernel)) / (out * in * prod(kernel))``.

Capping at 1 and raising to the floor both move parameters; the single scale
``epsilon`` (found by bisection; the sum is monotone in it) redistributes them
over the layers that are neither capped nor floored, which is RigL's iterative
ERK rule with floors added.  A target below the model's floor is an error
that names the smallest feasible density.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .checks import check_density, check_fraction, check_mapping_density
from .layout import parse_layout

__all__ = ["uniform", "erdos_renyi", "erk", "layer_densities", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("uniform", "er", "erdos_renyi", "erk")


def _layouts(shapes: Sequence[Sequence[int]], groups: Sequence[int] | None):
    shapes = list(shapes)
    if not shapes:
        raise ValueError("shapes must name at least one layer")
    if groups is None:
        groups = [1] * len(shapes)
    groups = list(groups)
    if len(groups) != len(shapes):
        raise ValueError(f"groups has {len(groups)} entries but shapes has {len(shapes)}")
    return [parse_layout(shape, g) for shape, g in zip(shapes, groups)]


def _solve(raw: np.ndarray, sizes: np.ndarray, floors: np.ndarray, density: float) -> list[float]:
    target = density * sizes.sum()
    smallest = float((floors * sizes).sum() / sizes.sum())
    if (floors * sizes).sum() > target + 0.5:
        raise ValueError(
            f"density={density!r} is infeasible for this model: its orthogonal floors need "
            f"at least density {smallest:.6g}"
        )

    def total(scale: float) -> float:
        return float((np.clip(scale * raw, floors, 1.0) * sizes).sum())

    low, high = 0.0, float(1.0 / raw.min())  # at `high` every layer is dense
    for _ in range(200):
        middle = 0.5 * (low + high)
        if total(middle) < target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-17 * high:
            break
    # Bisection only finds which layers are capped or floored; the scale of the
    # free ones is then solved in closed form, normalised by the model size so
    # that a uniform target comes back as exactly `density`.
    scaled = high * raw
    free = (scaled > floors) & (scaled < 1.0)
    if not free.any():
        return np.clip(scaled, floors, 1.0).tolist()
    clipped = np.where(scaled >= 1.0, 1.0, floors)
    total_size = sizes.sum()
    remaining = density - float((clipped * sizes)[~free].sum() / total_size)
    scale = remaining / float((raw * sizes)[free].sum() / total_size)
    return np.where(free, np.clip(scale * raw, floors, 1.0), clipped).tolist()


def _distribute(shapes, density, groups, score) -> list[float]:
    density = check_density(density)
    layouts = _layouts(shapes, groups)
    sizes = np.array([layout.size for layout in layouts], dtype=np.float64)
    floors = np.array([layout.floor / layout.block_size for layout in layouts])
    raw = np.array([score(layout.shape) for layout in layouts], dtype=np.float64)
    return _solve(raw, sizes, floors, density)


def uniform(shapes: Sequence[Sequence[int]], density: float, *, groups: Sequence[int] | None = None) -> list[float]:
    """The same density for every layer, except where a floor forces more (then less elsewhere).

    Examples
    --------
    >>> uniform([(64, 32), (10, 64)], 0.5)
    [0.5, 0.5]
    """
    return _distribute(shapes, density, groups, lambda shape: 1.0)


def erdos_renyi(shapes: Sequence[Sequence[int]], density: float, *, groups: Sequence[int] | None = None) -> list[float]:
    """Erdos-Renyi: density proportional to ``(out + in) / (out * in)`` (kernel ignored)."""
    return _distribute(shapes, density, groups, lambda shape: (shape[0] + shape[1]) / (shape[0] * shape[1]))


def erk(shapes: Sequence[Sequence[int]], density: float, *, groups: Sequence[int] | None = None) -> list[float]:
    """Erdos-Renyi-Kernel (RigL): density proportional to ``sum(shape) / prod(shape)``.

    Examples
    --------
    >>> densities = erk([(256, 784), (256, 256), (10, 256)], 0.1)
    >>> sizes = [256 * 784, 256 * 256, 10 * 256]
    >>> abs(sum(d * n for d, n in zip(densities, sizes)) - 0.1 * sum(sizes)) < 1
    True
    """
    return _distribute(shapes, density, groups, lambda shape: sum(shape) / math.prod(shape))


_BY_NAME = {"uniform": uniform, "er": erdos_renyi, "erdos_renyi": erdos_renyi, "erk": erk}


def layer_densities(
    distribution: str | Mapping[str, float] | Callable[..., Sequence[float]],
    shapes: Sequence[Sequence[int]],
    density: float | None,
    *,
    names: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
) -> list[float]:
    """Resolve a distribution argument the way every adapter's ``sparsify`` takes it.

    One rule for all adapters:

    * a name in :data:`DISTRIBUTIONS` spreads the model-wide ``density``;
    * a mapping from layer name (``names[l]``) to density must cover every
      layer, and ``density`` must then be ``None`` (the mapping gives every
      layer's density; a model-wide density beside it would be ignored);
    * a callable ``distribution(shapes, density, names=..., groups=...)``
      returns one density per layer (e.g. the densities of a pruning-at-init
      mask); each is checked to lie in ``(0, 1]``.

    Examples
    --------
    >>> layer_densities("uniform", [(64, 32), (10, 64)], 0.5)
    [0.5, 0.5]
    >>> layer_densities({"a": 0.3, "b": 0.5}, [(64, 32), (10, 64)], None, names=["a", "b"])
    [0.3, 0.5]
    """
    check_mapping_density(distribution, density)
    if isinstance(distribution, Mapping):
        if names is None:
            raise ValueError("a distribution given as a mapping needs the layer names")
        missing = [name for name in names if name not in distribution]
        if missing:
            raise ValueError(f"distribution mapping has no density for layers {missing}")
        unknown = sorted(set(distribution) - set(names))
        if unknown:
            raise ValueError(f"distribution mapping names layers that are not selected: {unknown}")
        return [check_fraction(distribution[name], f"distribution[{name!r}]") for name in names]
    if callable(distribution) and not isinstance(distribution, str):
        values = list(distribution(list(shapes), density, names=names, groups=groups))
        if len(values) != len(shapes):
            raise ValueError(
                f"distribution {distribution!r} returned {len(values)} densities for {len(shapes)} layers"
            )
        labels = list(names) if names is not None else [str(i) for i in range(len(values))]
        return [check_fraction(v, f"the density {distribution!r} gave layer {n!r}") for v, n in zip(values, labels)]
    if not isinstance(distribution, str) or distribution not in _BY_NAME:
        raise ValueError(
            f"distribution must be one of {DISTRIBUTIONS}, a mapping of layer name to density or a "
            f"callable (shapes, density, names=, groups=) -> densities, got {distribution!r}"
        )
    try:
        return _BY_NAME[distribution](shapes, density, groups=groups)
    except ValueError as error:
        if names is None or "infeasible for this model" not in str(error):
            raise
        # Name the layer that limits the model: the one with the highest orthogonal floor.
        layouts = _layouts(shapes, groups)
        floors = [layout.floor / layout.block_size for layout in layouts]
        tightest = int(np.argmax(floors))
        raise ValueError(
            f"{error}; the limiting layer is {names[tightest]!r} (shape {layouts[tightest].shape}, "
            f"groups={layouts[tightest].groups}), whose floor is density {floors[tightest]:.6g}"
        ) from None


# --- Densities of pruning-at-init masks (SNIP, GraSP, SynFlow, ...) -------------------------------


def from_counts(
    counts: Sequence[int],
    shapes: Sequence[Sequence[int]],
    density: float,
    *,
    groups: Sequence[int] | None = None,
) -> list[float]:
    r"""Per-layer densities from the kept entries of a model-wide mask, with ERK's rules.

    ``counts[l]`` entries of layer ``l`` were kept (e.g. by a pruning-at-init
    method at the global ``density``); its raw density ``counts[l] / n_l`` is
    the score ``r_l`` of the module docstring, so the result is
    ``clip(epsilon * r_l, f_l, 1)`` with the weighted mean exactly
    ``density``: when no layer is below its orthogonal floor this is the
    mask's own density per layer (``epsilon = 1`` up to rounding); layers the
    method pruned below their floor (or entirely: layer collapse) are raised to
    it and the others scaled down to pay for it.

    Examples
    --------
    >>> from_counts([300, 150], [(20, 20), (20, 30)], 0.45)
    [0.75, 0.25]
    """
    density = check_density(density)
    layouts = _layouts(shapes, groups)
    counts = np.asarray(list(counts), dtype=np.float64)
    if counts.shape != (len(layouts),):
        raise ValueError(f"counts has {counts.size} entries but shapes has {len(layouts)}")
    sizes = np.array([layout.size for layout in layouts], dtype=np.float64)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts > sizes):
        raise ValueError(f"counts must lie between 0 and each layer's size {sizes.astype(int).tolist()}, "
                         f"got {counts.tolist()}")
    floors = np.array([layout.floor / layout.block_size for layout in layouts])
    # A collapsed layer (count 0) still needs a positive score for the scale search; any
    # score this small ends on the floor.
    raw = np.maximum(counts / sizes, 1e-12)
    return _solve(raw, sizes, floors, density)


def from_scores(
    scores: Sequence[np.ndarray],
    shapes: Sequence[Sequence[int]],
    density: float,
    *,
    groups: Sequence[int] | None = None,
) -> list[float]:
    r"""Per-layer densities of the global top-``k`` mask of ``scores``, with ERK's rules.

    Keeps the ``k = mask_count(density, sum_l n_l)`` highest scores over all
    layers together (ties broken by layer order, then position: deterministic),
    counts what each layer kept and hands the counts to :func:`from_counts`.
    ``scores[l]`` has layer ``l``'s shape; NaN scores are an error.  This is
    how a saliency such as SNIP's ``|g * w|`` becomes a distribution.

    Examples
    --------
    >>> scores = [np.arange(400.0).reshape(20, 20), np.full((20, 40), 1000.0)]
    >>> top_k_counts(scores, 0.5)  # the 600 top scores are all in layer 2: layer 1 collapses
    [0, 600]
    >>> from_scores(scores, [(20, 20), (20, 40)], 0.5)  # layer 1 raised to its floor, paid by layer 2
    [0.05, 0.725]
    """
    scores = [np.asarray(score, dtype=np.float64) for score in scores]
    if len(scores) != len(list(shapes)):
        raise ValueError(f"scores has {len(scores)} entries but shapes has {len(list(shapes))}")
    for index, (score, shape) in enumerate(zip(scores, shapes)):
        if score.shape != tuple(shape):
            raise ValueError(f"scores[{index}] has shape {score.shape}, but the layer's shape is {tuple(shape)}")
        if np.isnan(score).any():
            raise ValueError(f"scores[{index}] contains NaN")
    return from_counts(top_k_counts(scores, density), shapes, density, groups=groups)


def top_k_masks(scores: Sequence[np.ndarray], density: float) -> list[np.ndarray]:
    """Boolean masks of the global top ``mask_count(density, total)`` scores (stable ties).

    Examples
    --------
    >>> [m.tolist() for m in top_k_masks([np.array([[3.0, 1.0]]), np.array([[2.0, 0.0]])], 0.5)]
    [[[True, False]], [[True, False]]]
    """
    from .layout import mask_count

    density = check_density(density)
    flat = np.concatenate([np.asarray(score, dtype=np.float64).reshape(-1) for score in scores])
    keep = mask_count(density, flat.size)
    order = np.argsort(-flat, kind="stable")[:keep]
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[order] = True
    masks, start = [], 0
    for score in scores:
        size = np.asarray(score).size
        masks.append(chosen[start: start + size].reshape(np.shape(score)))
        start += size
    return masks


def top_k_counts(scores: Sequence[np.ndarray], density: float) -> list[int]:
    """How many of each layer's entries the global top-``k`` mask of ``scores`` keeps."""
    return [int(mask.sum()) for mask in top_k_masks(scores, density)]


__all__ += ["from_counts", "from_scores", "top_k_masks", "top_k_counts"]
