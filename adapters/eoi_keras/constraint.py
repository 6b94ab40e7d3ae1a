"""``MaskConstraint``: keep a sparsity mask fixed through Keras training; masks saved with the weights."""

from __future__ import annotations

import base64
from typing import Any, Mapping

import keras
import numpy as np
from keras.src.saving.keras_saveable import KerasSaveable

__all__ = ["MaskConstraint"]


def _as_mask(mask: Any, key: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"mask{f' {key!r}' if key else ''} must be a boolean array, got dtype {array.dtype}")
    if array.ndim < 1:
        raise ValueError(f"mask must have rank >= 1, got a scalar {mask!r}")
    # A private, read-only copy: the constraint must not change when the caller's array does.
    array = array.copy()
    array.flags.writeable = False
    return array


def _decode_bits(shape: Any, bits: str) -> np.ndarray:
    # Configs written by eoi_keras 0.1 held the mask as base64 packed bits.
    dims = tuple(int(d) for d in shape)
    size = int(np.prod(dims, dtype=np.int64))
    packed = np.frombuffer(base64.b64decode(bits.encode("ascii"), validate=True), dtype=np.uint8)
    return np.unpackbits(packed, count=size).astype(bool).reshape(dims)


def _matches(path: str, key: str) -> bool:
    return key == "" or path == key or path.endswith("/" + key)


