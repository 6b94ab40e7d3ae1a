"""Read and write an EOI ``(weight, mask)`` as a plain ``.npz`` file.

The file holds plain arrays only, so ``numpy.load(path, allow_pickle=False)``
reads it:

``weight``
    The weight in the canonical PyTorch layout ``(out, in // groups, *kernel)``.
    float16, float32 and float64 are stored as themselves.  NumPy's ``.npz``
    cannot store bfloat16 (it is an ``ml_dtypes`` extension type), so a
    bfloat16 weight is stored as its raw bits, a ``uint16`` array; view it as
    ``ml_dtypes.bfloat16`` (or call ``eoi_core.io.load_npz``) to get the values back.
``mask``
    bool, same shape: the trainable entries.
``dtype``
    The weight's dtype name (a 0-d string array): ``"float32"``, ``"bfloat16"``, ...
``density``, ``gain``, ``groups``
    The parameters it was made with (0-d arrays), when the writer passed them.

>>> import tempfile, pathlib
>>> import eoi_core
>>> from eoi_core.io import load_npz, save_npz
>>> weight, mask = eoi_core.sparse_orthogonal((8, 4), 0.5, rng=0)
>>> path = save_npz(pathlib.Path(tempfile.mkdtemp()) / "layer", weight, mask, density=0.5)
>>> path.name
'layer.npz'
>>> loaded, loaded_mask = load_npz(path)
>>> bool((loaded == weight).all() and (loaded_mask == mask).all())
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import DTYPES, resolve_dtype

__all__ = ["save_npz", "load_npz"]

#: The arrays every file holds; ``density``, ``gain`` and ``groups`` are optional.
REQUIRED = ("weight", "mask", "dtype")


def save_npz(path: str | Path, weight: np.ndarray, mask: np.ndarray, **metadata: Any) -> Path:
    """Write ``weight``, ``mask``, the dtype name and ``metadata`` to ``path``.

    Parameters
    ----------
    path : str or Path
        The file; ``.npz`` is appended when the name does not end with it.
    weight : ndarray
        float16, bfloat16, float32 or float64, any shape (bfloat16 is stored
        as its raw ``uint16`` bits).
    mask : ndarray of bool
        Same shape as ``weight``.
    **metadata
        Scalars stored as 0-d arrays (``density=0.1``, ``gain=1.0``, ...).

    Returns
    -------
    Path
        The path written (with the ``.npz`` suffix).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_npz(folder / "eye.npz", np.eye(2), np.eye(2, dtype=bool)).name
    'eye.npz'
    """
    weight = np.asarray(weight)
    mask = np.asarray(mask)
    name = weight.dtype.name
    if name not in DTYPES:
        raise TypeError(f"weight must have one of the dtypes {DTYPES}, got {name}")
    if mask.dtype != np.bool_ or mask.shape != weight.shape:
        raise ValueError(f"mask must be a bool array shaped like weight {weight.shape}, "
                         f"got {mask.dtype} {mask.shape}")
    reserved = sorted(set(metadata) & set(REQUIRED))
    if reserved:
        raise ValueError(f"metadata may not use the names {reserved}: the file stores those itself")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    stored = weight.view(np.uint16) if name == "bfloat16" else weight
    arrays = {key: np.asarray(value) for key, value in metadata.items()}
    np.savez(path, weight=stored, mask=mask, dtype=np.asarray(name), **arrays)
    return path


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(weight, mask)`` written by :func:`save_npz` (or ``eoi init``).

    Parameters
    ----------
    path : str or Path
        An ``.npz`` file holding ``weight``, ``mask`` and ``dtype``.

    Returns
    -------
    weight : ndarray
        In its original dtype; bfloat16 is restored from its raw bits, which
        needs the ``ml_dtypes`` package.
    mask : ndarray of bool
        Same shape as ``weight``.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = save_npz(pathlib.Path(tempfile.mkdtemp()) / "w", np.eye(3, dtype=np.float32),
    ...                 np.eye(3, dtype=bool))
    >>> weight, mask = load_npz(path)
    >>> weight.dtype.name, int(mask.sum())
    ('float32', 3)
    """
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in REQUIRED if key not in archive.files]
        if missing:
            raise ValueError(f"{str(path)!r} is not an EOI weight file: it lacks the arrays {missing}")
        weight, mask, name = archive["weight"], archive["mask"], str(archive["dtype"])
    if name == "bfloat16":
        weight = weight.view(resolve_dtype("bfloat16"))
    return weight, mask
