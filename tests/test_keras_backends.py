"""eoi_keras on real models on the TensorFlow, JAX and PyTorch Keras backends.

Keras fixes its backend at import, so each backend runs ``keras_dropin_check.py``
in its own process (``KERAS_BACKEND=...``): EOI as the initializer of attention,
depthwise, LSTM and grouped conv kernels (the layer decides the layout); a
transformer block, a MobileNet-style CNN and an LSTM text classifier each
sparsified (exact masks, every block orthogonal), trained, and saved and
reloaded both ways (``model.save`` / ``load_model`` and ``save_weights`` /
``load_weights`` into a fresh model, sparsified or not); seeding (int, None +
``keras.utils.set_random_seed``, ``SeedGenerator`` in eager and fit-time
builds, ``tf.function`` on TensorFlow) and dtypes.  The processes run
concurrently; each asserts inside and fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eoi_core
from eoi_core.kernels import kernel_layout

BACKENDS = ("tensorflow", "jax", "torch")
SCRIPT = Path(__file__).with_name("keras_dropin_check.py")
TIMEOUT_S = 300
# Three processes share the test machine's cores: one compute thread each
# keeps them from oversubscribing it (the models are tiny).
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


class _Runs:
    """One check process per backend, started together; outputs collected once."""

    def __init__(self, workdirs: dict[str, Path]):
        self.outputs: dict[str, tuple[int, str]] = {}
        self.processes = {}
        for backend, workdir in workdirs.items():
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu", **ONE_THREAD)
            self.processes[backend] = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(workdir)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )

    def result(self, backend: str) -> dict:
        if backend not in self.outputs:
            process = self.processes[backend]
            try:
                output, _ = process.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
                pytest.fail(f"{backend}: drop-in checks timed out after {TIMEOUT_S} s\n{output[-4000:]}")
            self.outputs[backend] = (process.returncode, output)
        returncode, output = self.outputs[backend]
        assert returncode == 0, f"{backend}: drop-in checks failed\n{output[-6000:]}"
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        assert lines, f"{backend}: no RESULT line\n{output[-4000:]}"
        return json.loads(lines[-1][len("RESULT ") :])

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = _Runs({backend: tmp_path_factory.mktemp(f"keras_{backend}") for backend in BACKENDS})
    yield runs
    runs.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropin_checks_pass(runs, backend):
    assert runs.result(backend)["backend"] == backend


def test_seeded_results_agree_across_backends(runs):
    results = [runs.result(backend) for backend in BACKENDS]
    keys = ("initializer_layouts", "int_seed_kernel", "seed_generator", "model_transformer", "model_mobilenet",
            "model_lstm", "float16", "bfloat16", "float32", "float64")
    for key in keys:
        values = {result["backend"]: result[key] for result in results}
        assert len(set(values.values())) == 1, f"{key} differs across backends: {values}"
    # ...and the int-seeded kernel is the core's, in Keras layout.
    weight, _ = eoi_core.sparse_orthogonal((8, 4, 3, 3), 0.25, rng=7)
    kernel = kernel_layout((3, 3, 4, 8), "conv").from_canonical(weight)
    expected = hashlib.sha256(np.ascontiguousarray(kernel).tobytes()).hexdigest()[:16]
    assert results[0]["int_seed_kernel"] == expected
