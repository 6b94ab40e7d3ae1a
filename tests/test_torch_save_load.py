"""Sparsified models survive torch.save / torch.load, copying, and keep training with their masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import eoi_torch


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU()
        )
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Linear(4, 6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.up(self.features(images))).mean((2, 3)))


DATA = torch.Generator().manual_seed(0)
INPUTS = torch.randn(8, 3, 6, 6, generator=DATA)
TARGETS = torch.randint(0, 6, (8,), generator=DATA)


def train(model: nn.Module, steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(INPUTS), TARGETS).backward()
        optimizer.step()


def trained_checkpoint(tmp_path) -> tuple[Net, str]:
    torch.manual_seed(0)
    model = Net()
    eoi_torch.sparsify(model, 0.25)
    train(model, 10)
    path = str(tmp_path / "model.pt")
    torch.save(model.state_dict(), path)
    return model, path


def assert_same_model(loaded: nn.Module, saved: nn.Module) -> None:
    loaded_state, saved_state = loaded.state_dict(), saved.state_dict()
    assert loaded_state.keys() == saved_state.keys()
    for key, value in saved_state.items():
        assert torch.equal(loaded_state[key], value), key
    masks = eoi_torch.masks(saved)
    assert masks.keys() == eoi_torch.masks(loaded).keys()
    for name, mask in masks.items():
        assert torch.equal(eoi_torch.masks(loaded)[name], mask)
        assert torch.equal(loaded.get_submodule(name).weight, saved.get_submodule(name).weight)
    with torch.no_grad():
        assert torch.equal(loaded(INPUTS), saved(INPUTS))


def assert_masks_hold(model: nn.Module) -> None:
    for name, mask in eoi_torch.masks(model).items():
        assert not model.get_submodule(name).weight[~mask].any()


def test_the_state_dict_holds_masks_and_trainable_originals(tmp_path):
    model, path = trained_checkpoint(tmp_path)
    state = torch.load(path)
    for name in eoi_torch.masks(model):
        assert state[f"{name}.parametrizations.weight.0.mask"].dtype == torch.bool
        assert f"{name}.parametrizations.weight.original" in state
        assert f"{name}.weight" not in state


def test_prepare_for_load_then_load_state_dict(tmp_path):
    saved, path = trained_checkpoint(tmp_path)
    torch.manual_seed(123)  # the fresh model starts from other weights
    model = Net()
    state = torch.load(path)
    eoi_torch.prepare_for_load(model, state)
    model.load_state_dict(state)  # strict
    assert_same_model(model, saved)

    train(model, 10)
    assert_masks_hold(model)
    for name, mask in eoi_torch.masks(saved).items():
        assert torch.equal(eoi_torch.masks(model)[name], mask)


def test_sparsify_the_fresh_model_then_load_state_dict(tmp_path):
    saved, path = trained_checkpoint(tmp_path)
    model = Net()
    eoi_torch.sparsify(model, 0.25)  # any seed: load_state_dict replaces weights and masks
    model.load_state_dict(torch.load(path))
    assert_same_model(model, saved)
    train(model, 5)
    assert_masks_hold(model)


def test_without_preparation_loading_fails_loudly(tmp_path):
    _, path = trained_checkpoint(tmp_path)
    with pytest.raises(RuntimeError, match="parametrizations.weight.0.mask"):
        Net().load_state_dict(torch.load(path))


def test_prepare_for_load_rejects_a_mask_of_the_wrong_shape(tmp_path):
    _, path = trained_checkpoint(tmp_path)
    state = torch.load(path)
    state["head.parametrizations.weight.0.mask"] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="head"):
        eoi_torch.prepare_for_load(Net(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_checkpoint_loads_into_a_cuda_model(tmp_path):
    saved, path = trained_checkpoint(tmp_path)
    state = torch.load(path, map_location="cpu")
    model = eoi_torch.prepare_for_load(Net().cuda(), state)
    model.load_state_dict(state)
    for name, mask in eoi_torch.masks(saved).items():
        assert eoi_torch.masks(model)[name].device.type == "cuda"
        assert torch.equal(eoi_torch.masks(model)[name].cpu(), mask)
        assert torch.equal(model.get_submodule(name).weight.cpu(), saved.get_submodule(name).weight)


def test_deepcopy_and_permanent_checkpoint(tmp_path):
    model, _ = trained_checkpoint(tmp_path)
    clone = copy.deepcopy(model)
    assert_same_model(clone, model)
    train(clone, 3)  # the copy trains on its own parameters
    assert not torch.equal(clone.head.weight, model.head.weight)
    assert_masks_hold(clone)

    eoi_torch.make_permanent(model)
    path = str(tmp_path / "permanent.pt")
    torch.save(model.state_dict(), path)
    plain = Net()
    plain.load_state_dict(torch.load(path))
    with torch.no_grad():
        assert torch.equal(plain(INPUTS), model(INPUTS))
