"""eoi_bench: the ``eoi`` command, its demo and the benchmarks of the paper's claims.

Everything runs on a CPU with data available offline (scikit-learn's bundled
``load_digits``; MNIST only from a local ``.npz`` the user passes).

Modules
-------
cli        the ``eoi`` console script (``eoi demo``, ``eoi init``, ``eoi bench ...``)
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

__all__ = ["__version__"]

__version__ = "0.1.0"
