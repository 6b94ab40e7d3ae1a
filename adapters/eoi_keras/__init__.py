"""eoi_keras: Exact Orthogonal Initialization for Keras 3 (TensorFlow, JAX and PyTorch backends).

>>> import keras, eoi_keras
>>> layer = keras.layers.Dense(64, kernel_initializer=eoi_keras.EOI(density=0.2, seed=0))

Public API
----------
EOI            ``keras.initializers.Initializer``: a sparse, exactly orthogonal kernel
sparsify       EOI for every kernel of a built model, masks kept fixed in ``fit``
MaskConstraint ``keras.constraints.Constraint`` that zeroes a weight outside its mask
kernel_masks   ``{layer name: mask}`` of a model's masked kernels

``EOI`` and ``MaskConstraint`` are registered Keras serializables (``"eoi>EOI"``,
``"eoi>MaskConstraint"``): importing ``eoi_keras`` is all ``keras.models.load_model`` needs.
"""

from .constraint import MaskConstraint
from .initializer import EOI
from .sparsity import kernel_masks, sparsify

__all__ = ["EOI", "MaskConstraint", "kernel_masks", "sparsify"]
