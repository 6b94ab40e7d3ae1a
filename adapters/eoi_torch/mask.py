"""How a sparsified weight stays sparse in training: two modes.

``mode="parametrize"`` (the default of :func:`sparsify`)
    An :class:`EOIMask` is registered on the weight with
    :func:`torch.nn.utils.parametrize.register_parametrization`.  The trainable
    parameter becomes ``layer.parametrizations.<name>.original`` (the same
    ``Parameter`` object, so an optimizer built before still holds it) and
    ``layer.<name>`` is computed as ``original * mask`` on every access: one
    element-wise multiply per forward (and one in backward).  The effective
    weight is zero off the mask whatever any optimizer does.  For inference,
    ``with torch.nn.utils.parametrize.cached(): model(x)`` computes each masked
    weight once for the whole block instead of once per access.  State-dict
    keys: ``<layer>.parametrizations.<name>.original`` and ``...<name>.0.mask``.

``mode="hook"`` (no forward overhead)
    The parameter stays where it is (``layer.weight``, same key in
    ``state_dict``); the mask is a buffer ``<layer>.eoi_mask_<name>`` and a
    ``register_post_accumulate_grad_hook`` multiplies the gradient by it after
    every backward, the way static sparse training codes keep masks.  An
    off-mask weight is zero at init and gets zero gradient, so SGD (momentum,
    weight decay), Adam, AdamW, Adagrad, gradient clipping and AMP's
    ``GradScaler`` all leave it exactly zero (their update of a weight with
    zero value, zero gradient and zero state is zero).  For optimizers that
    move such weights anyway (noise, custom updates), :func:`keep_masks` adds
    an ``Optimizer.register_step_post_hook`` that re-zeros them after each step.
    The hooks are re-armed by a forward pre-hook after ``copy.deepcopy`` or
    ``load_state_dict`` into a prepared model.

Both modes store the mask as a bool buffer and multiply by a cached 0/1 copy
in the weight's dtype (a float-by-bool multiply is several times slower): one
extra weight-sized tensor per masked weight while training, never saved.

Sharded models (FSDP2's ``fully_shard``, DTensor parameters)
    A mask made for a ``DTensor`` weight is a ``DTensor`` with the weight's mesh
    and placements, so ``weight * mask`` and the gradient mask are local
    multiplies.  In hook mode the gradient hook sits on the sharded parameter
    (FSDP2 runs it after each reduce-scatter): no extra communication.  In
    parametrize mode FSDP2's record of the parameter follows it into
    ``parametrizations.<name>.original``; inside FSDP2's forward the weight is
    whole, so the mask is gathered for that multiply only (one bool all-gather
    per layer and forward, never kept) and the gradient is masked on the shard
    after the reduce-scatter.  A mask registered before ``fully_shard`` stays
    whole on every rank and is cut to the weight's shard where needed.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.weak import WeakIdKeyDictionary

from .distributed import conform, fsdp_params, gather, is_dtensor, is_gathered, move_fsdp_param

__all__ = ["EOIMask", "masks", "make_permanent", "prepare_for_load", "keep_masks", "MODES"]

MODES = ("parametrize", "hook")
_PREFIX = "eoi_mask_"

# State-dict keys of the two modes' masks.
_PARAMETRIZED_KEY = re.compile(r"^(?P<layer>(?:.*\.)?)parametrizations\.(?P<tensor>[^.]+)\.0\.mask$")
_HOOK_KEY = re.compile(r"^(?P<layer>(?:.*\.)?)" + _PREFIX + r"(?P<tensor>[^.]+)$")

# Parameter -> (mask owner module, buffer name, hook handle), for the hook mode.
_ARMED: WeakIdKeyDictionary = WeakIdKeyDictionary()


class _Scale:
    """The bool ``mask`` as a tensor of the weight's dtype and device, cached.

    Multiplying a float tensor by a bool one goes through type promotion,
    several times slower than a same-dtype multiply (about 100 ms against
    15 ms for a 4096 x 4096 float32 weight on two cores), so the masks are
    applied as a 0/1 tensor of the weight's dtype: one extra weight-sized
    tensor per masked weight, rebuilt when the mask changes in place
    (``load_state_dict``), moves, or the weight's dtype changes.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def __call__(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        key = (id(mask), mask._version, like.dtype, like.device, type(like), getattr(like, "placements", None))
        if self.key != key:
            with torch.no_grad():  # a DTensor weight gets its mask as a DTensor laid out like it
                self.value = conform(mask, like).to(device=like.device, dtype=like.dtype)
            self.key = key
        return self.value

    def __getstate__(self) -> dict:
        return {"key": None, "value": None}  # rebuilt on use; never pickled with the model


