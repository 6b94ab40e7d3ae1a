"""eoi_torch.sparsify: whole models, masks that hold through training, the report."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import eoi_core
import eoi_torch

EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23, torch.float64: 2.0**-52}
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


class SmallCNN(nn.Module):
    """Conv2d, grouped Conv2d, grouped ConvTranspose2d, Conv1d, Conv3d and a Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.sequence = nn.Conv1d(8, 8, 5, padding=2)
        self.volume = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.grouped(torch.relu(self.stem(images))))
        hidden = torch.relu(self.up(hidden))  # (N, 8, 16, 16)
        hidden = torch.relu(self.sequence(hidden.flatten(2)))  # (N, 8, 256)
        hidden = torch.relu(self.volume(hidden.view(-1, 1, 8, 16, 16)))  # (N, 4, 8, 16, 16)
        return self.head(hidden.mean((2, 3, 4)))


MODELS = {"mlp": (mlp, (20,)), "cnn": (SmallCNN, (3, 8, 8))}
OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=5e-2, momentum=0.9, weight_decay=1e-2),
}


def layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: module for name, module in model.named_modules() if isinstance(module, eoi_torch.SUPPORTED_LAYERS)
    }


def train(model: nn.Module, input_shape: tuple[int, ...], optimizer, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, *input_shape, generator=generator)
    targets = torch.randint(0, model(inputs[:1]).shape[1], (16,), generator=generator)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


