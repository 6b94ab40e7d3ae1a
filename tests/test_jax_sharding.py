"""eoi_jax on a JAX mesh: every device builds only its shard, bit-identical to the unsharded weight.

The mesh tests run in fresh interpreters with 4 or 8 fake CPU devices (XLA
reads ``--xla_force_host_platform_device_count`` at import) and read their
stderr, where XLA's C++ log says ``Involuntary full rematerialization`` when a
whole kernel built on device 0 is split afterwards.  Each script spies on the
core's public ``eoi_core.sparse_orthogonal_shard`` to see what every host call
built.  The sharding reaches the initializer while tracing (``out_sharding=``,
Flax annotations: ``shard_map``) or only at compile time (``jit``'s
``out_shardings`` alone, ``jit(sparsify)`` over ``Auto`` axes, an uneven split,
``vmap`` over keys: ``custom_partitioning``, Shardy and GSPMD); the scripts
cover both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from eoi_core.kernels import kernel_layout  # noqa: E402
from eoi_jax.initializers import _request, host_eoi  # noqa: E402
from eoi_jax.shards import TRUE_SHARD_LAYOUTS, canonical_cover, host_shard  # noqa: E402

REMAT = "Involuntary full rematerialization"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "sharding.md"

# (Flax shape, layout, options): one kernel of each layout, small enough for many draws.
KERNELS = [
    ((12, 20), "dense", {}),
    ((10, 24), "gates", {"gates": 4}),
    ((3, 3, 6, 8), "conv", {}),
    ((3, 4, 12), "conv", {"groups": 3}),
    ((3, 3, 8, 4), "conv_transpose", {}),
    ((3, 3, 6, 2), "depthwise", {}),
    ((16, 4, 6), "einsum", {"groups": 4}),
    ((4, 6, 20), "einsum", {"in_axes": 2}),
    ((3, 1, 8, 2), "einsum", {"in_axes": 2, "groups": 2}),
]


@st.composite
def rectangles(draw, shape):
    """A rectangle (slices, empty ones included) inside ``shape``."""
    index = []
    for size in shape:
        start = draw(st.integers(0, size))
        index.append(slice(start, draw(st.integers(start, size))))
    return tuple(index)


@pytest.mark.parametrize("shape,kind,options", KERNELS, ids=[f"{k}{s}" for s, k, _ in KERNELS])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_host_shard_is_the_slice_of_the_whole(shape, kind, options, data):
    layout = kernel_layout(shape, kind, **options)
    request = _request(layout, 0.4, 1.5, None, np.float32)
    weight, mask = host_eoi(11, request)
    index = data.draw(rectangles(shape))
    shard, shard_mask = host_shard(11, request, index)
    assert shard.dtype == weight.dtype and shard_mask.dtype == np.bool_
    np.testing.assert_array_equal(shard, weight[index])
    np.testing.assert_array_equal(shard_mask, mask[index])
    region, _ = canonical_cover(layout, index)
    built = int(np.prod([len(range(*r.indices(n))) for r, n in zip(region, layout.canonical)]))
    if kind in TRUE_SHARD_LAYOUTS:
        assert built == weight[index].size  # exactly the shard, nothing more


def test_split_heads_and_channels_build_only_their_rows():
    # The splits a model actually uses are exact for einsum (heads) and depthwise (channels) too.
    query = kernel_layout((64, 8, 16), "einsum", groups=8)
    region, _ = canonical_cover(query, (slice(None), slice(2, 4), slice(None)))
    assert region == (slice(32, 64), slice(0, 64))
    depthwise = kernel_layout((3, 3, 32, 2), "depthwise")
    region, _ = canonical_cover(depthwise, (slice(None), slice(None), slice(8, 16), slice(None)))
    assert region[:2] == (slice(16, 32), slice(0, 1))


def test_non_eoi_scheme_shards_are_slices_of_its_weight():
    from eoi_core import schemes

    layout = kernel_layout((16, 24), "dense")
    request = _request(layout, 0.25, 1.0, None, np.float32, schemes.get("sao"))
    weight, mask = host_eoi(4, request)
    shard, shard_mask = host_shard(4, request, (slice(0, 16), slice(6, 12)))
    np.testing.assert_array_equal(shard, weight[:, 6:12])
    np.testing.assert_array_equal(shard_mask, mask[:, 6:12])


PRELUDE = """
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={devices}"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import eoi_core, eoi_jax

