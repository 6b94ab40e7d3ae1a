"""Classification data for the training benchmarks, offline only.

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 64 features,
  10 classes), split 80/20 stratified with a fixed seed.
* ``mnist``: a local ``.npz`` the user passes (the Keras layout: arrays
  ``x_train``, ``y_train``, ``x_test``, ``y_test``); nothing is ever downloaded.

Features are scaled to [0, 1] and standardised with the *training* mean and
standard deviation (per feature; constant pixels keep a standard deviation
of 1 so they stay zero instead of dividing by zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load_digits", "load_mnist", "load"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    """A standardised train/test split.

    Attributes
    ----------
    name : str
    x_train, x_test : float32 ndarray ``(samples, features)``
    y_train, y_test : int64 ndarray ``(samples,)`` with labels in ``range(classes)``
    classes : int
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-8] = 1.0  # constant pixels (the digits' borders) stay at zero
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load_digits() -> Dataset:
    """The scikit-learn digits, split 80/20 (stratified, seed 0) and standardised."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = bunch.data.astype(np.float64) / 16.0
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    x_train, x_test = _standardise(x_train, x_test)
    return Dataset("digits", x_train, y_train, x_test, y_test, 10)


def load_mnist(path: str | Path) -> Dataset:
    """MNIST from a local ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Raises
    ------
    ValueError
        If the file is missing, unreadable or lacks one of the four arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--mnist must be a local .npz file, {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # np.load raises several types for a corrupt file
        raise ValueError(f"--mnist {str(path)!r} is not a readable .npz file: {error}") from None
    needed = ("x_train", "y_train", "x_test", "y_test")
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise ValueError(
            f"--mnist {str(path)!r} lacks the arrays {missing}; expected {list(needed)} "
            "(the layout of keras.datasets.mnist's mnist.npz)"
        )
    x_train = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float64) / 255.0
    x_test = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float64) / 255.0
    y_train = arrays["y_train"].astype(np.int64).ravel()
    y_test = arrays["y_test"].astype(np.int64).ravel()
    x_train, x_test = _standardise(x_train, x_test)
    classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset("mnist", x_train, y_train, x_test, y_test, classes)


def load(mnist: str | Path | None = None) -> Dataset:
    """``load_mnist(mnist)`` when a path is given, else :func:`load_digits`."""
    return load_digits() if mnist is None else load_mnist(mnist)
