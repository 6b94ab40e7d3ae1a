"""``eoi bench sparse-training`` and ``eoi bench scheme-speed`` at tiny sizes: they run, print
their tables and write their files; the conv-net initialisation keeps every promise it states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eoi_core
from eoi_bench import conv_models
from eoi_core.cli import main

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def run_cli(*argv) -> int:
    return main([str(arg) for arg in argv])


def test_sparse_training_tiny_run_writes_table_json_and_plots(tmp_path, capsys):
    schemes = ["uniform/base", "erk/ai", "snip/eoi", "grasp/base", "synflow/ai", "sao"]
    assert run_cli("bench", "sparse-training", "--quick", "--models", "resnet", "--datasets", "digits",
                   "--depths", "--epochs", "1", "--schemes", *schemes, "--no-progress", "--out", tmp_path) == 0
    printed = capsys.readouterr().out
    assert "digits resnet" in printed and "Mean rank" in printed
    result = json.loads((tmp_path / "sparse_training.json").read_text())
    assert [run["scheme"] for run in result["runs"]] == schemes
    for run in result["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and len(run["loss_curve"]) == 1
    for name in ("sparse_training.md", "sparse_training_accuracy.png", "sparse_training_loss.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_scheme_speed_tiny_run(tmp_path, capsys):
    assert run_cli("bench", "scheme-speed", "--sizes", 32, "--densities", 0.1, "--ai-steps", 2,
                   "--repeats", 1, "--out", tmp_path) == 0
    assert "SAO / EOI" in capsys.readouterr().out
    rows = json.loads((tmp_path / "scheme_speed.json").read_text())
    assert rows[0]["sao_density"] == 0.125 and set(rows[0]["seconds"]) == {"EOI", "SAO", "AI"}
    assert (tmp_path / "scheme_speed.png").stat().st_size > 0


def test_bad_density_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("bench", "sparse-training", "--densities", "1.5")
    assert exit_info.value.code == 2
    assert "density must lie in (0, 1]" in capsys.readouterr().err


@pytest.fixture(scope="module")
def digits():
    return conv_models.load("digits")


@pytest.mark.parametrize("scheme", ["uniform/eoi", "erk/ai", "synflow/base", "sao"])
def test_conv_initialisation_keeps_masks_and_density(scheme, digits):
    model = conv_models.build("vanilla", digits, 16, 3)
    densities = conv_models.initialise(model, scheme, 0.1, digits, seed=0, ai_steps=5)
    masks = [m.parametrizations.weight[0].mask for m in model.modules() if hasattr(m, "parametrizations")]
    assert len(masks) == len(densities) == 4
    for module in model.modules():
        if hasattr(module, "parametrizations"):
            assert not module.weight[~module.parametrizations.weight[0].mask].any()
    if scheme != "sao":  # SAO rounds each layer to a density it can build
        assert abs(conv_models.realised_density(model) - 0.1) < 2e-3
    if scheme == "uniform/eoi":  # delta-orthogonal centres at the model's gain
        for conv in model.convs[1:]:
            weight = conv.weight.detach().double().numpy()
            assert eoi_core.orthogonality_error(weight, gain=model.gain) < 1e-5


def test_mnist1d_comes_from_the_generator_and_leaves_global_state_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    data = conv_models.load("mnist1d")
    assert np.random.random() == expected
    assert tuple(data.x_train.shape) == (4000, 1, 40) and tuple(data.x_test.shape) == (1000, 1, 40)
    assert data.x_train.dtype == torch.float32 and set(data.y_train.tolist()) == set(range(10))