def centre_gap(weight: torch.Tensor, groups: int, transposed: bool, gain: float = 1.0) -> float:
    """Worst Gram deviation of the per-group centre maps y = M x, in float64, from the layer's own layout."""
    weight = weight.detach().double()
    centre = (slice(None), slice(None)) + tuple((k - 1) // 2 for k in weight.shape[2:])
    worst = 0.0
    for block in weight.chunk(groups, dim=0):
        matrix = block[centre].T if transposed else block[centre]
        gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
        worst = max(worst, float((gram - gain**2 * torch.eye(len(gram), dtype=gram.dtype)).abs().max()))
    return worst


@pytest.mark.parametrize("model_name", MODELS)
def test_adamw_keeps_every_masked_entry_exactly_zero(model_name):
    build, input_shape = MODELS[model_name]
    torch.manual_seed(0)
    model = build()
    report = eoi_torch.sparsify(model, 0.2)
    masks = eoi_torch.masks(model)
    initial = {name: module.weight.detach().clone() for name, module in layers(model).items()}
    assert sorted(masks) == sorted(initial) == sorted(row.name for row in report)

    train(model, input_shape, OPTIMIZERS["adamw"](model.parameters()), steps=50)

    grown = 0
    for name, module in layers(model).items():
        mask = masks[name]
        assert torch.equal(module.parametrizations.weight[0].mask, mask)  # the mask itself never moves
        assert not module.weight[~mask].any()
        assert not torch.equal(module.weight, initial[name])
        grown += int((module.weight[mask & (initial[name] == 0)] != 0).sum())
    assert grown > 0  # the zero-valued trainable entries do train


@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum"])
def test_other_optimizers_keep_the_masks(optimizer):
    torch.manual_seed(1)
    model = SmallCNN()
    eoi_torch.sparsify(model, 0.3, distribution="uniform")
    train(model, (3, 8, 8), OPTIMIZERS[optimizer](model.parameters()), steps=10)
    for name, mask in eoi_torch.masks(model).items():
        assert not model.get_submodule(name).weight[~mask].any()


def test_an_optimizer_built_before_sparsify_trains_the_masked_weights():
    torch.manual_seed(2)
    model = mlp()
    optimizer = OPTIMIZERS["adamw"](model.parameters())
    eoi_torch.sparsify(model, 0.25)
    before = model[2].weight.detach().clone()
    train(model, (20,), optimizer, steps=5)
    assert not torch.equal(model[2].weight, before)
    assert not model[2].weight[~eoi_torch.masks(model)["2"]].any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_mask_counts_and_orthogonality_at_init_in_the_layer_dtype(dtype):
    torch.manual_seed(3)
    model = SmallCNN().to(dtype)
    gain = nn.init.calculate_gain("relu")
    report = eoi_torch.sparsify(model, 0.15, gain=gain, verify="exact")
    masks = eoi_torch.masks(model)
    tolerance = max(2 * EPS[dtype], 1e-12) * gain**2
    for row in report:
        module = model.get_submodule(row.name)
        weight, mask, groups = module.weight, masks[row.name], row.groups
        assert weight.dtype == dtype and row.dtype == str(dtype).removeprefix("torch.")
        assert row.shape == tuple(weight.shape) and row.size == weight.numel()
        per_group = eoi_core.mask_count(row.density, weight.numel() // groups)
        assert [int(block.sum()) for block in mask.chunk(groups, dim=0)] == [per_group] * groups
        assert row.mask_count == int(mask.sum()) == groups * per_group
        assert not weight[~mask].any()
        gap = centre_gap(weight, groups, isinstance(module, TRANSPOSED), gain)
        assert gap <= tolerance
        # verify="exact": max |H^T H - g^2 I| relative to g^2, in float64.
        assert row.orthogonality_error == pytest.approx(gap / gain**2, rel=1e-6, abs=1e-15)


def test_at_init_a_same_padded_conv_stack_preserves_norms():
    # in <= out everywhere: Conv2d (H x) and grouped ConvTranspose2d (H^T x) are isometries at stride 1.
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, bias=False),
        nn.ConvTranspose2d(8, 16, 3, padding=1, groups=2, bias=False),
        nn.Conv2d(16, 16, 5, padding=2, groups=4, bias=False),
    ).double()
    eoi_torch.sparsify(model, 0.05, generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(4, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        outputs = model(inputs)
    norms = outputs.flatten(1).norm(dim=1), inputs.flatten(1).norm(dim=1)
    torch.testing.assert_close(*norms, rtol=1e-12, atol=0)


def test_seeds_reproduce_models_and_differ_between_seeds():
    def build(seed=None, generator=None):
        if seed is not None:
            torch.manual_seed(seed)
        model = SmallCNN()
        eoi_torch.sparsify(model, 0.2, generator=generator)
        return model.state_dict()

    def same(a, b):
        return all(torch.equal(a[key], b[key]) for key in a)

    assert same(build(seed=0), build(seed=0))
    assert not same(build(seed=0), build(seed=1))
    torch.manual_seed(5)
    first = build(generator=torch.Generator().manual_seed(9))
    torch.manual_seed(6)  # the generator, not the global state, decides the EOI weights and masks
    second = build(generator=torch.Generator().manual_seed(9))
    masks = [key for key in first if key.endswith(".mask") or key.endswith(".original")]
    assert masks and all(torch.equal(first[key], second[key]) for key in masks)


@pytest.mark.parametrize("distribution", ["uniform", "er", "erdos_renyi", "erk"])
def test_named_distributions_reach_the_model_density(distribution):
    model = SmallCNN()
    report = eoi_torch.sparsify(model, 0.3, distribution=distribution)
    expected = eoi_core.distributions.layer_densities(
        distribution, [row.shape for row in report], 0.3, groups=[row.groups for row in report]
    )
    assert [row.density for row in report] == expected
    # Per-layer rounding moves each layer by at most half an entry per group.
    assert abs(report.mask_count - 0.3 * report.size) <= sum(row.groups for row in report)


def test_a_mapping_sets_each_layer_density():
    model = mlp()
    report = eoi_torch.sparsify(model, None, distribution={"0": 0.5, "2": 0.1, "4": 1.0})
    assert [row.density for row in report] == [0.5, 0.1, 1.0]
    assert [row.mask_count for row in report] == [640, 410, 320]
    assert bool(eoi_torch.masks(model)["4"].all())


def test_include_exclude_by_type_and_name_and_biases_untouched():
    model = SmallCNN()
    parameters = {name: p.detach().clone() for name, p in model.named_parameters()}
    include = [nn.Conv2d, nn.ConvTranspose2d, "head"]
    report = eoi_torch.sparsify(model, 0.4, include=include, exclude="grouped")
    assert [row.name for row in report.sparsified] == ["stem", "up", "head"]
    assert [row.kind for row in report.sparsified] == ["Conv2d", "ConvTranspose2d", "Linear"]
    assert {row.name: row.reason for row in report.skipped} == dict.fromkeys(
        ["grouped", "sequence", "volume"], "not selected (include/exclude)")
    for name in ("grouped", "sequence", "volume"):
        module = model.get_submodule(name)
        assert not parametrize.is_parametrized(module)
        assert torch.equal(module.weight, parameters[f"{name}.weight"])
    for name, value in parameters.items():
        if name.endswith("bias"):
            assert torch.equal(model.get_submodule(name.rsplit(".", 1)[0]).bias, value)


def test_include_by_container_name():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16)))
    model.add_module("decoder", nn.Linear(16, 8))
    report = eoi_torch.sparsify(model, 0.5, include="encoder")
    assert [row.name for row in report.sparsified] == ["encoder.0", "encoder.1"]
    assert [(row.name, row.status) for row in report.skipped] == [("decoder", "skipped")]


