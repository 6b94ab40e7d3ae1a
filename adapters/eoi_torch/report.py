"""What :func:`sparsify` returns: the core's report types (one contract for every adapter)."""

from eoi_core.report import LayerReport, SparsifyReport

__all__ = ["LayerReport", "SparsifyReport"]
