"""The version of the ``eoi`` distribution: the one place it is written.

``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``) and so do
``eoi --version``, :data:`eoi_core.__version__` and the other packages.
"""

__version__ = "0.1.0"
