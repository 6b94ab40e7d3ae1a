"""eoi_torch.eoi_: one tensor, in place, the torch.nn.init way."""

from __future__ import annotations

import math
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import eoi_core
import eoi_torch
from _helpers import assert_orthogonal, off_centre_taps

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("features", [(32, 96), (96, 32), (48, 48)])
def test_linear_weight_is_sparse_orthogonal_in_place(dtype, features):
    layer = nn.Linear(*features, dtype=dtype)
    weight, pointer = layer.weight, layer.weight.data_ptr()
    mask = eoi_torch.eoi_(layer.weight, 0.2, gain=1.5)

    assert layer.weight is weight and weight.data_ptr() == pointer
    assert weight.is_leaf and weight.requires_grad and weight.grad_fn is None
    assert mask.dtype == torch.bool and mask.shape == weight.shape and mask.device == weight.device
    assert int(mask.sum()) == eoi_core.mask_count(0.2, weight.numel())
    assert not weight.detach()[~mask].any()
    assert_orthogonal(weight.detach().double(), gain=1.5, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layer",
    [
        lambda dtype: nn.Conv1d(6, 12, 5, dtype=dtype),
        lambda dtype: nn.Conv2d(8, 12, 3, groups=4, dtype=dtype),
        lambda dtype: nn.Conv2d(12, 4, (3, 4), groups=2, dtype=dtype),
        lambda dtype: nn.Conv3d(4, 6, 3, dtype=dtype),
    ],
    ids=["conv1d", "conv2d-groups4", "conv2d-wide-groups2", "conv3d"],
)
def test_conv_weight_is_delta_orthogonal_per_group(dtype, layer):
    conv = layer(dtype)
    mask = eoi_torch.eoi_(conv.weight, 0.1, groups=conv.groups)

    block = conv.weight[0 : conv.weight.shape[0] // conv.groups].numel()
    for group in mask.chunk(conv.groups, dim=0):
        assert int(group.sum()) == eoi_core.mask_count(0.1, block)
    assert not conv.weight.detach()[~mask].any()
    assert not off_centre_taps(conv.weight.detach().double()).any()
    assert_orthogonal(conv.weight.detach().double(), groups=conv.groups, dtype=dtype)


@pytest.mark.parametrize("channels, groups", [((4, 8), 1), ((6, 12), 3), ((12, 6), 2)])
def test_conv_transpose_weight_passed_as_is(channels, groups):
    # Weight (in, out // g, k, k); each group's centre H is (in/g, out/g) and the layer maps x -> H^T x.
    layer = nn.ConvTranspose2d(*channels, 3, padding=1, groups=groups, bias=False, dtype=torch.float64)
    mask = eoi_torch.eoi_(layer.weight, 0.3, groups=groups)
    assert int(mask.sum()) == groups * eoi_core.mask_count(0.3, layer.weight.numel() // groups)
    assert_orthogonal(layer.weight.detach(), groups=groups, transposed=True)

    # Stride 1, 'same' padding, only the centre tap: the layer is H^T at every position, so it
    # preserves norms when in <= out; when in > out its adjoint (conv2d with the same weight, H) does.
    inputs = torch.randn(3, channels[0], 5, 5, dtype=torch.float64)
    adjoint_inputs = torch.randn(3, channels[1], 5, 5, dtype=torch.float64)
    with torch.no_grad():
        outputs = layer(inputs)
        adjoint_outputs = nn.functional.conv2d(adjoint_inputs, layer.weight, padding=1, groups=groups)
    norm = lambda x: x.flatten(1).norm(dim=1)  # noqa: E731
    if channels[0] <= channels[1]:
        torch.testing.assert_close(norm(outputs), norm(inputs), rtol=1e-12, atol=0)
    else:
        torch.testing.assert_close(norm(adjoint_outputs), norm(adjoint_inputs), rtol=1e-12, atol=0)
        assert (norm(outputs) < norm(inputs)).all()  # a projection onto fewer channels loses norm


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_the_float64_result_rounded_once(dtype):
    # Same seed, same rotations: the float16/bfloat16 weight must be the float64 one cast once.
    reference, low = torch.empty(40, 24, dtype=torch.float64), torch.empty(40, 24, dtype=dtype)
    torch.manual_seed(3)
    reference_mask = eoi_torch.eoi_(reference, 0.15)
    torch.manual_seed(3)
    mask = eoi_torch.eoi_(low, 0.15)
    numpy_dtype = ml_dtypes.bfloat16 if dtype == torch.bfloat16 else np.float16
    expected = reference.numpy().astype(numpy_dtype).astype(np.float32)
    assert torch.equal(mask, reference_mask)
    assert np.array_equal(low.float().numpy(), expected)


def test_works_under_no_grad_on_a_plain_and_a_non_contiguous_tensor():
    plain = torch.empty(16, 8)
    strided = torch.empty(8, 16).T  # shape (16, 8), not contiguous
    with torch.no_grad():
        for tensor in (plain, strided):
            mask = eoi_torch.eoi_(tensor, 0.25)
            assert int(mask.sum()) == eoi_core.mask_count(0.25, 128)
            assert_orthogonal(tensor.double(), dtype=torch.float32)
    assert not strided.is_contiguous()


def test_manual_seed_reproduces_and_different_seeds_differ():
    def draw(seed):
        torch.manual_seed(seed)
        tensor = torch.empty(24, 16)
        return tensor, eoi_torch.eoi_(tensor, 0.3)

    first, first_mask = draw(0)
    again, again_mask = draw(0)
    other, other_mask = draw(1)
    assert torch.equal(first, again) and torch.equal(first_mask, again_mask)
    assert not torch.equal(first_mask, other_mask) and not torch.equal(first, other)


def test_global_rng_advances_between_calls():
    torch.manual_seed(0)
    first, second = torch.empty(24, 16), torch.empty(24, 16)
    eoi_torch.eoi_(first, 0.3)
    eoi_torch.eoi_(second, 0.3)
    assert not torch.equal(first, second)


def test_generator_is_honoured_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    tensors = []
    for _ in range(2):
        tensor = torch.empty(24, 16)
        eoi_torch.eoi_(tensor, 0.3, generator=torch.Generator().manual_seed(7))
        tensors.append(tensor)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(*tensors)

    other = torch.empty(24, 16)
    eoi_torch.eoi_(other, 0.3, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(tensors[0], other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_gets_the_cpu_result_and_a_cuda_mask():
    cpu, cuda = torch.empty(64, 32), torch.empty(64, 32, device="cuda")
    cpu_mask = eoi_torch.eoi_(cpu, 0.1, generator=torch.Generator().manual_seed(0))
    cuda_mask = eoi_torch.eoi_(cuda, 0.1, generator=torch.Generator().manual_seed(0))
    assert cuda_mask.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu) and torch.equal(cuda_mask.cpu(), cpu_mask)


@st.composite
def dense_cases(draw):
    rows, cols = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    floor = eoi_core.min_density((rows, cols))
    density = draw(st.floats(floor, 1.0, allow_subnormal=False).map(lambda d: min(1.0, math.ceil(d * rows * cols) / (rows * cols))))
    return rows, cols, density, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**32))


@settings(max_examples=40, deadline=None)
@given(dense_cases())
def test_any_feasible_dense_case(case):
    rows, cols, density, dtype, seed = case
    tensor = torch.empty(rows, cols, dtype=dtype)
    mask = eoi_torch.eoi_(tensor, density, generator=torch.Generator().manual_seed(seed))
    assert int(mask.sum()) == eoi_core.mask_count(density, rows * cols)
    assert not tensor[~mask].any()
    assert_orthogonal(tensor.double(), dtype=dtype)


def test_importing_eoi_torch_imports_only_torch_and_the_core():
    # Numba loads on the first EOI call, not on import (as for eoi_core); no other framework comes along.
    code = (
        "import sys, eoi_torch; "
        "heavy = {'numba', 'llvmlite', 'ml_dtypes', 'scipy', 'tensorflow', 'keras', 'jax'}; "
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