class EOIMask(nn.Module):
    """Parametrization ``weight = original * mask`` with a fixed boolean ``mask``.

    Parameters
    ----------
    mask : torch.Tensor of bool
        The trainable entries, the shape of the weight it masks.
    """

    def __init__(self, mask: torch.Tensor, *, masked: bool = False):
        super().__init__()
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool torch.Tensor, got {mask!r:.80}")
        self.register_buffer("mask", mask)
        # `masked=True`: the weight being registered is already zero off the mask (sparsify wrote
        # it so), so registration need not multiply it again (a full pass over a large weight).
        self._registering_masked = masked
        self._scale = _Scale()

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        if is_gathered(original, self.mask):
            # FSDP2's all-gathered weight inside forward (a DTensor on the TP sub-mesh with tensor
            # parallelism): the mask is gathered for this multiply only
            # (never kept: that would hold every layer's whole mask); the gradient is masked on the
            # sharded parameter by the hook `attach` registered.
            return _GatheredMask.apply(original, self.mask)
        # The multiply also masks the gradient, so `original` gets zero gradient off the mask.
        return original * self._scale(self.mask, original)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}, trainable={int(self.mask.sum())}"

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # Assigning `layer.weight = w` stores `w * mask`, so `original` stays zero off the mask too.
        if self._registering_masked:
            self._registering_masked = False
            return weight
        return weight * self.mask


