"""SNIP, GraSP and SynFlow against hand computations on a 2-layer linear net; densities and Base masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import eoi_core
import eoi_torch
from eoi_core.distributions import from_counts, top_k_masks
from eoi_torch import pai

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7, bias=False), nn.Linear(7, 3, bias=False)).double()


def mse(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).sum()


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 5, generator=generator, dtype=torch.float64),
            torch.randn(4, 3, generator=generator, dtype=torch.float64))


def hand_gradients(w1: np.ndarray, w2: np.ndarray, x: np.ndarray, y: np.ndarray):
    """dL/dW of L = 1/2 ||x W1^T W2^T - y||^2 (rows are samples), by the chain rule."""
    hidden = x @ w1.T
    residual = hidden @ w2.T - y
    return w2.T @ residual.T @ x, residual.T @ hidden


def weights(model):
    return model[0].weight.detach().numpy().copy(), model[1].weight.detach().numpy().copy()


def test_snip_is_abs_gradient_times_weight():
    model = two_layer()
    x, y = batch()
    scores = pai.snip(model, (x, y), mse).scores(["0", "1"])
    w1, w2 = weights(model)
    g1, g2 = hand_gradients(w1, w2, x.numpy(), y.numpy())
    assert np.allclose(scores["0"].numpy(), np.abs(g1 * w1))
    assert np.allclose(scores["1"].numpy(), np.abs(g2 * w2))


def test_grasp_is_minus_weight_times_hessian_gradient():
    model = two_layer()
    x, y = batch()
    scores = pai.grasp(model, (x, y), mse).scores(["0", "1"])
    w1, w2 = weights(model)
    g1, g2 = hand_gradients(w1, w2, x.numpy(), y.numpy())
    # H g by central differences of the hand gradient along g (exact up to O(eps^2); L is quartic).
    eps = 1e-5
    plus = hand_gradients(w1 + eps * g1, w2 + eps * g2, x.numpy(), y.numpy())
    minus = hand_gradients(w1 - eps * g1, w2 - eps * g2, x.numpy(), y.numpy())
    hg1, hg2 = ((p - m) / (2 * eps) for p, m in zip(plus, minus))
    assert np.allclose(scores["0"].numpy(), -w1 * hg1, rtol=1e-6, atol=1e-8)
    assert np.allclose(scores["1"].numpy(), -w2 * hg2, rtol=1e-6, atol=1e-8)


def test_synflow_is_the_path_norm_sensitivity():
    model = two_layer()
    scores = pai.synflow(model, torch.zeros(2, 5)).scores(["0", "1"])
    w1, w2 = (np.abs(w) for w in weights(model))
    # R = 1^T |W2| |W1| 1, so dR/dW1[i, j] = (1^T |W2|)_i and dR/dW2[k, i] = (|W1| 1)_i.
    expected1 = w1 * w2.sum(axis=0)[:, None]
    expected2 = w2 * w1.sum(axis=1)[None, :]
    assert np.allclose(scores["0"].numpy(), expected1)
    assert np.allclose(scores["1"].numpy(), expected2)


def test_one_synflow_round_is_the_one_shot_top_k():
    model = two_layer()
    method = pai.synflow(model, torch.zeros(1, 5), iterations=1)
    scores = method.scores(["0", "1"])
    expected = top_k_masks([scores["0"].numpy(), scores["1"].numpy()], 0.4)
    masks = method.masks(0.4, ["0", "1"])
    assert np.array_equal(masks["0"], expected[0]) and np.array_equal(masks["1"], expected[1])


def test_iterative_synflow_masks_are_nested_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    method = pai.synflow(model, torch.zeros(1, 16), iterations=20)
    masks = method.masks(0.1, ["0", "2", "4"])
    total = 16 * 32 + 32 * 32 + 32 * 4
    assert sum(int(m.sum()) for m in masks.values()) == eoi_core.mask_count(0.1, total)


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_the_grasp_and_snip_masks_keep_the_right_end(method):
    model = two_layer()
    x, y = batch()
    scorer = getattr(pai, method)(model, (x, y), mse)
    scores = scorer.scores(["0", "1"])
    masks = scorer.masks(0.5, ["0", "1"])
    kept = np.concatenate([scores[n].numpy()[masks[n]] for n in "01"])
    dropped = np.concatenate([scores[n].numpy()[~masks[n]] for n in "01"])
    if method == "snip":
        assert kept.min() >= dropped.max()
    else:  # GraSP keeps the lowest S
        assert kept.max() <= dropped.min()


def test_densities_respect_floors_and_keep_the_weighted_mean_exact():
    # A layer whose weights are tiny gets (almost) nothing from SNIP: raised to its floor.
    model = two_layer()
    with torch.no_grad():
        model[1].weight.mul_(1e-6)
    x, y = batch()
    scorer = pai.snip(model, (x, y), mse)
    shapes, names = [(7, 5), (3, 7)], ["0", "1"]
    densities = scorer(shapes, 0.5, names=names)
    floors = [eoi_core.min_density(s) for s in shapes]
    assert all(d >= f - 1e-12 for d, f in zip(densities, floors))
    sizes = [35, 21]
    assert abs(sum(d * n for d, n in zip(densities, sizes)) - 0.5 * 56) < 1e-9
    counts = [int(m.sum()) for m in scorer.masks(0.5, names).values()]
    assert densities == from_counts(counts, shapes, 0.5)


def test_scoring_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 10, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, targets = torch.randn(6, 1, 10), torch.randint(0, 4, (6,))
    for scorer in (pai.snip(model, (inputs, targets), nn.functional.cross_entropy),
                   pai.grasp(model, (inputs, targets), nn.functional.cross_entropy),
                   pai.synflow(model, inputs, iterations=5)):
        scorer.masks(0.3, ["0", "4"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_sparsify_takes_a_pai_distribution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    inputs, targets = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    report = eoi_torch.sparsify(model, 0.1, distribution=pai.snip(model, (inputs, targets),
                                                                  nn.functional.cross_entropy))
    assert abs(report.density - 0.1) < 1e-3
    assert all(row.orthogonality_error < 1e-5 for row in report)


def test_apply_base_keeps_the_default_values_on_the_pai_mask():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 6))
    dense = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    scorer = pai.synflow(model, torch.zeros(1, 12), iterations=10)
    report = pai.apply_base(model, scorer, 0.2)
    masks = eoi_torch.masks(model)
    assert sum(row.mask_count for row in report) == eoi_core.mask_count(0.2, 12 * 24 + 24 * 6)
    for layer, original in zip(("0", "2"), dense):
        weight = model.get_submodule(layer).weight
        assert torch.equal(weight, original * masks[layer])
    assert [row.reason for row in report] == ["synflow mask on the default init"] * 2


def test_errors_name_the_problem():
    model = two_layer()
    x, y = batch()
    scorer = pai.snip(model, (x, y), mse)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        scorer.masks(0.5, ["nope"])
    with pytest.raises(ValueError, match="needs the layer names"):
        scorer([(7, 5)], 0.5)
    with pytest.raises(TypeError, match="batch must be a pair"):
        pai.snip(model, x, mse)
    with pytest.raises(TypeError, match="example_input"):
        pai.synflow(model, [1, 2])
    with pytest.raises(ValueError, match="different model"):
        pai.apply_base(two_layer(), scorer, 0.5)
