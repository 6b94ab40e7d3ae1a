"""``MaskConstraint``: keep a sparsity mask fixed through Keras training."""

from __future__ import annotations

import base64
from typing import Any

import keras
import numpy as np

__all__ = ["MaskConstraint", "encode_mask", "decode_mask"]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A compact JSON-friendly form of a bool mask: its shape and base64 of its packed bits.

    One bit per entry (row-major), so a 1024 x 1024 mask takes 171 KiB of
    text in a ``.keras`` config instead of megabytes of nested lists.
    """
    mask = np.asarray(mask, dtype=bool)
    return {
        "shape": [int(d) for d in mask.shape],
        "bits": base64.b64encode(np.packbits(mask.reshape(-1)).tobytes()).decode("ascii"),
    }


def decode_mask(shape: Any, bits: str) -> np.ndarray:
    """Inverse of :func:`encode_mask`."""
    dims = tuple(int(d) for d in shape)
    size = int(np.prod(dims, dtype=np.int64))
    packed = np.frombuffer(base64.b64decode(bits.encode("ascii"), validate=True), dtype=np.uint8)
    if packed.size != (size + 7) // 8:
        raise ValueError(
            f"mask bits hold {packed.size} bytes but shape {dims} needs {(size + 7) // 8}"
        )
    return np.unpackbits(packed, count=size).astype(bool).reshape(dims)


@keras.saving.register_keras_serializable(package="eoi")
class MaskConstraint(keras.constraints.Constraint):
    r"""Zero every entry of a weight outside a fixed boolean mask.

    Keras 3 optimizers apply ``variable.constraint`` after every update
    (``w <- constraint(w)``), so a kernel with this constraint keeps its
    sparsity pattern through ``model.fit`` on every backend:

    .. math:: w \leftarrow \mathrm{where}(M, w, 0).

    ``where`` (not ``w * M``) makes masked entries exactly ``0`` even if an
    update made them ``inf`` or ``NaN``.  The mask is serialized in
    ``get_config`` (packed bits, base64), so it survives ``model.save`` and
    ``keras.models.load_model``.

    Parameters
    ----------
    mask : array-like of bool
        Shape of the constrained weight; True marks trainable entries.

    Examples
    --------
    >>> import keras, numpy as np, eoi_keras
    >>> constraint = eoi_keras.MaskConstraint(np.eye(3, dtype=bool))
    >>> keras.ops.convert_to_numpy(constraint(keras.ops.ones((3, 3)))).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, mask: Any):
        array = np.asarray(mask)
        if array.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {array.dtype}")
        if array.ndim < 1:
            raise ValueError(f"mask must have rank >= 1, got a scalar {mask!r}")
        # A private copy: the constraint must not change when the caller's array does.
        self.mask = array.copy()
        self.mask.flags.writeable = False

    @property
    def density(self) -> float:
        """Fraction of True entries."""
        return float(self.mask.mean())

    def __call__(self, w: Any) -> Any:
        if tuple(w.shape) != self.mask.shape:
            raise ValueError(
                f"MaskConstraint holds a mask of shape {self.mask.shape} but was applied to a "
                f"weight of shape {tuple(w.shape)}"
            )
        # Keras passes the variable itself; its own constraints convert it first.
        w = keras.ops.convert_to_tensor(w)
        # The mask stays a NumPy constant, converted per call: a tensor cached
        # across calls could belong to another graph (TF) or trace (JAX).
        return keras.ops.where(self.mask, w, keras.ops.zeros_like(w))

    def get_config(self) -> dict[str, Any]:
        return encode_mask(self.mask)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskConstraint":
        return cls(decode_mask(config["shape"], config["bits"]))

    def __repr__(self) -> str:
        return f"MaskConstraint(shape={self.mask.shape}, density={self.density:.6g})"
