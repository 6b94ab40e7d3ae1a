"""Collection rules for the whole run: the tests and every package's docstring examples.

``--doctest-modules`` imports each module of the packages.  A package whose
framework is not installed (a partial install with some extras only) is
skipped rather than reported as a collection error; the full set-up
(``scripts/setup.sh``) installs them all, so CI runs every example.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

ROOT = Path(__file__).resolve().parent
TESTS = ROOT / "tests"

#: package folder -> the modules its imports need beyond the base install.
NEEDS = {
    ROOT / "adapters" / "eoi_torch": ("torch",),
    ROOT / "adapters" / "eoi_keras": ("keras",),
    ROOT / "adapters" / "eoi_jax": ("jax", "flax", "optax"),
    ROOT / "benchmarks" / "eoi_bench": ("torch", "matplotlib", "sklearn", "scipy"),
}


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# Keras fixes its backend at import: choose one that is installed, unless the caller chose.
for _backend, _module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")):
    if _installed(_module):
        os.environ.setdefault("KERAS_BACKEND", _backend)
        break


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    for folder, modules in NEEDS.items():
        if collection_path == folder or folder in collection_path.parents:
            if not all(_installed(module) for module in modules):
                return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent):
    # ``--doctest-modules`` is for the packages' examples; the test modules hold none, and
    # collecting them twice would only import each one twice (and report a broken one twice).
    collected = yield
    if TESTS in file_path.parents:
        return [node for node in collected if not isinstance(node, DoctestModule)]
    return collected
