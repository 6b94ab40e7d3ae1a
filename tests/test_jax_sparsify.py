"""eoi_jax.sparsify + keep_masked: a sparse Flax model trained with optax keeps its zeros."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import eoi_core  # noqa: E402
import eoi_jax  # noqa: E402
from _strategies import orthogonality_bound  # noqa: E402
from eoi_core.layout import canonical_shape, from_channels_last  # noqa: E402

DENSITY = 0.3
GROUPS = {"Conv_1": 2}


class Net(nn.Module):
    """Conv 4 -> 8, grouped conv 8 -> 16 (2 groups), dense 16 -> 32 -> 32 -> 32 -> 16."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3), feature_group_count=2)(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(16)(x)


KERNELS = ["Conv_0", "Conv_1", "Dense_0", "Dense_1", "Dense_2", "Dense_3"]


@pytest.fixture(scope="module")
def dense_params():
    return Net().init(jax.random.key(0), jnp.ones((1, 8, 8, 4)))["params"]


@pytest.fixture(scope="module")
def sparse(dense_params):
    return eoi_jax.sparsify(dense_params, DENSITY, jax.random.key(1), groups=GROUPS)


def _groups(name: str) -> int:
    return GROUPS.get(name, 1)


def _mask_counts_per_block(mask: np.ndarray, groups: int) -> list[int]:
    per_group = mask.shape[-1] // groups  # Flax: groups split the last (out) axis
    return [int(mask[..., g * per_group : (g + 1) * per_group].sum()) for g in range(groups)]


def test_sparsify_replaces_kernels_with_erk_eoi_and_leaves_the_rest(dense_params, sparse):
    params, masks = sparse
    assert jax.tree.structure(params) == jax.tree.structure(dense_params) == jax.tree.structure(masks)
    shapes = [canonical_shape(dense_params[name]["kernel"].shape) for name in KERNELS]
    densities = eoi_core.distributions.layer_densities(
        "erk", shapes, DENSITY, groups=[_groups(name) for name in KERNELS]
    )
    trainable = 0
    for name, shape, density in zip(KERNELS, shapes, densities):
        kernel, mask = np.asarray(params[name]["kernel"]), np.asarray(masks[name]["kernel"])
        assert kernel.dtype == dense_params[name]["kernel"].dtype and mask.dtype == np.bool_
        groups = _groups(name)
        block_size = mask.size // groups
        assert _mask_counts_per_block(mask, groups) == [eoi_core.mask_count(density, block_size)] * groups
        assert not kernel[~mask].any()
        weight = from_channels_last(kernel)
        assert eoi_core.orthogonality_error(weight, groups=groups) <= orthogonality_bound("float32", 1.0, shape)
        trainable += int(mask.sum())
        # the bias is the one the model was initialised with, and is all trainable
        np.testing.assert_array_equal(np.asarray(params[name]["bias"]), np.asarray(dense_params[name]["bias"]))
        assert np.asarray(masks[name]["bias"]).all() and masks[name]["bias"].shape == params[name]["bias"].shape
    total = sum(int(np.prod(shape)) for shape in shapes)
    blocks = sum(_groups(name) for name in KERNELS)
    assert abs(trainable - DENSITY * total) <= 1 + 0.5 * blocks  # ERK's sum, then rounding per block


def test_sparsify_keys_reproduce_differ_and_each_layer_gets_its_own(dense_params, sparse):
    params, masks = sparse
    again_params, again_masks = eoi_jax.sparsify(dense_params, DENSITY, jax.random.key(1), groups=GROUPS)
    for left, right in [(params, again_params), (masks, again_masks)]:
        for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, other_masks = eoi_jax.sparsify(dense_params, DENSITY, jax.random.key(2), groups=GROUPS)
    for name in KERNELS:
        assert not np.array_equal(masks[name]["kernel"], other_masks[name]["kernel"])
    # Dense_1 and Dense_2 have the same shape and density but their own keys
    assert not np.array_equal(masks["Dense_1"]["kernel"], masks["Dense_2"]["kernel"])
    assert not np.array_equal(params["Dense_1"]["kernel"], params["Dense_2"]["kernel"])