class _GatheredMask(torch.autograd.Function):
    """``original * mask`` for FSDP2's unsharded ``original`` and the sharded (DTensor) ``mask``; the gradient passes
    through unmasked (the sharded gradient is masked after FSDP2's reduce-scatter), so nothing whole is saved."""

    @staticmethod
    def forward(ctx: Any, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return original * gather(mask, original).to(device=original.device, dtype=original.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _GradMask:
    """Post-accumulate-grad hook: ``grad *= mask`` (the mask read from its module at call time)."""

    def __init__(self, module: nn.Module, buffer: str):
        # A weak reference: the hook lives on the Parameter, which the module owns.
        import weakref

        self.module = weakref.ref(module)
        self.buffer = buffer
        self.scale = _Scale()

    def __call__(self, parameter: torch.Tensor) -> None:
        module = self.module()
        # No buffer: make_permanent removed the mask (a hook it could not reach, e.g. on FSDP2's
        # whole-weight parameter, stays behind and does nothing).
        mask = module._buffers.get(self.buffer) if module is not None else None
        if mask is not None and parameter.grad is not None:
            parameter.grad.mul_(self.scale(mask, parameter.grad))


class _Arm:
    """Forward pre-hook that (re-)registers the gradient hooks of a module's masked parameters.

    Tensor hooks do not survive ``copy.deepcopy``, a fresh model or ``fully_shard``
    (which gives the module new parameter objects); this object does (it lives
    in the module's hook dict), so the first forward re-arms them.  On the model
    itself it arms a list of ``modules``: some layers' own forward never runs
    (``nn.MultiheadAttention`` reads ``out_proj.weight`` directly), so their own
    pre-hook would never fire.
    """

    def __init__(self, modules: list[nn.Module] | None = None) -> None:
        self.modules = modules

    def __call__(self, module: nn.Module, args: Any) -> None:
        for each in self.modules if self.modules is not None else [module]:
            arm(each)


def arm_from(model: nn.Module, modules: list[nn.Module]) -> None:
    """Re-arm ``modules``' hook-mode masks before every forward of ``model`` (see :class:`_Arm`)."""
    if modules:
        model.register_forward_pre_hook(_Arm(list(modules)))


def arm(module: nn.Module) -> None:
    """Register the hook-mode gradient mask on each of ``module``'s masked parameters (idempotent)."""
    for name, buffer in module._buffers.items():
        if not name.startswith(_PREFIX) or buffer is None:
            continue
        parameter = module._parameters.get(name[len(_PREFIX):])
        if parameter is None or parameter in _ARMED:
            continue
        if is_gathered(parameter, buffer):
            continue  # FSDP2's whole weight inside forward: its sharded parameter holds the hook
        handle = parameter.register_post_accumulate_grad_hook(_GradMask(module, name))
        _ARMED[parameter] = (module, name, handle)


@contextlib.contextmanager
def _no_self_swap(active: bool) -> Iterator[None]:
    """Let ``register_parametrization`` keep a DTensor parameter whose ``right_inverse`` is itself.

    parametrize stores ``right_inverse(original)`` into ``original`` with
    ``torch.utils.swap_tensors`` for tensor subclasses, even when both are the
    same object; that swap refuses a tensor with weak references (FSDP2's
    parameters after ``to_empty``).  Swapping a tensor with itself changes
    nothing, so for the duration of the call it is skipped.
    """
    if not active:
        yield
        return
    store = parametrize._maybe_set

    def maybe_set(dest: torch.Tensor, src: torch.Tensor) -> None:
        if dest is not src:
            store(dest, src)

    parametrize._maybe_set = maybe_set
    try:
        yield
    finally:
        parametrize._maybe_set = store


def attach(module: nn.Module, name: str, mask: torch.Tensor, mode: str, *, masked: bool = False,
           fsdp: Any = None) -> None:
    """Keep ``module.<name>`` masked by ``mask`` in ``mode`` (``"parametrize"`` or ``"hook"``).

    ``masked=True`` promises that the weight is already zero off the mask, so
    registering costs no pass over it (``unsafe=True`` skips parametrize's own
    consistency forward; shape and dtype are unchanged by construction).
    ``fsdp`` is FSDP2's record of the (sharded) parameter, when ``fully_shard``
    manages it: parametrize moves the parameter, so the record follows it, and
    the sharded gradient is masked after each reduce-scatter.
    """
    if mode == "parametrize":
        parameter = module._parameters.get(name)
        parametrization = EOIMask(mask, masked=masked)
        with _no_self_swap(masked and is_dtensor(parameter)):
            parametrize.register_parametrization(module, name, parametrization, unsafe=masked)
        if fsdp is not None:
            move_fsdp_param(fsdp, (module, name), (module.parametrizations[name], "original"))
            parametrization._fsdp_hook = parameter.register_post_accumulate_grad_hook(
                _GradMask(parametrization, "mask"))
        return
    module.register_buffer(_PREFIX + name, mask)
    if not any(isinstance(hook, _Arm) for hook in module._forward_pre_hooks.values()):
        module.register_forward_pre_hook(_Arm())
    arm(module)


def _eoi_masks(module: nn.Module) -> dict[str, torch.Tensor]:
    found = {}
    if hasattr(module, "parametrizations"):
        for name, chain in module.parametrizations.items():
            for parametrization in chain:
                if isinstance(parametrization, EOIMask):
                    found[name] = parametrization.mask
    for name, buffer in module._buffers.items():
        if name.startswith(_PREFIX) and buffer is not None:
            found[name[len(_PREFIX):]] = buffer
    return found


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The EOI mask of every sparsified weight, by key (``layer`` for ``weight``, else ``layer.param``).

    Examples
    --------
    >>> import torch, eoi_torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> _ = eoi_torch.sparsify(model, 0.5, distribution="uniform")
    >>> sorted(eoi_torch.masks(model))
    ['0', '2']
    """
    found = {}
    for layer, module in model.named_modules():
        for name, mask in _eoi_masks(module).items():
            key = layer if name == "weight" else (f"{layer}.{name}" if layer else name)
            found.setdefault(key, mask)
    return found


def _own_class(module: nn.Module) -> None:
    # parametrize gives each module a generated class and remove_parametrizations deletes the
    # property from it; a deep copy shares that class with the original, so give this module its
    # own before removing (else the original's forward would lose its weight property).
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)


def _unparametrize(module: nn.Module, name: str) -> None:
    """``remove_parametrizations(module, name, leave_parametrized=False)``, also after ``fully_shard``.

    ``fully_shard`` on a parametrized layer makes its class ``FSDP<Parametrized<Layer>>``:
    the property parametrize added lives on a base class there, where
    ``remove_parametrizations`` does not look, and its last step (the class
    becomes its first base) would give the layer the class ``FSDPModule``.  So
    for such a layer the same steps are taken here: the property goes, the
    original ``Parameter`` object is the layer's parameter again, and the
    parametrized base class is replaced by its own base.
    """
    cls = type(module)
    holder = next(base for base in cls.__mro__ if isinstance(base.__dict__.get(name), property))
    if holder is cls:
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        return
    original = module.parametrizations[name].original
    del module.parametrizations[name]
    delattr(holder, name)
    module.register_parameter(name, original)
    if len(module.parametrizations) == 0:
        del module.parametrizations
        layer = holder.__bases__[0]
        bases = tuple(layer if base is holder else base for base in cls.__bases__)
        namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__.replace(holder.__name__, layer.__name__), bases, namespace)


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every EOI mask into its weight and stop masking, in place.

    Each sparsified weight becomes a plain ``Parameter`` holding
    ``original * mask`` (so the zeros stay): parametrized weights via
    ``torch.nn.utils.parametrize.remove_parametrizations(layer, name)``,
    hook-mode weights by removing the gradient hook and the mask buffer.
    Training afterwards no longer keeps the zeros; the ``state_dict`` has plain
    keys again and loads into an unsparsified model.  Safe on a
    ``copy.deepcopy`` of a model that keeps training ("export a dense copy").

    Returns
    -------
    model : the same module, for chaining.
    """
    records = fsdp_params(model)
    for _, module in model.named_modules():
        found = _eoi_masks(module)
        if not found:
            continue
        if parametrize.is_parametrized(module):
            _own_class(module)
        for name in found:
            if parametrize.is_parametrized(module, name):
                chain = module.parametrizations[name]
                original = chain.original
                if not is_dtensor(original):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                    continue
                # A sharded parameter (DTensor has no set_): mask it in place, locally, and put the
                # same Parameter back, so FSDP2's sharded parameter stays the one it manages.
                for parametrization in chain:
                    hook = getattr(parametrization, "_fsdp_hook", None)
                    if hook is not None:
                        hook.remove()
                with torch.no_grad():
                    original.mul_(conform(found[name], original).to(original.dtype))
                _unparametrize(module, name)
                if id(original) in records:
                    move_fsdp_param(records[id(original)], (chain, "original"), (module, name))
                continue
            buffer = _PREFIX + name
            parameter = module._parameters[name]
            with torch.no_grad():
                parameter.mul_(conform(module._buffers[buffer], parameter).to(parameter.dtype))
            entry = _ARMED.pop(parameter, None)
            if entry is not None:
                entry[2].remove()
            del module._buffers[buffer]
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, _Arm):
                del module._forward_pre_hooks[key]
    for _, module in model.named_modules():  # the model's own _Arm (it holds no mask itself)
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, _Arm) and hook.modules is not None:
                del module._forward_pre_hooks[key]
    return model


