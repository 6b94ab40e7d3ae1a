"""``sparsify``: EOI for every weight matrix of a model, masks kept in training."""

from __future__ import annotations

import importlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

import numpy as np
import torch
from torch import nn

import eoi_core
from eoi_core.checks import check_gain, check_int, kernel_center_density
from eoi_core.distributions import layer_densities
from eoi_core.report import LayerReport, SparsifyReport
from eoi_core.selection import select

from .discover import SUPPORTED_LAYERS, Target, find_weights
from .distributed import as_dtensor, build_local, fsdp_params, global_sum, is_dtensor, local_bounds
from .distributed import probe_error as distributed_probe
from .init import _CORE_DTYPES, check_generator, check_tensor, copy_into, draw_seed, generate
from .mask import MODES, _eoi_masks, arm_from, attach
from .verify import check_verify, exact_error, probe_error

__all__ = ["sparsify", "TIED"]

Selector = Union[type, str, Callable[[str], bool], Iterable[Union[type, str, Callable[[str], bool]]], None]
TIED = ("skip", "sparsify", "error")
_PATCHIFY = ("skip", "sparsify")


def _choice(value: Any, allowed: tuple, name: str) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _check_types(selector: Any, argument: str) -> None:
    items = [selector] if isinstance(selector, (str, type)) or callable(selector) else (selector or [])
    try:
        items = list(items)
    except TypeError:
        return  # select() gives the message
    for item in items:
        if isinstance(item, type) and not issubclass(item, nn.Module):
            raise TypeError(f"{argument} types must be nn.Module subclasses, got {item!r}")


def _resolve_scheme(scheme: Any) -> Callable | None:
    """``None`` for the built-in EOI path, else the scheme's ``(shape, density, ...) -> (weight, mask)``."""
    if isinstance(scheme, str) and scheme == "eoi":
        return None
    try:
        schemes = importlib.import_module("eoi_core.schemes")
    except ModuleNotFoundError:
        schemes = None
    if schemes is not None:
        return schemes.get(scheme)
    if callable(scheme):
        return scheme
    raise ValueError(f"scheme must be 'eoi' or a callable (shape, density, *, gain, dtype, rng, groups, "
                     f"center_density) -> (weight, mask), got {scheme!r}")


def _skipped(target: Target, reason: str) -> LayerReport:
    return LayerReport.skipped(target.name, target.kind, tuple(target.tensor.shape),
                               str(target.tensor.dtype).removeprefix("torch."), reason, target.parameter)


def _tie_names(target: Target) -> list[str]:
    """The other holders of a tied parameter, as ``layer.parameter``."""
    return [f"{name}.{parameter}" if name else parameter for name, module, parameter in target.holders
            if not (module is target.module and parameter == target.parameter)]


def _check_unmasked(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if _eoi_masks(module):
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) already has an EOI mask; sparsify a freshly "
                "built model (eoi_torch.make_permanent removes EOI masks)"
            )


def _write(target: Target, values: np.ndarray, mask: np.ndarray, build: Callable | None) -> torch.Tensor:
    """Copy canonical ``values`` into the parameter (its own layout and device); return its mask.

    For a DTensor parameter ``values`` and ``mask`` are this rank's block: they go
    into its local tensor and the mask comes back as a DTensor laid out like the weight.
    """
    tensor = target.tensor
    if target.transposed:
        values, mask = values.T, mask.T
    if is_dtensor(tensor):
        with torch.no_grad():
            local = tensor.to_local()
            if build is None:
                copy_into(local, values)
            else:
                local.copy_(torch.from_numpy(np.ascontiguousarray(values)))
        return as_dtensor(torch.from_numpy(np.ascontiguousarray(mask)), tensor)
    if build is None:
        copy_into(tensor, values)
    else:  # another scheme's float64 values: cast once, by torch
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(values)))
    return torch.from_numpy(np.ascontiguousarray(mask)).to(tensor.device)


def _error(target: Target, gain: float, verify: Any) -> float | None:
    if verify != "exact":
        return None
    weight = target.tensor.detach()
    if is_dtensor(weight):  # the Gram matrices need the whole weight: gathered on every rank (opt-in cost)
        weight = weight.full_tensor()
    return exact_error(weight.T if target.transposed else weight, gain, target.groups)


