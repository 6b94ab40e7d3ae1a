"""eoi_bench: the demo and the benchmarks of the paper's claims, run by the ``eoi`` command.

Everything runs on a CPU with data available offline (scikit-learn's bundled
``load_digits``; MNIST only from a local ``.npz`` the user passes).

Modules
-------
registry   the benchmarks ``eoi bench NAME`` runs (the command itself is :mod:`eoi_core.cli`)
demo       ``eoi demo``
data       the digits split (and a local MNIST file) as standardised tensors
schemes    sparse initialisation schemes: EOI and the random-sparse baselines, AI
models     masked sparse MLPs in PyTorch (fixed masks, ``weight * mask``)
train      the SGD loop shared by ``demo``, ``deep`` and ``angles``
speed      timing of the core against the published algorithm, dense QR and the write floor
density    empirical density of random Givens rotations against the exact law (Fig. 4)
spectrum   Jacobian singular values of a 7-layer MLP at initialisation (Fig. 2)
deep       a 1000-layer tanh MLP on digits (Table 1, CPU version)
angles     fixed against uniform rotation angles (Appendix G)
"""

from eoi_core._version import __version__

__all__ = ["__version__"]
