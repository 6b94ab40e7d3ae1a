"""What every adapter's ``sparsify`` returns: one row per weight matrix of the model.

The report is framework-neutral (it holds names, shapes and numbers, never a
tensor), so PyTorch, Keras and JAX return the same type with the same columns.
Every weight matrix the adapter saw is listed: the ones it initialised
(``status == "sparsified"``) and the ones it left alone (``status ==
"skipped"``, with the reason), so that a user can see what happened to each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, overload

__all__ = ["LayerReport", "SparsifyReport", "SPARSIFIED", "SKIPPED"]

SPARSIFIED = "sparsified"
SKIPPED = "skipped"


@dataclass(frozen=True)
class LayerReport:
    """What happened to one weight matrix.

    Attributes
    ----------
    name : str
        Qualified name in the framework's own spelling (``"encoder.0.linear"``
        in PyTorch, ``"dense_1"`` in Keras, ``"Dense_0"`` in Flax).
    kind : str
        The layer's class name (``"Linear"``, ``"Conv2D"``, ``"MultiheadAttention"``...).
    shape : tuple of int
        The weight's shape in the framework's own layout.
    groups : int
        Independent orthogonal blocks (conv groups, depthwise channels, gates, heads).
    dtype : str
        The weight's dtype, e.g. ``"float32"``.
    density : float or None
        The density the distribution gave this weight (``None`` when skipped).
    mask_count : int or None
        Trainable entries, ``groups * floor(density * block_size + 0.5)``
        (``None`` when skipped).
    size : int
        Entries of the weight.
    gain : float or None
        The gain ``g`` the weight was initialised with (``None`` when skipped).
    orthogonality_error : float or None
        ``max |H^T H - g^2 I| / g^2`` over the orthogonal blocks of the weight
        as stored (relative to the gain, so it is at the rounding level of the
        weight's dtype), estimated or exact as the adapter's ``verify`` says
        (:mod:`eoi_core.verify`), or ``None`` when it was not computed.
    status : {"sparsified", "skipped"}
        Whether the adapter initialised this weight.
    reason : str
        Why a weight was skipped, or a note on how it was split into blocks.
    parameter : str
        The parameter's own name within the layer (``"weight"``,
        ``"in_proj_weight"``, ``"kernel"``, ``"recurrent_kernel"``...).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    groups: int
    dtype: str
    density: float | None
    mask_count: int | None
    size: int
    gain: float | None
    orthogonality_error: float | None
    status: str = SPARSIFIED
    reason: str = ""
    parameter: str = ""

    def __post_init__(self) -> None:
        if self.status not in (SPARSIFIED, SKIPPED):
            raise ValueError(f"status must be {SPARSIFIED!r} or {SKIPPED!r}, got {self.status!r}")

    @property
    def sparsified(self) -> bool:
        """Whether this weight was initialised with EOI."""
        return self.status == SPARSIFIED

    @property
    def mask_density(self) -> float:
        """Realised density ``mask_count / size`` (1.0 for a skipped, dense weight)."""
        return 1.0 if self.mask_count is None else self.mask_count / self.size

    @classmethod
    def skipped(
        cls, name: str, kind: str, shape: Sequence[int], dtype: str, reason: str, parameter: str = ""
    ) -> "LayerReport":
        """The row of a weight left dense, with the ``reason``."""
        size = 1
        for dim in shape:
            size *= int(dim)
        return cls(
            name=name,
            kind=kind,
            shape=tuple(int(d) for d in shape),
            groups=1,
            dtype=dtype,
            density=None,
            mask_count=None,
            size=size,
            gain=None,
            orthogonality_error=None,
            status=SKIPPED,
            reason=reason,
            parameter=parameter,
        )


_COLUMNS = ("layer", "type", "shape", "groups", "dtype", "density", "mask", "size", "gain", "ortho error", "note")


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(layer: LayerReport) -> tuple[str, ...]:
    name = layer.name or "(model)"
    if layer.parameter and layer.parameter not in ("weight", "kernel"):
        name = f"{name}.{layer.parameter}"
    note = layer.reason if layer.sparsified else f"skipped: {layer.reason}"
    return (
        name,
        layer.kind,
        "x".join(str(d) for d in layer.shape),
        str(layer.groups),
        layer.dtype.removeprefix("torch."),
        _number(layer.density, ".4f"),
        "-" if layer.mask_count is None else str(layer.mask_count),
        str(layer.size),
        _number(layer.gain, ".4g"),
        _number(layer.orthogonality_error, ".1e"),
        note,
    )


class SparsifyReport(Sequence[LayerReport]):
    """The rows of one ``sparsify`` call: every weight matrix and what happened to it.

    A read-only sequence of :class:`LayerReport` (index by position, or by
    name for the sparsified rows); ``str()`` gives an aligned table with a
    total row.  ``density`` and ``mask_count`` count the sparsified weights;
    ``model_density`` counts every listed weight, a skipped one as dense.
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
                if layer.name == index and layer.sparsified:
                    return layer
            for layer in self._layers:
                if layer.name == index:
                    return layer
            raise KeyError(f"no weight named {index!r} in the report")
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self._layers)

    @property
    def sparsified(self) -> tuple[LayerReport, ...]:
        """The rows of the weights initialised with EOI."""
        return tuple(layer for layer in self._layers if layer.sparsified)

    @property
    def skipped(self) -> tuple[LayerReport, ...]:
        """The rows of the weights left dense, each with its reason."""
        return tuple(layer for layer in self._layers if not layer.sparsified)

    @property
    def size(self) -> int:
        """Entries of all sparsified weights."""
        return sum(layer.size for layer in self.sparsified)

    @property
    def mask_count(self) -> int:
        """Trainable entries of all sparsified weights."""
        return sum(layer.mask_count or 0 for layer in self.sparsified)

    @property
    def density(self) -> float:
        """Realised density over the sparsified weights, ``mask_count / size``."""
        size = self.size
        return self.mask_count / size if size else float("nan")

    @property
    def model_density(self) -> float:
        """Density over every listed weight matrix, a skipped one counted as dense."""
        size = sum(layer.size for layer in self._layers)
        kept = self.mask_count + sum(layer.size for layer in self.skipped)
        return kept / size if size else float("nan")

    @property
    def orthogonality_error(self) -> float | None:
        """Largest computed per-weight orthogonality error (``None`` if none was computed)."""
        errors = [layer.orthogonality_error for layer in self.sparsified if layer.orthogonality_error is not None]
        return max(errors) if errors else None

    def as_dicts(self) -> list[dict]:
        """The rows as plain dictionaries (for JSON or a DataFrame)."""
        from dataclasses import asdict

        return [asdict(layer) for layer in self._layers]

    def __str__(self) -> str:
        rows = [_COLUMNS] + [_row(layer) for layer in self._layers]
        total_note = f"{len(self.skipped)} skipped; model density {self.model_density:.4f}" if self.skipped else ""
        rows.append(
            ("total", "", "", "", "", _number(self.density, ".4f"), str(self.mask_count), str(self.size), "",
             _number(self.orthogonality_error, ".1e"), total_note)
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        # Text columns flush left, numbers flush right.
        left = {0, 1, 2, 4, 10}

        def line(row: tuple[str, ...]) -> str:
            cells = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(tuple("-" * w for w in widths)))
        return "\n".join([line(rows[0]), rule] + [line(row) for row in rows[1:-1]] + [rule, line(rows[-1])])

    def __repr__(self) -> str:
        return str(self)
