"""``eoi init`` and the ``.npz`` weight files, kept here for older imports.

Both live in the library proper: :mod:`eoi_core.io` (``save_npz``,
``load_npz``) and :mod:`eoi_core.init_command` (the command).

>>> from eoi_bench.init_npz import load_npz
>>> from eoi_core.io import load_npz as core_load_npz
>>> load_npz is core_load_npz
True
"""

from eoi_core.init_command import CLI_EPILOG, add_arguments, main, run
from eoi_core.io import load_npz, save_npz

__all__ = ["save_npz", "load_npz", "add_arguments", "run", "main", "CLI_EPILOG"]
