"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny torch models on one intra-op thread, then restore the setting.

    Intra-op threads only add hand-off cost for such small tensors, and spin
    badly on a busy 2-core machine.
    """
    import torch  # imported here so that non-torch test runs never load it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