def _pipeline(make: Callable, write: Callable, jobs: list, workers: int, costs: list[int],
              budget: int) -> Iterator:
    """``write(job, make(job))`` for each job in order, ``make`` running ahead in ``workers`` threads.

    A job is started early only while the bytes of the jobs in flight (``costs``: a layer's
    weight and mask) stay within ``budget``, so memory stays near one large layer's working set
    (large layers then go one at a time, each using the core's own threads) while small
    layers overlap.
    """
    if workers == 1:
        for job in jobs:
            yield write(job, make(job))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        inflight, started = 0, 0
        while started < len(jobs) or pending:
            while started < len(jobs) and len(pending) < workers and (
                    not pending or inflight + costs[started] <= budget):
                pending.append((jobs[started], costs[started], pool.submit(make, jobs[started])))
                inflight += costs[started]
                started += 1
            job, cost, future = pending.popleft()
            yield write(job, future.result())
            inflight -= cost


def sparsify(
    model: nn.Module,
    density: float | None,
    *,
    distribution: str | Mapping[str, float] | Callable = "erk",
    gain: float | Callable[[nn.Module], float] = 1.0,
    center_density: float | str | None = None,
    include: Selector = None,
    exclude: Selector = None,
    generator: torch.Generator | None = None,
    scheme: str | Callable = "eoi",
    mode: str = "parametrize",
    tied: str = "skip",
    blocks: Mapping[str, int] | None = None,
    patchify: str = "skip",
    verify: str | None = "probe",
    workers: int | None = None,
) -> SparsifyReport:
    r"""Initialise every weight matrix of a model with EOI and keep it sparse through training.

    The weights found (see :mod:`eoi_torch.discover`): ``nn.Linear``,
    ``nn.Conv*d`` and ``nn.ConvTranspose*d`` ``weight``; ``nn.MultiheadAttention``
    ``in_proj_weight`` as three orthogonal blocks (q, k, v) or its separate
    ``q/k/v_proj_weight`` (and its ``out_proj`` Linear); ``nn.RNN/GRU/LSTM``
    ``weight_ih_l*`` and ``weight_hh_l*`` with one exact EOI per gate block
    (a ``(4H, in)`` LSTM matrix is four ``(H, in)`` orthogonal blocks); and
    ``transformers``' ``Conv1D`` (stored ``(in, out)``, fused ``c_attn`` as
    q, k, v blocks).  Each is filled with :func:`eoi_core.sparse_orthogonal`
    at its own density and its mask is kept in training (``mode``).  Biases
    are untouched.  Every other parameter of rank >= 2 (embeddings, frozen
    and patchify layers, unknown layouts) is listed in the report as skipped,
    with the reason.

    ``ConvTranspose`` weights ``(in, out // groups, *kernel)`` are given to the
    core as they are, so each group's centre block ``H`` is ``(in/g, out/g)``
    and the layer computes ``y = H^T x`` per position (norm-preserving when
    ``in <= out``).

    Cost: the sum of the core calls (layers are generated by up to
    ``workers`` threads; the Numba kernels release the GIL, each layer's seed
    is drawn from torch's RNG in layer order first, so the result is
    bit-identical to one worker), a copy into each parameter and the
    ``verify`` probe.  Memory: the model, its masks, and generated layers in
    flight bounded by 1.5x the largest weight's bytes (large layers go one at
    a time, using the core's own threads; small ones overlap).  Everything is
    validated before anything is written, so on an error the model is untouched.

    Parameters
    ----------
    model : nn.Module
        Built with real storage: a model built on the ``meta`` device must be
        materialised first (``model.to_empty(device=...)``, then sparsify).
        Parameters may be ``DTensor`` s (after FSDP2's ``fully_shard``, or
        tensor parallel ``Shard`` / ``Replicate`` placements): each rank then
        builds only its own shards, bit-identical to the single-process model
        from the same seed, the masks are ``DTensor`` s laid out like their
        weights, and every rank must call ``sparsify`` (the report's counts and
        probes are all-reduced; see :mod:`eoi_torch.distributed`).  So the
        large-model flow is: build on ``meta``, ``fully_shard``, ``to_empty``,
        ``sparsify``.  Sparsifying first and calling ``fully_shard`` after
        works too (then every rank holds whole masks).
    density : float in (0, 1] or None
        Target density over all selected weights (their parameter-weighted
        mean density, to within one entry per layer).  ``None`` when
        ``distribution`` is a mapping.
    distribution : {"erk", "er", "erdos_renyi", "uniform"}, mapping or callable
        How the density is spread over weights (:func:`eoi_core.distributions.layer_densities`;
        no weight goes below its orthogonal floor); a mapping is keyed by the
        layer's qualified name, followed by ``.<parameter>`` for parameters
        other than ``weight``, as the report's table prints it (``"encoder.0.linear1"``,
        ``"encoder.0.self_attn.in_proj_weight"``, ``"lstm.weight_hh_l0"``).
    gain : float or callable, optional
        A positive number, or ``gain(module) -> float`` per layer.
    center_density : None, float or "sqrt", optional
        Centre-tap density of convolution kernels (rank >= 3) only
        (:func:`eoi_core.checks.kernel_center_density`); dense weights ignore it.
    include, exclude : selector or iterable of selectors, optional
        Layer types (``isinstance``), qualified names (that module and
        everything inside it), glob patterns or predicates on the name
        (:mod:`eoi_core.selection`).  A string that matches no module is a
        ``ValueError``.  Weights not selected are listed as skipped.
    generator : torch.Generator, optional
        Source of the per-weight seeds; ``None`` uses torch's default CPU
        generator, so ``torch.manual_seed`` makes the model reproducible.
    scheme : str or callable, optional
        ``"eoi"`` (default) or another scheme of :mod:`eoi_core.schemes`
        (``"sao"``, ``"ai"``, ``"kaiming"``, ``"kaiming_fanin"``) or a callable
        with the core's signature.  Only ``"eoi"`` promises orthogonality: for
        other schemes the report's orthogonality column is ``None``.
    mode : {"parametrize", "hook"}, optional
        How masks are kept (:mod:`eoi_torch.mask`): ``"parametrize"``
        (``weight = original * mask`` on every access) or ``"hook"`` (the
        gradient is masked; no forward overhead).
    tied : {"skip", "sparsify", "error"}, optional
        A parameter held by several modules (an embedding tied to the output
        head): leave it dense and report ``"tied with ..."`` (default),
        initialise it once with one mask that every holder sees, or raise.
        A tie is never broken.
    blocks : mapping of selector to int, optional
        Orthogonal blocks along ``out`` for fused weights whose split cannot
        be seen, e.g. ``{"*.qkv": 3}`` for timm's fused ``qkv`` Linear.
    patchify : {"skip", "sparsify"}, optional
        Convolutions with ``kernel_size == stride`` (ViT/ConvNeXt stems) are
        skipped by default: the delta embedding would leave one pixel of each
        patch live.
    verify : {"probe", "exact", None}, optional
        The report's orthogonality column (:mod:`eoi_torch.verify`):
        ``"probe"`` (default, ``O(size)``), ``"exact"`` (Gram matrices, O(n^3)) or none.
        For a ``DTensor`` weight the probe is all-reduced (two probe-sized
        all-reduces per weight, no rank holds the whole weight); ``"exact"``
        gathers the whole weight on every rank.
    workers : int, optional
        Threads generating layers concurrently.  Default: the cores the core's
        engine leaves free, ``max(1, min(4, os.cpu_count()) //
        eoi_core.get_num_threads())``: the engine already splits each layer
        over its threads, and layers on top of that only contend for the same
        cores (``eoi bench model-init`` measured 2 workers slower than 1 on 2 cores).

    Returns
    -------
    eoi_core.report.SparsifyReport
        One row per weight matrix of the model: sparsified (density, mask
        count, gain, orthogonality error, a note on blocks) or skipped (why).

    Raises
    ------
    TypeError, ValueError
        For a bad argument, an unknown distribution or scheme, an infeasible
        density, a bad gain, an unsupported dtype, a meta or inference tensor,
        an already sparsified model, a tie with ``tied="error"`` (each naming
        the layer), or a call under ``torch.inference_mode()``.

    Examples
    --------
    >>> import torch, eoi_torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10))
    >>> report = eoi_torch.sparsify(model, 0.1)
    >>> [layer.kind for layer in report], f"{report.density:.3f}"
    (['Conv2d', 'Linear'], '0.100')
    >>> bool((model[3].weight[~eoi_torch.masks(model)["3"]] == 0).all())
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "sparsify cannot run under torch.inference_mode(): its masks would be inference tensors "
            "that training cannot use; call it outside the inference_mode block"
        )
    check_generator(generator)
    _choice(mode, MODES, "mode")
    _choice(tied, TIED, "tied")
    _choice(patchify, _PATCHIFY, "patchify")
    check_verify(verify)
    if workers is None:
        workers = max(1, min(4, os.cpu_count() or 1) // eoi_core.get_num_threads())
    else:
        workers = check_int(workers, "workers")
    if blocks is not None and not isinstance(blocks, Mapping):
        raise TypeError(f"blocks must be None or a mapping of selector to int, got {blocks!r}")
    for key, count in (blocks or {}).items():
        check_int(count, f"blocks[{key!r}]")
    _check_types(include, "include")
    _check_types(exclude, "exclude")
    build = _resolve_scheme(scheme)
    _check_unmasked(model)

    targets = find_weights(model, blocks=blocks, patchify=patchify)
    candidates = [t for t in targets if t.supported]
    chosen = set(select(
        [t.name for t in candidates], include, exclude,
        candidates=[name for name, _ in model.named_modules()],
        objects=[t.module for t in candidates],
        other=(type,), other_doc="a layer type",
        match_other=lambda selector, module: isinstance(module, selector),
    ))
    selected: list[Target] = []
    reasons: dict[int, str] = {}
    for index, target in enumerate(candidates):
        if index not in chosen:
            reasons[id(target)] = "not selected (include/exclude)"
            continue
        if len(target.holders) > 1:
            others = ", ".join(repr(name) for name in _tie_names(target))
            if tied == "error":
                raise ValueError(
                    f"{target.key!r} ({target.kind}) shares its {target.parameter} with {others}; "
                    "pass tied='skip' to leave it dense or tied='sparsify' to give it one mask"
                )
            if tied == "skip":
                reasons[id(target)] = f"tied with {others} (tied='sparsify' gives it one shared mask)"
                continue
            target.note = "; ".join(filter(None, [target.note, f"shared with {others}"]))
        check_tensor(target.tensor, f"the {target.parameter} of layer {target.key!r} ({target.kind})")
        selected.append(target)
    if not selected:
        supported = ", ".join(layer.__name__ for layer in SUPPORTED_LAYERS)
        raise ValueError(f"no layer to sparsify: include/exclude (or ties, frozen and skipped weights) leave "
                         f"no supported layer; sparsify supports: {supported} and transformers' Conv1D")

    keys = [t.key for t in selected]
    densities = layer_densities(distribution, [t.shape for t in selected], density, names=keys,
                                groups=[t.groups for t in selected])
    gains = []
    for target in selected:
        value = gain(target.module) if callable(gain) else gain
        try:
            gains.append(check_gain(value))
        except (TypeError, ValueError) as error:
            if not callable(gain):
                raise
            raise type(error)(f"gain returned for layer {target.key!r} ({target.kind}): {error}") from error
    centres = [kernel_center_density(t.shape, center_density) for t in selected]
    for target, layer_density, layer_gain, centre in zip(selected, densities, gains, centres):
        try:
            eoi_core.validate(target.shape, layer_density, gain=layer_gain,
                              dtype=_CORE_DTYPES[target.tensor.dtype], groups=target.groups,
                              center_density=centre)
        except (TypeError, ValueError) as error:
            if build is not None and "infeasible" in str(error):
                continue  # the orthogonal floor is EOI's; another scheme judges feasibility itself
            raise type(error)(f"layer {target.key!r} ({target.kind}): {error}") from error

    # A sharded weight's rectangle (placements checked here, before anything is drawn or written).
    shards = {id(t): local_bounds(t.tensor, f"the {t.parameter} of layer {t.key!r} ({t.kind})")
              for t in selected if is_dtensor(t.tensor)}
    # Seeds in layer order first: the result does not depend on `workers`.
    seeds = [draw_seed(generator) for _ in selected]
    jobs = list(zip(selected, densities, gains, centres, seeds))

    def make(job) -> tuple:
        """Canonical ``(weight, mask)``, mask count and probe error: NumPy only, so it runs in any thread."""
        target, layer_density, layer_gain, centre, seed = job
        dtype = target.tensor.dtype
        if id(target) in shards:  # this rank's block only; the report's numbers are summed in `write`
            values, mask, bounds = build_local(
                tuple(target.tensor.shape), shards[id(target)],
                layer_density, seed=seed, dtype=_CORE_DTYPES[dtype], transposed=target.transposed,
                gain=layer_gain, groups=target.groups, center_density=centre, build=build)
            return values, mask, int(np.count_nonzero(mask)), bounds
        if build is None:
            values, mask = generate(target.shape, layer_density, dtype, seed=seed, gain=layer_gain,
                                    groups=target.groups, center_density=centre)
            error = probe_error(values, layer_gain, target.groups) if verify == "probe" else None
            return values, mask, int(np.count_nonzero(mask)), error
        try:
            values, mask = build(target.shape, layer_density, gain=layer_gain, dtype=_CORE_DTYPES[dtype],
                                 rng=seed, groups=target.groups, center_density=centre)
        except (TypeError, ValueError) as error:
            raise type(error)(f"layer {target.key!r} ({target.kind}): {error}") from error
        values, mask = np.asarray(values), np.asarray(mask, dtype=bool)
        if values.shape != target.shape or mask.shape != target.shape:
            raise ValueError(f"scheme {scheme!r} returned shapes {values.shape} and {mask.shape} for layer "
                             f"{target.key!r}, expected {target.shape}")
        return values.astype(np.float64), mask, int(np.count_nonzero(mask)), None

    def write(job, made) -> tuple[torch.Tensor, int, float | None]:
        target, _, layer_gain, _, _ = job
        values, mask, count, error = made
        written = _write(target, values, mask, build)
        if is_dtensor(target.tensor):  # collectives, in layer order on every rank
            bounds, error = error, None
            count = global_sum(count, target.tensor)
            if build is None and verify == "probe":
                error = distributed_probe(values, bounds, target.shape, layer_gain, target.groups, target.tensor)
        if build is None and verify == "exact":
            error = _error(target, layer_gain, verify)
        return written, count, error

    if build is None:
        # Validated above: generate and write layer by layer.  Worker threads run only the core
        # (NumPy/Numba, no GIL); every torch call stays on this thread (torch's OpenMP pool spins
        # badly when several threads drive it); layers in flight are bounded by `workers` and by
        # 1.5x the largest weight's bytes.
        costs = [t.tensor.numel() * (t.tensor.element_size() + 1) for t in selected]
        budget = int(1.5 * max(t.tensor.numel() * t.tensor.element_size() for t in selected))
        results = list(_pipeline(make, write, jobs, workers, costs, budget))
    else:
        # Another scheme judges its own arguments: build everything before writing anything.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            built = list(pool.map(make, jobs))
        results = [write(job, made) for job, made in zip(jobs, built)]

    rows = []
    records = fsdp_params(model) if any(is_dtensor(t.tensor) for t in selected) else {}
    done = {id(t): (job, result) for t, job, result in zip(selected, jobs, results)}
    for target in targets:
        if id(target) not in done:
            rows.append(_skipped(target, reasons.get(id(target), target.skip)))
            continue
        (_, layer_density, layer_gain, _, _), (mask, count, error) = done[id(target)]
        rows.append(LayerReport(
            name=target.name, kind=target.kind, shape=tuple(target.tensor.shape), groups=target.groups,
            dtype=str(target.tensor.dtype).removeprefix("torch."), density=layer_density,
            mask_count=count, size=mask.numel(), gain=layer_gain, orthogonality_error=error,
            reason=target.note, parameter=target.parameter,
        ))
        # One mask object for every holder of a tied parameter: the tie stays a tie.
        # Hook mode masks the shared Parameter's gradient once: the mask lives with the primary layer.
        holders = target.holders if mode == "parametrize" else [(target.name, target.module, target.parameter)]
        record = records.get(id(target.tensor))
        for _, module, parameter in holders:
            attach(module, parameter, mask, mode, masked=True, fsdp=record)
    if mode == "hook":
        arm_from(model, [t.module for t in selected])
    return SparsifyReport(rows)