def test_gain_callable_per_layer():
    model = mlp()
    relu = nn.init.calculate_gain("relu")
    report = eoi_torch.sparsify(model, 0.3, gain=lambda module: 1.0 if module is model[4] else relu)
    assert [row.gain for row in report] == [relu, relu, 1.0]
    for row in report:
        weight = model.get_submodule(row.name).weight
        assert centre_gap(weight, 1, False, row.gain) <= 2 * EPS[torch.float32] * row.gain**2


def test_assigning_a_weight_keeps_it_masked():
    model = mlp()
    eoi_torch.sparsify(model, 0.2)
    original = model[0].parametrizations.weight.original
    model[0].weight = torch.ones(64, 20)
    mask = eoi_torch.masks(model)["0"]
    assert model[0].parametrizations.weight.original is original  # still the optimizer's Parameter
    assert torch.equal(original, mask.float()) and torch.equal(model[0].weight, mask.float())


def test_one_multiply_per_weight_per_forward():
    model = mlp()  # Linear (addmm) and ReLU: its own forward multiplies nothing element-wise
    eoi_torch.sparsify(model, 0.2)
    inputs = torch.randn(4, 20)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(inputs)
    multiplies = [event for event in profile.events() if event.name == "aten::mul"]
    assert len(multiplies) == 3


def test_make_permanent_bakes_the_zeros_in():
    model = mlp()
    eoi_torch.sparsify(model, 0.2)
    effective = {name: module.weight.detach().clone() for name, module in layers(model).items()}
    assert eoi_torch.make_permanent(model) is model
    assert eoi_torch.masks(model) == {}
    for name, module in layers(model).items():
        assert type(module) is nn.Linear and isinstance(module.weight, nn.Parameter)
        assert torch.equal(module.weight, effective[name])
    fresh = mlp()
    fresh.load_state_dict(model.state_dict())  # plain keys again


def test_report_prints_an_aligned_table():
    report = eoi_torch.sparsify(SmallCNN(), 0.2)
    lines = str(report).splitlines()
    assert len(lines) == len(report) + 4  # header, rule, rows, rule, total
    header = ["layer", "type", "shape", "groups", "dtype", "density", "mask", "size", "gain", "ortho", "error", "note"]
    assert lines[0].split() == header
    for line, row in zip(lines[2:], report):
        assert line.split()[:4] == [row.name, row.kind, "x".join(map(str, row.shape)), str(row.groups)]
        assert str(row.mask_count) in line.split()
    # Right-aligned numbers end at the same column in every row.
    mask_end = lines[0].index("mask") + len("mask")
    assert all(line[:mask_end].endswith(str(row.mask_count)) for line, row in zip(lines[2:], report))
    assert lines[-1].split()[0] == "total" and str(report.mask_count) in lines[-1].split()
    assert report["up"] is report[2] and report["up"].shape == (16, 4, 3, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparsify_on_cuda_matches_cpu():
    cpu, cuda = mlp(), mlp().cuda()
    eoi_torch.sparsify(cpu, 0.2, generator=torch.Generator().manual_seed(0))
    eoi_torch.sparsify(cuda, 0.2, generator=torch.Generator().manual_seed(0))
    for key, value in cpu.state_dict().items():
        if key.endswith((".original", ".mask")):
            assert cuda.state_dict()[key].device.type == "cuda"
            assert torch.equal(cuda.state_dict()[key].cpu(), value)