@keras.saving.register_keras_serializable(package="eoi")
class MaskConstraint(keras.constraints.Constraint, KerasSaveable):
    r"""Zero every entry of a weight outside a fixed boolean mask.

    Keras 3 optimizers apply ``variable.constraint`` after every update
    (``w <- constraint(w)``), so a kernel with this constraint keeps its
    sparsity pattern through ``model.fit`` on every backend:

    .. math:: w \leftarrow \mathrm{where}(M, w, 0).

    ``where`` (not ``w * M``) makes masked entries exactly ``0`` even if an
    update made them ``inf`` or ``NaN``.

    **Where the mask lives.**  The config holds only the mask's key and shape
    (a few bytes); the mask itself is saved *with the weights*: Keras' saving
    walks each layer's attributes, finds the constraint (a layer's
    ``kernel_constraint``) and stores its packed bits next to the layer's
    variables.  So ``model.save`` / ``keras.models.load_model`` and
    ``model.save_weights`` / ``model.load_weights`` both restore it (the
    latter into a model that has a ``MaskConstraint`` in the same place, e.g.
    one built the same way and sparsified with the same selection).  A
    constraint made from a config holds no mask until its weights are loaded;
    calling it before that is an error.

    One constraint may hold several masks, keyed by the tail of the variable
    path they belong to (``"query/kernel"``): ``MultiHeadAttention`` passes one
    ``kernel_constraint`` to all its projections, and the optimizer hands the
    constraint the variable, whose ``path`` selects the mask.  A weight whose
    path matches no key is left unchanged.

    Parameters
    ----------
    mask : array-like of bool, or mapping of str to array-like of bool
        The mask (shape of the constrained weight; True marks trainable
        entries), or ``{key: mask}``.

    Examples
    --------
    >>> import keras, numpy as np, eoi_keras
    >>> constraint = eoi_keras.MaskConstraint(np.eye(3, dtype=bool))
    >>> keras.ops.convert_to_numpy(constraint(keras.ops.ones((3, 3)))).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, mask: Any = None, *, shapes: Mapping[str, Any] | None = None):
        if mask is not None and shapes is not None:
            raise ValueError("pass either mask (the masks) or shapes (masks to be loaded), not both")
        if mask is None and shapes is None:
            raise ValueError("MaskConstraint needs a mask: a boolean array or a mapping {key: mask}")
        if shapes is not None:
            # Made from a config: the masks come with the weights (load_own_variables).
            self._shapes = {str(k): tuple(int(d) for d in v) for k, v in dict(shapes).items()}
            self._masks: dict[str, np.ndarray | None] = {key: None for key in self._shapes}
            return
        items = dict(mask) if isinstance(mask, Mapping) else {"": mask}
        if not items:
            raise ValueError("MaskConstraint needs at least one mask")
        self._masks = {str(key): _as_mask(value, str(key)) for key, value in items.items()}
        self._shapes = {key: value.shape for key, value in self._masks.items()}

    @property
    def masks(self) -> dict[str, np.ndarray | None]:
        """``{key: mask}`` (a mask is ``None`` until loaded, for a constraint made from a config)."""
        return dict(self._masks)

    @property
    def loaded(self) -> bool:
        """Whether every mask is there (a constraint made from a config gets them with the weights)."""
        return all(mask is not None for mask in self._masks.values())

    @property
    def mask(self) -> np.ndarray:
        """The mask of a single-mask constraint."""
        if len(self._masks) != 1:
            raise ValueError(f"this MaskConstraint holds {len(self._masks)} masks: use .masks")
        return self._loaded(next(iter(self._masks)))

    def _loaded(self, key: str) -> np.ndarray:
        mask = self._masks[key]
        if mask is None:
            raise ValueError(
                f"MaskConstraint{f' {key!r}' if key else ''} has no mask yet: it was made from a config "
                "(load_model before its weights, keras.models.clone_model) and its mask comes with the weights; "
                "load weights saved from the sparsified model, or sparsify this one"
            )
        return mask

    def mask_for(self, weight: Any) -> np.ndarray | None:
        """The mask that applies to ``weight`` (a variable, chosen by its ``path``), or ``None``."""
        path = getattr(weight, "path", None)
        if len(self._masks) == 1 and (path is None or _matches(path, next(iter(self._masks)))):
            return self._loaded(next(iter(self._masks)))
        if path is None:
            raise ValueError(f"this MaskConstraint holds masks {sorted(self._masks)}: pass the variable, not a tensor")
        for key in self._masks:
            if _matches(path, key):
                return self._loaded(key)
        return None

    @property
    def density(self) -> float:
        """Fraction of True entries over all masks."""
        masks = [self._loaded(key) for key in self._masks]
        return float(sum(int(m.sum()) for m in masks) / sum(m.size for m in masks))

    def __call__(self, w: Any) -> Any:
        mask = self.mask_for(w)
        if mask is None:
            return w
        if tuple(w.shape) != mask.shape:
            raise ValueError(
                f"MaskConstraint holds a mask of shape {mask.shape} but was applied to a "
                f"weight of shape {tuple(w.shape)}"
            )
        # Keras passes the variable itself; its own constraints convert it first.
        w = keras.ops.convert_to_tensor(w)
        # The mask stays a NumPy constant, converted per call: a tensor cached
        # across calls could belong to another graph (TF) or trace (JAX).
        return keras.ops.where(mask, w, keras.ops.zeros_like(w))

    # Keras' saving calls these when it walks the layer that holds the constraint.
    def _obj_type(self) -> str:
        # Keras' saving accepts a fixed list of object types (for the attributes
        # it skips when walking); a Loss, like a constraint, owns no sub-objects.
        return "Loss"

    def save_own_variables(self, store: Any) -> None:
        for index, key in enumerate(self._masks):
            store[str(index)] = np.packbits(self._loaded(key).reshape(-1))

    def load_own_variables(self, store: Any) -> None:
        keys = list(self._masks)
        if len(store.keys()) != len(keys):
            raise ValueError(
                f"MaskConstraint holds {len(keys)} masks {keys} but the weights hold {len(store.keys())}: "
                "load weights saved from a model sparsified the same way"
            )
        for index, key in enumerate(keys):
            shape = self._shapes[key]
            size = int(np.prod(shape, dtype=np.int64))
            packed = np.asarray(store[str(index)], dtype=np.uint8).reshape(-1)
            if packed.size != (size + 7) // 8:
                raise ValueError(f"the saved mask {key!r} does not fit shape {shape}")
            self._masks[key] = _as_mask(np.unpackbits(packed, count=size).astype(bool).reshape(shape), key)

    def get_config(self) -> dict[str, Any]:
        return {"shapes": {key: list(shape) for key, shape in self._shapes.items()}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskConstraint":
        if "bits" in config:
            return cls(_decode_bits(config["shape"], config["bits"]))
        return cls(shapes=config["shapes"])

    def __reduce__(self):
        # KerasSaveable pickles whole models through the saving library; a
        # constraint pickles (and deep-copies) as its shapes and masks.
        return (_rebuild, (self._shapes, dict(self._masks)))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k!r}: {s}" if k else str(s) for k, s in self._shapes.items())
        return f"MaskConstraint({shapes})"


def _rebuild(shapes: dict, masks: dict) -> MaskConstraint:
    constraint = MaskConstraint(shapes=shapes)
    constraint._masks.update(masks)
    return constraint
