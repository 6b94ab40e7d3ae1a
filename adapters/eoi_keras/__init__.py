"""eoi_keras: Exact Orthogonal Initialization for Keras 3 (TensorFlow, JAX and PyTorch backends).

>>> import keras, eoi_keras
>>> layer = keras.layers.Dense(64, kernel_initializer=eoi_keras.EOI(density=0.2, seed=0))

Public API
----------
EOI            ``keras.initializers.Initializer``: a sparse kernel, exactly orthogonal per block
               (the layer being built decides the layout, or ``layout=``)
sparsify       EOI for every kernel of a built model, masks kept fixed in ``fit``; returns
               the shared ``eoi_core.report.SparsifyReport``
MaskConstraint ``keras.constraints.Constraint`` that zeroes a weight outside its mask; the
               mask is saved with the weights (``save``, ``save_weights``), not in the config
kernel_masks   ``{kernel key: mask}`` of a model's masked kernels
find_kernels   every weight matrix of a model with its layout, or why it has none

``EOI`` and ``MaskConstraint`` are registered Keras serializables (``"eoi>EOI"``,
``"eoi>MaskConstraint"``): importing ``eoi_keras`` is all ``keras.models.load_model`` needs.
"""

from .constraint import MaskConstraint
from .initializer import EOI
from .sparsity import find_kernels, kernel_masks, sparsify

__all__ = ["EOI", "MaskConstraint", "find_kernels", "kernel_masks", "sparsify"]