BUILT = []  # (canonical shape, rectangle size, rectangle) of every host build
_shard = eoi_core.sparse_orthogonal_shard

def spy(shape, density, index, **options):
    weight, mask = _shard(shape, density, index, **options)
    BUILT.append((tuple(shape), weight.size, tuple((s.start, s.stop) for s in index)))
    return weight, mask

eoi_core.sparse_orthogonal_shard = spy

def same_shards(array, whole, spec):
    assert array.sharding.spec == spec, (array.sharding, spec)
    for shard in array.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(whole)[shard.index])
"""

MESH_8 = textwrap.dedent(
    """
    import gc
    # Collect cycles very often: a staged op must outlive the jaxpr that held it, since compiled
    # executables name it by id (with weak references this failed about one run in two).
    gc.set_threshold(5, 1, 1)
    import flax.linen as nn
    mesh = jax.make_mesh((4, 2), ("x", "y"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(32, (3, 3), kernel_init=nn.with_partitioning(
                eoi_jax.eoi(0.2, layout="conv"), (None, None, None, "x")))(x)
            x = nn.Conv(64, (3, 3), feature_group_count=32, kernel_init=nn.with_partitioning(
                eoi_jax.eoi(0.2, groups=32), (None, None, None, ("x", "y"))))(x)
            x = nn.Dense(48, kernel_init=nn.with_logical_partitioning(eoi_jax.eoi(0.25), ("embed", "mlp")))(x)
            return nn.Dense(16, kernel_init=nn.with_partitioning(eoi_jax.eoi(0.25), ("y", "x")))(x)

    model, x = Net(), jnp.ones((1, 6, 6, 16))
    rules = (("embed", "y"), ("mlp", "x"))
    whole = nn.unbox(jax.jit(model.init)(jax.random.key(0), x))  # no mesh: unsharded
    BUILT.clear()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(model.init, jax.random.key(0), x)
        shardings = jax.tree.map(  # mesh axis names and logical ones side by side
            lambda box: NamedSharding(mesh, nn.logical_to_mesh_axes(box.names) if isinstance(
                box, nn.LogicallyPartitioned) else box.get_partition_spec() if isinstance(box, nn.Partitioned) else P()),
            abstract, is_leaf=lambda box: isinstance(box, nn.Partitioned))
        sharded = jax.block_until_ready(jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), x))
    specs = {"Conv_0": P(None, None, None, "x"), "Conv_1": P(None, None, None, ("x", "y")),
             "Dense_0": P("y", "x"), "Dense_1": P("y", "x")}
    for name, spec in specs.items():
        same_shards(nn.unbox(sharded)["params"][name]["kernel"], whole["params"][name]["kernel"], spec)
    # one host build per device and kernel, each of the device's shard only
    kernels = {(32, 16, 3, 3): 3 * 3 * 16 * 32 // 4, (64, 1, 3, 3): 3 * 3 * 64 // 8}
    assert len(BUILT) == 8 * 4, BUILT
    for shape, size, _ in BUILT:
        full = int(np.prod(shape))
        assert size == (kernels[shape] if shape in kernels else full // 8), (shape, size)

    # sparsify under jit reads the boxes (Auto axes: the traced arrays carry no sharding)
    reference = eoi_jax.sparsify(whole["params"], 0.2, jax.random.key(9), model=model, inputs=(x,))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        redone = jax.jit(lambda p, k: eoi_jax.sparsify(p, 0.2, k, model=model, inputs=(x,)))(
            sharded["params"], jax.random.key(9))
    for name, spec in specs.items():
        same_shards(nn.unbox(redone.params)[name]["kernel"], reference.params[name]["kernel"], spec)
        same_shards(redone.masks[name]["kernel"], reference.masks[name]["kernel"], spec)

    # every layout, eagerly and under jit, with and without the mask
    cases = [((64, 32), "dense", {}, P("x", "y")), ((16, 64), "gates", {"gates": 4}, P("y", "x")),
             ((3, 3, 8, 16), "conv", {}, P(None, None, "y", "x")),
             ((3, 3, 16, 8), "conv_transpose", {}, P(None, None, "y", "x")),
             ((3, 3, 16, 2), "depthwise", {}, P(None, None, ("x", "y"))),
             ((32, 8, 4), "einsum", {"groups": 8}, P("y", "x")),
             ((4, 8, 32), "einsum", {"in_axes": 2}, P("x", None, "y"))]
    for shape, layout, options, spec in cases:
        sharding = NamedSharding(mesh, spec)
        ref_w, ref_m = eoi_jax.eoi_with_mask(jax.random.key(5), shape, 0.3, layout=layout, **options)
        local = sharding.shard_shape(shape)
        BUILT.clear()
        w, m = eoi_jax.eoi_with_mask(jax.random.key(5), shape, 0.3, layout=layout, out_sharding=sharding, **options)
        same_shards(w, ref_w, spec); same_shards(m, ref_m, spec)
        # eagerly: one build per distinct shard (replicas share it), each of the shard only
        assert len(BUILT) == len({str(s.index) for s in w.addressable_shards}), (layout, BUILT)
        assert all(size == np.prod(local) for _, size, _ in BUILT), (layout, local, BUILT)
        BUILT.clear()
        fn = jax.jit(lambda k: eoi_jax.eoi_with_mask(k, shape, 0.3, layout=layout, out_sharding=sharding, **options))
        w, m = jax.block_until_ready(fn(jax.random.key(5)))
        same_shards(w, ref_w, spec); same_shards(m, ref_m, spec)
        # under jit: one callback per device, each of its shard only
        assert len(BUILT) == 8 and all(size == np.prod(local) for _, size, _ in BUILT), (layout, local, BUILT)
        init = jax.jit(lambda k: eoi_jax.eoi(0.3, layout=layout, **options)(k, shape, out_sharding=sharding))
        same_shards(jax.block_until_ready(init(jax.random.key(5))), ref_w, spec)

        # sharded only by jit's out_shardings: the partitioner hands each device its block
        BUILT.clear()
        auto = jax.jit(lambda k: eoi_jax.eoi_with_mask(k, shape, 0.3, layout=layout, **options),
                       out_shardings=(sharding, sharding))
        w, m = jax.block_until_ready(auto(jax.random.key(5)))
        same_shards(w, ref_w, spec); same_shards(m, ref_m, spec)
        assert len(BUILT) == 8 and all(size == np.prod(local) for _, size, _ in BUILT), (layout, local, BUILT)

    # a model without annotations, sharded by jit's out_shardings alone
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(32, (3, 3), kernel_init=eoi_jax.eoi(0.2, layout="conv"))(x)
            x = nn.Conv(64, (3, 3), feature_group_count=32, kernel_init=eoi_jax.eoi(0.2, groups=32))(x)
            x = nn.DenseGeneral((8, 4), kernel_init=eoi_jax.eoi(0.25, groups=8, layout="einsum"))(x)
            return nn.Dense(16, kernel_init=eoi_jax.eoi(0.25))(x.reshape(x.shape[:-2] + (32,)))

    plain = Plain()
    whole = jax.jit(plain.init)(jax.random.key(0), x)
    specs = {"Conv_0": P(None, None, None, "x"), "Conv_1": P(None, None, None, ("x", "y")),
             "DenseGeneral_0": P("y", "x"), "Dense_0": P(("x", "y"))}
    with jax.set_mesh(mesh):
        shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), jax.eval_shape(plain.init, jax.random.key(0), x))
        for name, spec in specs.items():
            shardings["params"][name]["kernel"] = NamedSharding(mesh, spec)
        shardings["params"]["Dense_0"]["bias"] = NamedSharding(mesh, P("x"))
        BUILT.clear()
        sharded = jax.block_until_ready(jax.jit(plain.init, out_shardings=shardings)(jax.random.key(0), x))
    for name, spec in specs.items():
        same_shards(sharded["params"][name]["kernel"], whole["params"][name]["kernel"], spec)
    assert len(BUILT) == 8 * 4, BUILT
    sizes = {(32, 16, 3, 3): 32 * 16 * 9 // 4, (64, 1, 3, 3): 64 * 9 // 8, (32, 64): 32 * 64 // 8, (16, 32): 16 * 32 // 8}
    assert all(size == sizes[shape] for shape, size, _ in BUILT), BUILT

    # jit(sparsify) on plain arrays over Auto axes: every kernel and mask takes its input's sharding
    reference = eoi_jax.sparsify(whole["params"], 0.2, jax.random.key(9), model=plain, inputs=(x,))
    BUILT.clear()
    with jax.set_mesh(mesh):
        redone = jax.block_until_ready(jax.jit(lambda p, k: eoi_jax.sparsify(p, 0.2, k, model=plain, inputs=(x,)))(
            sharded["params"], jax.random.key(9)))
    for name, spec in specs.items():
        same_shards(redone.params[name]["kernel"], reference.params[name]["kernel"], spec)
        same_shards(redone.masks[name]["kernel"], reference.masks[name]["kernel"], spec)
    same_shards(redone.masks["Dense_0"]["bias"], reference.masks["Dense_0"]["bias"], P("x"))
    assert len(BUILT) == 8 * 4 and all(size == sizes[shape] for shape, size, _ in BUILT), BUILT

    # an uneven split (no shard_map block): blocks of ceil(30 / 4) rows, the last one short
    ref = eoi_jax.eoi(0.3)(jax.random.key(2), (8, 30))
    BUILT.clear()
    uneven = jax.jit(lambda k: eoi_jax.eoi(0.3)(k, (8, 30), out_sharding=NamedSharding(mesh, P(None, "x"))))
    np.testing.assert_array_equal(np.asarray(uneven(jax.random.key(2))), np.asarray(ref))
    assert sorted({rows for _, _, (rows, _) in BUILT}) == [(0, 8), (8, 16), (16, 24), (24, 30)], BUILT

    print("--- control ---", file=sys.stderr, flush=True)
    # control: a weight built by a plain host callback and sharded by out_shardings is built on device 0
    control = jax.jit(lambda k: jax.pure_callback(lambda k: np.ones((64, 32), np.float32),
                                                  jax.ShapeDtypeStruct((64, 32), jnp.float32), k),
                      out_shardings=NamedSharding(mesh, P("x", "y")))
    jax.block_until_ready(control(jax.random.key_data(jax.random.key(0))))
    print("ok")
    """
)

MESH_4 = textwrap.dedent(
    """
    from flax import nnx
    mesh = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    spec = P(None, "x")
    with jax.set_mesh(mesh):
        eager = nnx.Linear(16, 32, kernel_init=nnx.with_partitioning(eoi_jax.eoi(0.2), spec), rngs=nnx.Rngs(params=7))
        assert [(shape, size) for shape, size, _ in BUILT] == [((32, 16), 16 * 8)] * 4, BUILT
        traced = nnx.jit(lambda: nnx.Linear(16, 32, kernel_init=nnx.with_partitioning(eoi_jax.eoi(0.2), spec),
                                            rngs=nnx.Rngs(params=7)))()
    whole = nnx.Linear(16, 32, kernel_init=eoi_jax.eoi(0.2), rngs=nnx.Rngs(params=7)).kernel[...]
    same_shards(eager.kernel[...], whole, spec)
    same_shards(traced.kernel[...], whole, spec)
    direct = eoi_jax.eoi(0.2)(jax.random.key(3), (16, 32), out_sharding=NamedSharding(mesh, spec))
    core, _ = eoi_core.sparse_orthogonal((32, 16), 0.2, rng=3)
    np.testing.assert_array_equal(np.asarray(direct), core.T)

    # sparsify keeps the input shardings: eager arrays, traced Explicit arrays, nnx Variables under nnx.jit
    params = {"a": {"kernel": jnp.zeros((16, 32)), "bias": jnp.zeros(32)}, "b": {"kernel": jnp.zeros((32, 8))}}
    ref, ref_masks = eoi_jax.sparsify(params, 0.3, jax.random.key(1))
    specs = {"a": {"kernel": P(None, "x"), "bias": P("x")}, "b": {"kernel": P("x", None)}}
    placed = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs))
    with jax.set_mesh(mesh):
        for out in (eoi_jax.sparsify(placed, 0.3, jax.random.key(1)),
                    jax.jit(lambda p, k: eoi_jax.sparsify(p, 0.3, k))(placed, jax.random.key(1))):
            jax.tree.map(same_shards, out[0], ref, specs)
            jax.tree.map(same_shards, out[1], ref_masks, specs)
        # a scheme without a shard function: built once, then sliced per device
        BUILT.clear()
        sao = eoi_jax.sparsify(placed, 0.25, jax.random.key(1), scheme="sao", distribution="uniform")
        jax.tree.map(same_shards, tuple(sao), tuple(eoi_jax.sparsify(params, 0.25, jax.random.key(1), scheme="sao",
                                                                     distribution="uniform")),
                     (specs, specs))
        assert BUILT == []
        module = nnx.Linear(16, 32, kernel_init=nnx.with_partitioning(nnx.initializers.zeros, spec),
                            rngs=nnx.Rngs(0))
        plain = nnx.Linear(16, 32, rngs=nnx.Rngs(0))
        expected = eoi_jax.sparsify(plain, 0.3, jax.random.key(4))
        result = nnx.jit(lambda m, k: eoi_jax.sparsify(m, 0.3, k))(module, jax.random.key(4))
    same_shards(module.kernel[...], plain.kernel[...], spec)
    same_shards(result.masks["kernel"][...], expected.masks["kernel"][...], spec)

    # nn.scan over layers: the per-layer init is vmapped over keys, shard_map and all
    import flax.linen as nn

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return nn.Dense(32, kernel_init=nn.with_partitioning(eoi_jax.eoi(0.25), (None, "x")))(x), None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.scan(Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=3,
                           metadata_params={nn.PARTITION_NAME: None})()(x, None)[0]

    auto = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    stack, x = Stack(), jnp.ones((2, 32))
    whole = nn.unbox(jax.jit(stack.init)(jax.random.key(0), x))["params"]["ScanLayer_0"]["Dense_0"]["kernel"]
    BUILT.clear()
    with jax.set_mesh(auto):
        abstract = jax.eval_shape(stack.init, jax.random.key(0), x)
        scanned = jax.jit(stack.init, out_shardings=nn.get_sharding(abstract, auto))(jax.random.key(0), x)
    same_shards(nn.unbox(scanned)["params"]["ScanLayer_0"]["Dense_0"]["kernel"], whole, P(None, None, "x"))
    assert len(BUILT) == 3 * 4 and all(size == 32 * 8 for _, size, _ in BUILT), BUILT

    # no annotation, no out_sharding=: the sharding XLA picks reaches the initializer at compile time
    init = eoi_jax.eoi(0.25)
    whole = init(jax.random.key(6), (16, 32))
    for axes in (jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit):
        mesh = jax.make_mesh((4,), ("x",), axis_types=(axes,))
        BUILT.clear()
        with jax.set_mesh(mesh):
            split = jax.jit(lambda k: init(k, (16, 32)), out_shardings=NamedSharding(mesh, spec))(jax.random.key(6))
        same_shards(split, whole, spec)
        assert sorted(BUILT) == [((32, 16), 16 * 8, ((8 * i, 8 * i + 8), (0, 16))) for i in range(4)], (axes, BUILT)
    # one traced function compiled for two shardings: each executable builds its own blocks
    rows = jax.jit(lambda k: init(k, (16, 32)), out_shardings=NamedSharding(auto, P("x"))).lower(jax.random.key(6))
    cols = jax.jit(lambda k: init(k, (16, 32)), out_shardings=NamedSharding(auto, spec)).lower(jax.random.key(6))
    cols, rows = cols.compile(), rows.compile()
    for compiled, layout in ((rows, P("x")), (cols, spec), (rows, P("x"))):
        same_shards(compiled(jax.random.key(6)), whole, layout)
    # a replicated result is built a quarter per device, then gathered
    BUILT.clear()
    copies = jax.jit(lambda k: init(k, (16, 32)), out_shardings=NamedSharding(auto, P()))(jax.random.key(6))
    same_shards(copies, whole, P())
    assert sorted(size for _, size, _ in BUILT) == [16 * 8] * 4, BUILT
    # under vmap (one key per layer, as nn.scan does): the keys' axis in front, each device its block
    keys = jax.random.split(jax.random.key(6), 3)
    stacked = jax.jit(jax.vmap(lambda k: init(k, (16, 32))), out_shardings=NamedSharding(auto, P(None, None, "x")))
    BUILT.clear()
    same_shards(jax.block_until_ready(stacked(keys)), np.stack([init(k, (16, 32)) for k in keys]), P(None, None, "x"))
    assert sorted(size for _, size, _ in BUILT) == [16 * 8] * 3 * 4, BUILT
    # GSPMD (Shardy off) reads the same sharding
    jax.config.update("jax_use_shardy_partitioner", False)
    BUILT.clear()
    split = jax.jit(lambda k: init(k, (16, 32)), out_shardings=NamedSharding(auto, spec))(jax.random.key(6))
    same_shards(split, whole, spec)
    assert sorted(size for _, size, _ in BUILT) == [16 * 8] * 4, BUILT
    print("ok")
    """
)


PROCESS = textwrap.dedent(
    """
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id={process})
    mesh = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))  # 2 devices per process
    sharding = NamedSharding(mesh, P(None, "x"))
    whole = eoi_core.sparse_orthogonal((32, 16), 0.25, rng=3)[0].T
    init = eoi_jax.eoi(0.25)
    for kernel in (init(jax.random.key(3), (16, 32), out_sharding=sharding),
                   jax.jit(lambda k: init(k, (16, 32), out_sharding=sharding))(jax.random.key(3)),
                   jax.jit(lambda k: init(k, (16, 32)), out_shardings=sharding)(jax.random.key(3))):
        same_shards(kernel, whole, P(None, "x"))
    print(sorted(rectangle for _, _, rectangle in BUILT))
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_each_process_builds_only_its_addressable_shards():
    # Two processes of two CPU devices each share one 4-device mesh.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "EOI_NUM_THREADS": "1"}
    for _ in range(3):  # a new port if another process took the probed one before the coordinator bound it
        port = _free_port()
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", PRELUDE.format(devices=2) + PROCESS.replace("{port}", str(port)).replace(
                    "{process}", str(process))],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
            for process in range(2)
        ]
        outputs = [run.communicate(timeout=180) for run in runs]
        if not any("ddress already in use" in err for _, err in outputs):
            break
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-4000:]
        assert REMAT not in err
    # canonical (out, in) = (32, 16): process 0 owns Flax columns 0..15, process 1 columns 16..31,
    # eagerly, under jit and with jit's out_shardings alone; no process builds a row of the other's.
    built = [eval(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert built[0] == [((0, 8), (0, 16))] * 3 + [((8, 16), (0, 16))] * 3
    assert built[1] == [((16, 24), (0, 16))] * 3 + [((24, 32), (0, 16))] * 3


def _run(script: str, devices: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "EOI_NUM_THREADS": "1"}
    code = PRELUDE.format(devices=devices) + script
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)


def test_every_device_builds_its_shard_on_eight_cpu_devices():
    done = _run(MESH_8, 8)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("ok")
    before, _, after = done.stderr.partition("--- control ---")
    assert REMAT not in before, before[-3000:]
    assert REMAT in after, "the control should show XLA's warning (is its log captured?)"


def test_nnx_partitioning_and_sparsify_keep_shardings_on_four_cpu_devices():
    done = _run(MESH_4, 4)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("ok")
    assert REMAT not in done.stderr, done.stderr[-3000:]


def test_the_jax_mesh_recipe_runs():
    text = DOCS.read_text()
    section = text.split("## Initialising a model larger than one machine (JAX mesh)", 1)
    assert len(section) == 2, "docs/sharding.md lost its JAX mesh recipe"
    blocks = re.findall(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], flags=re.S)
    assert blocks
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "EOI_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert REMAT not in done.stderr, done.stderr[-3000:]


def test_bench_jax_shard_quick(tmp_path):
    from eoi_core.cli import main

    assert main(["bench", "jax-shard", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "jax_shard.json").read_text())["rows"]
    assert {row["layout"] for row in rows} == {"dense", "conv"} and (tmp_path / "jax_shard.png").exists()
    dense = next(row for row in rows if row["layout"] == "dense")
    # a device's build needs about a quarter of the whole kernel's memory (W = 4), never more
    assert dense["shard_peak_bytes"] < 0.5 * dense["whole_peak_bytes"]
