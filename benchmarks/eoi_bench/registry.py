"""The benchmarks ``eoi bench NAME`` runs: name -> one-line help.

Each name is a module of :mod:`eoi_bench` (a ``-`` in a name is ``_`` in the
module's) exposing ``add_arguments(parser)`` and ``run(args)``.  This module imports nothing heavy, so ``eoi --help`` and
``eoi bench --help`` list the benchmarks even where their extras are missing.

>>> from eoi_bench.registry import BENCHMARKS
>>> "speed" in BENCHMARKS
True
"""

from __future__ import annotations

__all__ = ["BENCHMARKS"]

#: ``eoi bench NAME`` -> help text; the module is ``eoi_bench.NAME`` with ``-`` written ``_``.
BENCHMARKS = {
    "speed": "Time of the core against the published algorithm, dense QR and the write floor (App. B)",
    "density": "Density of random Givens rotations against the exact law (Fig. 4)",
    "spectrum": "Jacobian singular values of a 7-layer MLP at initialisation (Fig. 2)",
    "deep": "A 1000-layer tanh MLP on digits: EOI against random sparse baselines (Table 1)",
    "angles": "Fixed (1 and 80 degrees) against uniform rotation angles (App. G)",
    "shard": "Sharded init: per-rank peak memory and CPU time for world sizes 1, 2, 4, 8",
    "sparse-training": "Conv nets on MNIST-1D and digits: {uniform, ERK, SNIP, GraSP, SynFlow} x "
                       "{Base, AI, EOI} + SAO, static masks (Table 1)",
    "scheme-speed": "Time per layer of EOI, SAO and approximate isometry across sizes and densities (App. B)",
    "model-init": "Whole-model sparsify against torch's default init and a loop of eoi_: time and peak memory",
    "training-tax": "Step and forward time of a sparsified MLP over dense, per masking mode (parametrize, hook)",
    "jax-shard": "eoi_jax sharded init: host memory and time per device shard against the whole kernel, per layout",
    "torch-shard": "eoi_torch on FSDP2: per-rank CPU time and peak memory of sparsify for W ranks against one process",
}