def keep_masks(optimizer: torch.optim.Optimizer, model: nn.Module) -> Any:
    """Re-zero ``model``'s hook-mode weights off their masks after every ``optimizer.step()``.

    Not needed for SGD, Adam(W), Adagrad & co. (a weight with zero value,
    gradient and state does not move); use it for optimizers that move such
    weights.  Returns the ``RemovableHandle`` of
    ``optimizer.register_step_post_hook``.

    Examples
    --------
    >>> import torch, eoi_torch
    >>> model = torch.nn.Linear(8, 8)
    >>> _ = eoi_torch.sparsify(model, 0.5, mode="hook")
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> handle = eoi_torch.keep_masks(optimizer, model)
    """
    pairs = []
    for _, module in model.named_modules():
        for name, buffer in module._buffers.items():
            if name.startswith(_PREFIX) and buffer is not None:
                pairs.append((module, name[len(_PREFIX):], name, _Scale()))

    def rezero(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for module, name, buffer, scale in pairs:
                parameter = module._parameters[name]
                parameter.mul_(scale(module._buffers[buffer], parameter))

    return optimizer.register_step_post_hook(rezero)


def prepare_for_load(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Give a freshly built ``model`` the EOI masks that ``state_dict`` was saved with.

    A parametrized weight saves ``<layer>.parametrizations.<name>.original`` and
    ``<layer>.parametrizations.<name>.0.mask`` instead of ``<layer>.<name>``; a
    hook-mode weight saves ``<layer>.<name>`` and ``<layer>.eoi_mask_<name>``.
    ``model.load_state_dict`` needs the same structure: for every such mask in
    ``state_dict`` whose layer exists in ``model`` and is not masked yet, this
    registers the mask in the same mode (on the layer's device);
    ``load_state_dict`` then fills in the values.  Keys it cannot place are
    left for ``load_state_dict`` to report.  On a sharded model (after
    ``fully_shard`` or tensor parallelism) each mask is laid out like its
    weight (a whole mask is cut to this rank's part), so a sharded model's
    ``state_dict()`` loads into a freshly built and sharded one.

    Returns
    -------
    model : the same module, for chaining.

    Examples
    --------
    >>> import io, torch, eoi_torch
    >>> def build():
    ...     return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> model = build()
    >>> _ = eoi_torch.sparsify(model, 0.5)
    >>> buffer = io.BytesIO(); torch.save(model.state_dict(), buffer); _ = buffer.seek(0)
    >>> state = torch.load(buffer)
    >>> fresh = eoi_torch.prepare_for_load(build(), state)
    >>> fresh.load_state_dict(state)
    <All keys matched successfully>
    """
    layers = dict(model.named_modules())
    records = fsdp_params(model)
    hooked = []
    for key, value in state_dict.items():
        match, mode = _PARAMETRIZED_KEY.match(key), "parametrize"
        if match is None:
            match, mode = _HOOK_KEY.match(key), "hook"
        if match is None:
            continue
        layer = match["layer"].rstrip(".")
        module = layers.get(layer)
        tensor = match["tensor"]
        if module is None or tensor in _eoi_masks(module):
            continue
        current = getattr(module, tensor, None)
        if not isinstance(current, torch.Tensor) or not isinstance(value, torch.Tensor):
            continue
        if value.shape != current.shape or value.dtype != torch.bool:
            raise ValueError(
                f"state_dict[{key!r}] is a {value.dtype} mask of shape {tuple(value.shape)}, but "
                f"layer {layer!r} has {tensor} of shape {tuple(current.shape)}; "
                "a mask must be bool with the weight's shape"
            )
        parameter = module._parameters.get(tensor)
        if is_dtensor(parameter):
            # A sharded parameter (fully_shard, tensor parallelism): the mask is laid out like it,
            # FSDP2's record follows a parametrized one, and the parameter is masked in place
            # (no swap of FSDP2's parameter object); load_state_dict then fills in both.
            mask = conform(value, parameter)
            mask = mask.clone() if mask is value else mask
            with torch.no_grad():
                parameter.to_local().mul_(mask.to_local().to(parameter.dtype))
            attach(module, tensor, mask, mode, masked=True, fsdp=records.get(id(parameter)))
        else:
            attach(module, tensor, value.to(current.device, copy=True), mode)
        if mode == "hook":
            hooked.append(module)
    arm_from(model, hooked)
    return model
