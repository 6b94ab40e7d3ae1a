"""What :func:`sparsify` returns: one row per layer, printable as a table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, overload

__all__ = ["LayerReport", "SparsifyReport"]


@dataclass(frozen=True)
class LayerReport:
    """One sparsified layer at initialisation.

    Attributes
    ----------
    name : str
        Qualified name, as in ``model.named_modules()``.
    kind : str
        The layer's class name (``"Linear"``, ``"Conv2d"``, ...).
    shape : tuple of int
        The weight's torch shape (``(in, out // groups, *kernel)`` for ``ConvTranspose``).
    groups : int
        The layer's ``groups`` (1 for ``Linear``).
    dtype : str
        The weight's dtype, e.g. ``"torch.float32"``.
    density : float
        The density the distribution gave this layer.
    mask_count : int
        Trainable entries: ``groups * floor(density * block_size + 0.5)``.
    size : int
        Entries of the weight.
    gain : float
        The gain ``g`` the layer was initialised with.
    orthogonality_error : float
        ``eoi_core.orthogonality_error`` of the weight as stored (the layer's
        dtype), relative to ``g^2 I``: the rounding of that dtype, no more.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    groups: int
    dtype: str
    density: float
    mask_count: int
    size: int
    gain: float
    orthogonality_error: float

    @property
    def mask_density(self) -> float:
        """Realised density, ``mask_count / size``."""
        return self.mask_count / self.size


_COLUMNS = ("layer", "type", "shape", "groups", "dtype", "density", "mask", "size", "gain", "ortho error")


def _row(layer: LayerReport) -> tuple[str, ...]:
    return (
        layer.name or "(model)",
        layer.kind,
        "x".join(str(d) for d in layer.shape),
        str(layer.groups),
        layer.dtype.removeprefix("torch."),
        f"{layer.density:.4f}",
        str(layer.mask_count),
        str(layer.size),
        f"{layer.gain:.4g}",
        f"{layer.orthogonality_error:.1e}",
    )


class SparsifyReport(Sequence[LayerReport]):
    """The per-layer :class:`LayerReport` rows of one :func:`sparsify` call.

    A read-only sequence (index by position or by layer name); ``str()`` gives
    an aligned table with a total row.
    """

    def __init__(self, layers: Sequence[LayerReport]):
        self._layers = tuple(layers)

    @overload
    def __getitem__(self, index: int | str) -> LayerReport: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[LayerReport, ...]: ...

    def __getitem__(self, index):
        if isinstance(index, str):
            for layer in self._layers:
                if layer.name == index:
                    return layer
            raise KeyError(f"no sparsified layer named {index!r}")
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self._layers)

    @property
    def size(self) -> int:
        """Entries of all sparsified weights."""
        return sum(layer.size for layer in self._layers)

    @property
    def mask_count(self) -> int:
        """Trainable entries of all sparsified weights."""
        return sum(layer.mask_count for layer in self._layers)

    @property
    def density(self) -> float:
        """Realised density over the sparsified weights, ``mask_count / size``."""
        return self.mask_count / self.size

    @property
    def orthogonality_error(self) -> float:
        """Largest per-layer orthogonality error."""
        return max(layer.orthogonality_error for layer in self._layers)

    def __str__(self) -> str:
        rows = [_COLUMNS] + [_row(layer) for layer in self._layers]
        rows.append(
            ("total", "", "", "", "", f"{self.density:.4f}", str(self.mask_count), str(self.size), "",
             f"{self.orthogonality_error:.1e}")
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        # Text columns flush left, numbers flush right.
        left = {0, 1, 2, 4}

        def line(row: tuple[str, ...]) -> str:
            cells = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(tuple("-" * w for w in widths)))
        return "\n".join([line(rows[0]), rule] + [line(row) for row in rows[1:-1]] + [rule, line(rows[-1])])

    def __repr__(self) -> str:
        return str(self)
