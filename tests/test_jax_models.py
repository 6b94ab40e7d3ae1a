"""eoi_jax on real Flax models: an NNX transformer block and CNN, optax composition (sharding: test_jax_sharding)."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import eoi_core  # noqa: E402
import eoi_jax  # noqa: E402
from eoi_core.kernels import kernel_layout  # noqa: E402


class Block(nnx.Module):
    """Pre-norm transformer block: 4-head attention (32 wide) and a 32 -> 64 -> 32 MLP."""

    def __init__(self, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(32, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(4, 32, decode=False, rngs=rngs)
        self.up = nnx.Linear(32, 64, rngs=rngs)
        self.down = nnx.Linear(64, 32, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm(x))
        return x + self.down(nnx.relu(self.up(x)))


class CNN(nnx.Module):
    """Conv 3 -> 16, depthwise 16 -> 16, grouped 16 -> 32 (4 groups), dense head."""

    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 16, (3, 3), rngs=rngs)
        self.depthwise = nnx.Conv(16, 16, (3, 3), feature_group_count=16, rngs=rngs)
        self.grouped = nnx.Conv(16, 32, (3, 3), feature_group_count=4, rngs=rngs)
        self.head = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.grouped(nnx.relu(self.depthwise(nnx.relu(self.stem(x))))))
        return self.head(x.mean(axis=(1, 2)))


LAYOUTS = {  # what each kernel is, independently of the adapter's discovery
    "attn/query": ("einsum", {"groups": 4}),
    "attn/key": ("einsum", {"groups": 4}),
    "attn/value": ("einsum", {"groups": 4}),
    "attn/out": ("einsum", {"in_axes": 2}),
    "up": ("dense", {}),
    "down": ("dense", {}),
    "stem": ("conv", {}),
    "depthwise": ("conv", {"groups": 16}),
    "grouped": ("conv", {"groups": 4}),
    "head": ("dense", {}),
}


def _kernel(model, name):
    node = model
    for part in name.split("/"):
        node = getattr(node, part)
    return node.kernel


def _check_exact(model, masks, report, names):
    """Each kernel orthogonal block by block in its own layout, exact mask counts per block."""
    rows = {row.name: row for row in report.sparsified}
    assert sorted(rows) == sorted(names)
    for name in names:
        kind, options = LAYOUTS[name]
        kernel = np.asarray(_kernel(model, name)[...])
        layout = kernel_layout(kernel.shape, kind, **options)
        mask = layout.to_canonical(np.asarray(masks_at(masks, name)))
        weight = layout.to_canonical(kernel)
        row = rows[name]
        assert row.groups == layout.groups
        assert eoi_core.orthogonality_error(weight, groups=layout.groups) < 1e-5
        per_block = mask.reshape(layout.groups, -1).sum(axis=1)
        expected = eoi_core.mask_count(row.density, mask.size // layout.groups)
        assert per_block.tolist() == [expected] * layout.groups
        assert not weight[~mask].any()
        # no dead rows: every output row of every block carries its orthogonal row
        centre = weight if weight.ndim == 2 else weight[(...,) + tuple((k - 1) // 2 for k in weight.shape[2:])]
        assert (np.abs(centre).sum(axis=1) > 0).sum() >= min(centre.shape[0], centre.shape[1] * layout.groups)


def masks_at(masks, name):
    node = masks
    for part in name.split("/"):
        node = node[part]
    return node["kernel"]


def test_nnx_transformer_block_attention_is_orthogonal_per_head():
    model = Block(nnx.Rngs(0))
    result = eoi_jax.sparsify(model, 0.3, jax.random.key(1))
    assert result.params is model  # updated in place, like nnx.update
    _check_exact(model, result.masks, result.report, ["attn/query", "attn/key", "attn/value", "attn/out", "up", "down"])
    assert result.report["attn/query"].reason == "4 heads"
    # the attention output keeps the residual stream's norm scale: every head's (8, 32) block has orthonormal rows
    query = np.asarray(model.attn.query.kernel[...]).reshape(32, 4, 8)
    for head in range(4):
        np.testing.assert_allclose(query[:, head, :].T @ query[:, head, :], np.eye(8), atol=1e-5)
    assert model(jnp.ones((2, 5, 32))).shape == (2, 5, 32)


def test_nnx_state_with_graphdef_equals_module_and_without_it_skips_rank_3_kernels():
    graphdef, state = nnx.split(Block(nnx.Rngs(0)))
    typed = eoi_jax.sparsify(state, 0.3, jax.random.key(1), model=graphdef)
    module = Block(nnx.Rngs(0))
    direct = eoi_jax.sparsify(module, 0.3, jax.random.key(1))
    merged = nnx.merge(graphdef, typed.params)
    np.testing.assert_array_equal(merged.attn.query.kernel[...], module.attn.query.kernel[...])
    untyped = eoi_jax.sparsify(state, 0.3, jax.random.key(1))
    skipped = {row.name: row.reason for row in untyped.report.skipped}
    assert set(skipped) == {"attn/query", "attn/key", "attn/value", "attn/out"}
    assert all("layout unknown: pass model=" in reason for reason in skipped.values())
    assert jax.tree.structure(direct.masks) == jax.tree.structure(nnx.as_pure(nnx.state(module, nnx.Param)))


def test_nnx_cnn_depthwise_and_grouped_convs_are_orthogonal_per_group_and_train_with_nnx_optimizer():
    model = CNN(nnx.Rngs(0))
    params, masks = eoi_jax.sparsify(model, 0.25, jax.random.key(2), center_density="sqrt")
    _check_exact(model, masks, eoi_jax.sparsify(CNN(nnx.Rngs(0)), 0.25, jax.random.key(2)).report, list(
        ["stem", "depthwise", "grouped", "head"]))
    optimizer = nnx.Optimizer(model, optax.chain(optax.adamw(1e-2), eoi_jax.keep_masked(masks)), wrt=nnx.Param)
    x, labels = jax.random.normal(jax.random.key(3), (4, 6, 6, 3)), jnp.arange(4)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(3)]
    assert losses[-1] < losses[0]
    for name in ["stem", "depthwise", "grouped", "head"]:
        assert not np.asarray(_kernel(model, name)[...])[~np.asarray(masks_at(masks, name))].any()


def test_keep_masked_composes_with_multi_transform_and_masked():
    params = {"conv": {"kernel": jnp.zeros((3, 3, 2, 4)), "bias": jnp.zeros(4)}, "head": {"kernel": jnp.zeros((4, 2))}}
    masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    masks["conv"]["kernel"] = masks["conv"]["kernel"].at[0].set(False)
    masks["head"]["kernel"] = masks["head"]["kernel"].at[1].set(False)
    labels = {"conv": {"kernel": "sparse", "bias": "plain"}, "head": {"kernel": "sparse"}}
    grads = jax.tree.map(jnp.ones_like, params)
    for tx in [
        optax.multi_transform(
            {"sparse": optax.chain(optax.sgd(1.0), eoi_jax.keep_masked(masks)), "plain": optax.sgd(1.0)}, labels
        ),
        optax.masked(
            optax.chain(optax.sgd(1.0), eoi_jax.keep_masked(masks)), jax.tree.map(lambda l: l == "sparse", labels)
        ),
    ]:
        state = tx.init(params)
        updates, _ = jax.jit(tx.update)(grads, state, params)
        assert not updates["conv"]["kernel"][0].any() and updates["conv"]["kernel"][1:].all()
        assert not updates["head"]["kernel"][1].any() and updates["head"]["kernel"][0].all()
        assert np.asarray(updates["conv"]["bias"]).all()
