"""eoi_torch.sparsify on models written the way torch users write them: train, tie, save, load.

Each model is sparsified in both masking modes, trained a few steps, and then
checked: every off-mask weight is exactly zero, tied parameters are still one
tensor, and a fresh model loads the checkpoint.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import eoi_torch

pytestmark = pytest.mark.usefixtures("torch_one_thread")
MODES = ("parametrize", "hook")


class TinyLM(nn.Module):
    """A language model whose output head is tied to its token embedding."""

    def __init__(self, vocab: int = 50, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


class Tagger(nn.Module):
    """An LSTM tagger: embedding, bidirectional 2-layer LSTM, linear tag head."""

    def __init__(self, vocab: int = 40, tags: int = 6):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        self.tag = nn.Linear(48, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tag(self.lstm(self.embed(tokens))[0])


class Block(nn.Module):
    """A ResNet-style block with a depthwise conv, BatchNorm and a skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(torch.relu(self.norm(self.depthwise(x))))


def resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), Block(16), Block(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def batches(model_name: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if model_name == "lm":
        tokens = torch.randint(0, 50, (4, 9), generator=generator)
        return tokens[:, :-1], tokens[:, 1:]
    if model_name == "tagger":
        return torch.randint(0, 40, (4, 7), generator=generator), torch.randint(0, 6, (4, 7), generator=generator)
    return torch.randn(4, 3, 8, 8, generator=generator), torch.randint(0, 10, (4,), generator=generator)


BUILDERS = {"lm": TinyLM, "tagger": Tagger, "resnet": resnet}


def train(model: nn.Module, model_name: str, optimizer: torch.optim.Optimizer, steps: int = 3,
          clip: float | None = None) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        inputs, targets = batches(model_name, generator)
        optimizer.zero_grad()
        logits = model(inputs)
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


def resolve(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The module and parameter name of a mask key (``layer`` for ``weight``, else ``layer.param``)."""
    try:
        return (model.get_submodule(key) if key else model), "weight"
    except AttributeError:
        layer, _, parameter = key.rpartition(".")
        return (model.get_submodule(layer) if layer else model), parameter


def assert_masked(model: nn.Module) -> None:
    masks = eoi_torch.masks(model)
    assert masks
    for key, mask in masks.items():
        module, parameter = resolve(model, key)
        weight = getattr(module, parameter)
        assert weight.shape == mask.shape
        assert not weight.detach()[~mask].any(), key


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model_name", BUILDERS)
def test_train_then_save_and_load(model_name, mode, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS[model_name]()
    report = eoi_torch.sparsify(model, 0.3, mode=mode)
    assert report.sparsified and all(row.orthogonality_error < 1e-5 for row in report.sparsified)
    listed = {(row.name, row.parameter) for row in report}
    assert len(listed) == len(report)  # one row per weight matrix
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train(model, model_name, optimizer)
    assert_masked(model)

    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt")
    fresh = eoi_torch.prepare_for_load(BUILDERS[model_name](), state)
    fresh.load_state_dict(state)
    model.eval(), fresh.eval()
    inputs, _ = batches(model_name, torch.Generator().manual_seed(5))
    assert torch.equal(model(inputs), fresh(inputs))
    # The loaded model keeps its masks in training too.
    train(fresh.train(), model_name, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9))
    assert_masked(fresh)


def test_language_model_tie_is_skipped_by_default_and_shared_on_request():
    torch.manual_seed(0)
    model = TinyLM()
    report = eoi_torch.sparsify(model, 0.3)
    row = report["head"]
    assert row.status == "skipped" and "tied with 'embed.weight'" in row.reason
    assert model.head.weight is model.embed.weight
    # Every weight matrix is listed: embedding/head (one tied tensor), 2 x (in_proj, out_proj, linear1, linear2).
    assert len(report) == 1 + 2 * 4 and len(report.sparsified) == 8
    in_proj = [r for r in report if r.parameter == "in_proj_weight"]
    assert [r.groups for r in in_proj] == [3, 3] and all("q, k, v" in r.reason for r in in_proj)


@pytest.mark.parametrize("mode", MODES)
def test_a_shared_tie_has_one_mask_and_stays_tied_through_adamw(mode):
    torch.manual_seed(0)
    model = TinyLM()
    report = eoi_torch.sparsify(model, 0.3, tied="sparsify", mode=mode)
    assert report["head"].status == "sparsified" and "embed.weight" in report["head"].reason
    train(model, "lm", torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), steps=5)
    assert torch.equal(model.head.weight, model.embed.weight)
    if mode == "parametrize":
        assert model.head.parametrizations.weight.original is model.embed.parametrizations.weight.original
    else:
        assert model.head.weight is model.embed.weight
    mask = eoi_torch.masks(model)["head"]
    assert not model.embed.weight.detach()[~mask].any()
    # No token is left with an all-zero embedding by the (vocab, d) orthogonal head: its columns are orthonormal.
    assert (model.embed.weight.detach().abs().sum(1) > 0).float().mean() > 0.5


def test_lstm_gates_are_each_orthogonal():
    torch.manual_seed(0)
    lstm = nn.LSTM(12, 16, num_layers=1)
    report = eoi_torch.sparsify(lstm, 0.4, distribution="uniform", verify="exact")
    assert [r.parameter for r in report] == ["weight_ih_l0", "weight_hh_l0"]
    for row in report:
        assert row.groups == 4 and row.orthogonality_error < 1e-6
        for gate in getattr(lstm, row.parameter).detach().double().chunk(4):
            gram = gate.T @ gate if gate.shape[0] >= gate.shape[1] else gate @ gate.T
            assert torch.allclose(gram, torch.eye(len(gram), dtype=torch.float64), atol=1e-5)


def test_meta_device_flow_and_the_wrong_order():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    with pytest.raises(ValueError, match="meta device.*to_empty"):
        eoi_torch.sparsify(model, 0.2)
    with pytest.raises(ValueError, match="meta device"):
        eoi_torch.eoi_(model[0].weight, 0.2)
    model.to_empty(device="cpu")
    report = eoi_torch.sparsify(model, 0.2, distribution="uniform", verify="exact")
    mask = eoi_torch.masks(model)["0"]
    assert mask.dtype == torch.bool and int(mask.sum()) == round(0.2 * 64 * 32) == report["0"].mask_count
    assert report["0"].orthogonality_error < 1e-6


def test_make_permanent_on_a_deep_copy_leaves_the_original_training():
    for mode in MODES:
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        eoi_torch.sparsify(model, 0.5, mode=mode)
        dense = eoi_torch.make_permanent(copy.deepcopy(model))
        assert eoi_torch.masks(dense) == {} and type(dense[0]) is nn.Linear
        inputs = torch.randn(3, 8)
        assert torch.equal(model(inputs), dense(inputs))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        optimizer.zero_grad(), model(inputs).sum().backward(), optimizer.step()
        assert_masked(model)


def test_inference_mode_frozen_layers_and_parametrized_weights():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        eoi_torch.sparsify(model, 0.5)
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    report = eoi_torch.sparsify(model, 0.5)
    assert report["0"].status == "skipped" and "frozen" in report["0"].reason
    assert torch.equal(model[0].weight, frozen)
    with pytest.raises(ValueError, match="parametrized layer.weight"):
        eoi_torch.eoi_(model[1].weight, 0.5)
    with torch.inference_mode():
        layer = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="inference tensor"):
        eoi_torch.sparsify(nn.Sequential(layer), 0.5)


def test_patchify_convolutions_are_skipped_unless_asked():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.Conv2d(16, 16, 3, padding=1))
    report = eoi_torch.sparsify(model, 0.3)
    assert report["0"].status == "skipped" and "patchify" in report["0"].reason
    report = eoi_torch.sparsify(nn.Sequential(nn.Conv2d(3, 16, 4, stride=4)), 0.3, patchify="sparsify")
    assert report["0"].status == "sparsified"


def test_fused_blocks_by_option():
    model = nn.Sequential()
    model.add_module("qkv", nn.Linear(16, 48))
    report = eoi_torch.sparsify(model, 0.5, blocks={"qkv": 3}, verify="exact")
    assert report["qkv"].groups == 3 and report["qkv"].orthogonality_error < 1e-6
    with pytest.raises(ValueError, match="do not divide"):
        eoi_torch.sparsify(nn.Sequential(nn.Linear(16, 40)), 0.5, blocks={"0": 3})


def test_layers_are_bit_identical_for_any_number_of_workers():
    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(96, 96) for _ in range(6)], nn.LSTM(96, 32))

    states = []
    for workers in (1, 2, 3):
        model = build()
        torch.manual_seed(7)
        eoi_torch.sparsify(model, 0.2, workers=workers)
        states.append(model.state_dict())
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[key], states[0][key]) for key in state)


def test_scheme_callable_and_name():
    calls = []

    def dense_identity(shape, density, *, gain, dtype, rng, groups, center_density):
        import numpy as np

        calls.append(shape)
        weight = np.zeros(shape)
        weight[: min(shape), : min(shape)] = gain * np.eye(min(shape))
        return weight, np.ones(shape, dtype=bool)

    model = nn.Sequential(nn.Linear(8, 8))
    report = eoi_torch.sparsify(model, 0.5, scheme=dense_identity)
    assert calls == [(8, 8)] and report["0"].orthogonality_error is None
    assert torch.equal(model[0].weight, torch.eye(8))
    report = eoi_torch.sparsify(nn.Sequential(nn.Linear(8, 8)), 0.5, scheme="eoi")
    assert report["0"].orthogonality_error < 1e-6


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    ],
    ids=["sgd", "momentum", "adam", "adamw"],
)
def test_hook_mode_keeps_zeros_with_clipping_and_amp(optimizer):
    torch.manual_seed(0)
    model = resnet()
    eoi_torch.sparsify(model, 0.3, mode="hook")
    opt = optimizer(model.parameters())
    scaler = torch.amp.GradScaler("cpu")
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        inputs, targets = batches("resnet", generator)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(inputs), targets)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
    assert_masked(model)


def test_hook_mode_has_no_forward_multiply_and_keep_masks_rezeros():
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
    eoi_torch.sparsify(model, 0.2, mode="hook")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(torch.randn(4, 20))
    assert not [event for event in profile.events() if event.name == "aten::mul"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    eoi_torch.keep_masks(optimizer, model)
    with torch.no_grad():
        model[0].weight.add_(1.0)  # something moves off-mask weights
    optimizer.zero_grad(), model(torch.randn(4, 20)).sum().backward(), optimizer.step()
    assert_masked(model)


def test_the_report_of_a_hook_model_survives_a_buffer_round_trip():
    model = nn.Sequential(nn.Linear(8, 16))
    eoi_torch.sparsify(model, 0.5, mode="hook")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert set(state) == {"0.weight", "0.bias", "0.eoi_mask_weight"}
    copied = copy.deepcopy(model)
    optimizer = torch.optim.SGD(copied.parameters(), lr=1.0)
    optimizer.zero_grad(), copied(torch.randn(2, 8)).sum().backward(), optimizer.step()
    assert_masked(copied)  # the deep copy re-armed its gradient mask on its first forward


def test_named_schemes_report_no_orthogonality_and_a_failing_scheme_changes_nothing():
    pytest.importorskip("eoi_core.schemes")
    model = nn.Sequential(nn.Linear(16, 32), nn.Conv2d(4, 8, 3))
    report = eoi_torch.sparsify(model, 0.5, scheme="kaiming", distribution="uniform")
    assert [row.orthogonality_error for row in report] == [None, None]
    assert [row.mask_count for row in report] == [256, 144]
    assert_masked(model)
    fresh = nn.Sequential(nn.Linear(16, 32), nn.Conv2d(4, 8, 3))
    before = {key: value.clone() for key, value in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="layer '1' \\(Conv2d\\)"):
        eoi_torch.sparsify(fresh, 0.5, scheme="sao", distribution="uniform")  # no SAO density 0.5 for 8x4x3x3
    assert all(torch.equal(before[key], value) for key, value in fresh.state_dict().items())
    assert eoi_torch.masks(fresh) == {}


def test_separate_attention_projections_and_every_recurrent_kind():
    attention = nn.MultiheadAttention(16, 4, kdim=8, vdim=12, batch_first=True)
    report = eoi_torch.sparsify(attention, 0.5, distribution="uniform")
    assert [(row.parameter, row.groups) for row in report] == [
        ("q_proj_weight", 1), ("k_proj_weight", 1), ("v_proj_weight", 1), ("weight", 1)]
    query = torch.randn(2, 3, 16)
    output, _ = attention(query, torch.randn(2, 5, 8), torch.randn(2, 5, 12))
    assert output.shape == (2, 3, 16)
    for layer, groups in [(nn.RNN(8, 8), 1), (nn.GRU(8, 8), 3), (nn.LSTM(8, 8, proj_size=4), 4)]:
        report = eoi_torch.sparsify(layer, 0.6, distribution="uniform")
        assert {row.parameter: row.groups for row in report}.get("weight_ih_l0") == groups
        assert all(row.sparsified for row in report)
        layer(torch.randn(5, 2, 8))[0].sum().backward()