def test_sparsify_under_jit_equals_eager(dense_params, sparse):
    jitted = jax.jit(lambda params, key: eoi_jax.sparsify(params, DENSITY, key, groups=GROUPS))
    for a, b in zip(jax.tree.leaves(jitted(dense_params, jax.random.key(1))), jax.tree.leaves(sparse)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sparsify_include_selects_layers_by_name(dense_params):
    key = jax.random.key(3)
    by_predicate = eoi_jax.sparsify(dense_params, 0.5, key, include=lambda name: name.startswith("Dense"))
    by_glob = eoi_jax.sparsify(dense_params, 0.5, key, include="Dense_*")
    by_exclude = eoi_jax.sparsify(dense_params, 0.5, key, exclude=["Conv_0", "Conv_1"])
    for params, masks in [by_predicate, by_glob, by_exclude]:
        for name in ["Conv_0", "Conv_1"]:
            np.testing.assert_array_equal(np.asarray(params[name]["kernel"]), np.asarray(dense_params[name]["kernel"]))
            assert np.asarray(masks[name]["kernel"]).all()
        for name in ["Dense_0", "Dense_1", "Dense_2", "Dense_3"]:
            assert not np.asarray(masks[name]["kernel"]).all()
    for other in (by_glob, by_exclude):
        for a, b in zip(jax.tree.leaves(by_predicate), jax.tree.leaves(other)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    report = by_glob.report
    assert [row.name for row in report.skipped] == ["Conv_0", "Conv_1"]
    assert {row.reason for row in report.skipped} == {"not selected (include/exclude)"}
    assert [row.name for row in report.sparsified] == ["Dense_0", "Dense_1", "Dense_2", "Dense_3"]


def test_sparsify_takes_full_variables_and_a_density_mapping(dense_params):
    variables = {"params": dense_params}
    mapping = {f"params/{name}": density for name, density in zip(KERNELS, [0.5, 0.4, 0.3, 0.2, 0.2, 1.0])}
    params, masks = eoi_jax.sparsify(
        variables, None, jax.random.key(4), distribution=mapping, groups={"params/Conv_1": 2}
    )
    for name, density in zip(KERNELS, mapping.values()):
        mask = np.asarray(masks["params"][name]["kernel"])
        groups = _groups(name)
        assert _mask_counts_per_block(mask, groups) == [eoi_core.mask_count(density, mask.size // groups)] * groups
    assert np.asarray(masks["params"]["Dense_3"]["kernel"]).all()  # density 1: a dense orthogonal head


def test_adamw_with_keep_masked_keeps_every_masked_entry_exactly_zero(sparse):
    start, masks = sparse
    adamw = optax.adamw(1e-2, weight_decay=0.1)
    optimizer = optax.chain(adamw, eoi_jax.keep_masked(masks))
    model = Net()
    inputs = jax.random.normal(jax.random.key(10), (64, 8, 8, 4))
    labels = jax.random.randint(jax.random.key(11), (64,), 0, 16)

    def loss_fn(params):
        logits = model.apply({"params": params}, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        # what adamw alone would do, for the control below (XLA shares the work)
        unmasked, _ = adamw.update(grads, opt_state[0], params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, unmasked

    params, opt_state = start, optimizer.init(start)
    losses = []
    for _ in range(50):
        params, opt_state, loss, unmasked = step(params, opt_state)
        losses.append(float(loss))

    assert losses[-1] < losses[0]
    for name in KERNELS:
        kernel, mask = np.asarray(params[name]["kernel"]), np.asarray(masks[name]["kernel"])
        assert (kernel[~mask] == 0).all()  # exactly zero, weight decay included
        # the control: adamw alone would have moved them (the zeros are kept, not lucky)
        assert (np.asarray(unmasked[name]["kernel"])[~mask] != 0).any()
        groups = _groups(name)
        nonzeros, budget = _mask_counts_per_block(kernel != 0, groups), _mask_counts_per_block(mask, groups)
        assert all(n <= b for n, b in zip(nonzeros, budget))
        # The zero-valued trainable entries of the mask do train.  They are most of a
        # conv kernel's budget (every off-centre tap); in a dense layer the Givens phase
        # takes nearly all of it, leaving a few entries that may sit on a dead ReLU unit.
        began_zero = mask & (np.asarray(start[name]["kernel"]) == 0)
        if name.startswith("Conv"):
            assert (kernel[began_zero] != 0).sum() >= 10
        assert not np.array_equal(np.asarray(params[name]["bias"]), np.asarray(start[name]["bias"]))
    # the masks travel in the optimizer state, unchanged
    for a, b in zip(jax.tree.leaves(opt_state[1].masks), jax.tree.leaves(masks)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_keep_masked_never_lets_nan_or_inf_through_a_masked_entry():
    masks = {"w": jnp.array([[True, False], [False, True]]), "b": jnp.array([True, True])}
    transform = eoi_jax.keep_masked(masks)
    state = transform.init({"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)})
    updates = {"w": jnp.array([[1.0, jnp.nan], [jnp.inf, jnp.nan]]), "b": jnp.array([2.0, -jnp.inf])}
    masked, _ = jax.jit(transform.update)(updates, state)
    np.testing.assert_array_equal(np.asarray(masked["w"]), [[1.0, 0.0], [0.0, np.nan]])
    np.testing.assert_array_equal(np.asarray(masked["b"]), [2.0, -np.inf])
