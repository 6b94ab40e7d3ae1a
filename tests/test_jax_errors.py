"""eoi_jax: bad input is a clear TypeError/ValueError, raised while tracing where JAX allows it."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import eoi_jax  # noqa: E402

KEY = jax.random.key(0)


pytestmark = pytest.mark.filterwarnings("ignore::eoi_jax.AmbiguousLayoutWarning")


def traced(init, shape, dtype=None):
    """Trace ``init`` without running it: an error here is a trace-time error."""
    return jax.eval_shape(lambda key: init(key, shape, dtype), KEY)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"density": 0.0}, ValueError, r"density must lie in \(0, 1\], got 0.0"),
        ({"density": -0.1}, ValueError, "density must lie in"),
        ({"density": 1.5}, ValueError, "density must lie in"),
        ({"density": float("nan")}, ValueError, "density must be a finite"),
        ({"density": "0.5"}, TypeError, "density must be a real number"),
        ({"density": True}, TypeError, "density must be a real number"),
        ({"density": 0.5, "gain": 0.0}, ValueError, "gain must be a finite positive"),
        ({"density": 0.5, "gain": float("inf")}, ValueError, "gain must be a finite positive"),
        ({"density": 0.5, "center_density": "cube"}, ValueError, "center_density must be None, a float"),
        ({"density": 0.5, "layout": "conv2d"}, ValueError, "layout must be None or one of"),
        ({"density": 0.5, "gates": 0}, ValueError, "gates must be an integer >= 1"),
        ({"density": 0.5, "center_density": 1.5}, ValueError, "center_density must lie in"),
        ({"density": 0.5, "groups": 0}, ValueError, "groups must be an integer >= 1"),
        ({"density": 0.5, "groups": 2.0}, TypeError, "groups must be an integer"),
        ({"density": 0.5, "dtype": jnp.int32}, TypeError, "dtype must be a floating dtype, one of"),
    ],
)
def test_factory_rejects_bad_arguments_immediately(kwargs, error, match):
    with pytest.raises(error, match=match):
        eoi_jax.eoi(**kwargs)


@pytest.mark.parametrize(
    "shape, error, match",
    [
        ((5,), ValueError, r"rank 2 to 5.*got shape \(5,\)"),
        ((), ValueError, "rank 2 to 5"),
        ((1, 1, 1, 1, 2, 2), ValueError, "rank 2"),
        ((3, 3, 4, 0), ValueError, r"Flax shape \(3, 3, 4, 0\).*must be an integer >= 1"),
        ((4, 2.5), TypeError, "must be an integer"),
        ((8, 8), ValueError, r"infeasible for shape \(8, 8\).*min_density = 0.125"),
        ((3, 3, 16, 16), ValueError, r"min_density = 0.0069"),
    ],
)
def test_bad_shapes_and_infeasible_densities_fail_at_trace_time(shape, error, match):
    with pytest.raises(error, match=match):
        traced(eoi_jax.eoi(0.005), shape)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64, "float8_e4m3fn"])
def test_non_float_dtypes_fail_at_trace_time(dtype):
    with pytest.raises(TypeError, match="dtype must be a floating dtype, one of"):
        traced(eoi_jax.eoi(0.5), (4, 4), dtype)


def test_layer_dependent_errors_fail_when_a_flax_model_is_traced():
    conv = nn.Conv(12, (3, 3), feature_group_count=2, kernel_init=eoi_jax.eoi(0.5, groups=5))
    with pytest.raises(ValueError, match="groups=5 must divide the output channels"):
        jax.eval_shape(conv.init, KEY, jnp.ones((1, 8, 8, 4)))
    dense = nn.Dense(16, kernel_init=eoi_jax.eoi(0.01))
    with pytest.raises(ValueError, match="min_density = 0.0625"):
        jax.jit(dense.init)(KEY, jnp.ones((1, 16)))
    too_sparse_centre = nn.Conv(8, (3, 3), kernel_init=eoi_jax.eoi(0.2, center_density=0.05))
    with pytest.raises(ValueError, match="center_density=0.05 gives the centre 3 non-zeros"):
        jax.eval_shape(too_sparse_centre.init, KEY, jnp.ones((1, 8, 8, 8)))


def test_bad_keys_are_rejected():
    init = eoi_jax.eoi(0.5)
    with pytest.raises(ValueError, match="single PRNG key.*jax.vmap"):
        traced(lambda key, shape, dtype: init(jax.random.split(key, 3), shape, dtype), (4, 4))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        init(jnp.zeros(3, dtype=jnp.uint32), (4, 4))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        init("not a key", (4, 4))


def test_eoi_with_mask_validates_like_eoi():
    with pytest.raises(ValueError, match="rank 2 to 5"):
        eoi_jax.eoi_with_mask(KEY, (7,), 0.5)
    with pytest.raises(ValueError, match="density must lie in"):
        eoi_jax.eoi_with_mask(KEY, (4, 4), 2.0)
    with pytest.raises(TypeError, match="dtype must be a floating dtype, one of"):
        eoi_jax.eoi_with_mask(KEY, (4, 4), 0.5, dtype=jnp.int8)


SEQUENTIAL = nn.Sequential([nn.Conv(8, (3, 3)), nn.relu, nn.Conv(8, (3, 3), feature_group_count=2)])
INPUTS = (jnp.ones((1, 6, 6, 4)),)


def _params():
    return SEQUENTIAL.init(KEY, *INPUTS)["params"]


def test_sparsify_rejects_bad_arguments():
    params = _params()
    typed = {"model": SEQUENTIAL, "inputs": INPUTS}
    with pytest.raises(ValueError, match=r"include names 'Dense', which matches no layer.*'layers_0', 'layers_2'"):
        eoi_jax.sparsify(params, 0.5, KEY, include="Dense", **typed)
    with pytest.raises(TypeError, match="include must be None, a qualified layer name"):
        eoi_jax.sparsify(params, 0.5, KEY, include=3, **typed)
    with pytest.raises(ValueError, match=r"groups names layers that are not kernels of the model: \['Conv_1'\]"):
        eoi_jax.sparsify(params, 0.5, KEY, groups={"Conv_1": 2})
    with pytest.raises(ValueError, match="layer 'layers_2'.*groups=3 must divide"):
        eoi_jax.sparsify(params, 0.5, KEY, groups={"layers_2": 3})
    with pytest.raises(ValueError, match="infeasible for this model"):
        eoi_jax.sparsify(params, 0.001, KEY, **typed)
    with pytest.raises(ValueError, match="no density for layers"):
        eoi_jax.sparsify(params, None, KEY, distribution={"layers_0": 0.5}, **typed)
    with pytest.raises(ValueError, match="density must be None when distribution is a mapping"):
        eoi_jax.sparsify(params, 0.5, KEY, distribution={"layers_0": 0.5, "layers_2": 0.5}, **typed)
    with pytest.raises(ValueError, match="distribution must be one of"):
        eoi_jax.sparsify(params, 0.5, KEY, distribution="dense", **typed)
    with pytest.raises(ValueError, match="layer 'layers_0'.*center_density"):
        eoi_jax.sparsify(params, 0.5, KEY, center_density=0.01, **typed)
    with pytest.raises(ValueError, match="scheme must be one of"):
        eoi_jax.sparsify(params, 0.5, KEY, scheme="orthogonal", **typed)
    with pytest.raises(ValueError, match="single PRNG key"):
        eoi_jax.sparsify(params, 0.5, jax.random.split(KEY, 2), **typed)
    with pytest.raises(TypeError, match="needs inputs="):
        eoi_jax.sparsify(params, 0.5, KEY, model=SEQUENTIAL)
    with pytest.raises(ValueError, match=r"layouts names layers that are not kernels"):
        eoi_jax.sparsify(params, 0.5, KEY, layouts={"layers_1": "conv"})
    with pytest.raises(ValueError, match="layer 'layers_0'.*layout='dense' needs a rank-2 kernel"):
        eoi_jax.sparsify(params, 0.5, KEY, layouts={"layers_0": "dense"})


def test_sparsify_without_layer_types_never_guesses_a_rank_3_kernel():
    # Sequential names its layers layers_<i>: a rank-4 kernel could be a DenseGeneral.
    with pytest.raises(ValueError, match=r"no kernels to sparsify.*layers_0: layout unknown: pass model="):
        eoi_jax.sparsify(_params(), 0.5, KEY)
    with pytest.raises(ValueError, match=r"no kernels .*nnx.to_pure_dict"):
        eoi_jax.sparsify({"w": jnp.ones((4, 4))}, 0.5, KEY)


def test_initializer_layout_errors_name_the_option():
    with pytest.raises(ValueError, match="layout must be None or one of"):
        eoi_jax.eoi(0.5, layout="attention")
    with pytest.raises(ValueError, match=r"Flax shape \(8, 12\) read as layout='gates'.*needs gates="):
        traced(eoi_jax.eoi(0.5, layout="gates"), (8, 12))
    # center_density is a kernel option: an einsum kernel has no taps, as in the core
    with pytest.raises(ValueError, match="center_density=0.5 applies to convolution kernels only"):
        traced(eoi_jax.eoi(0.5, center_density=0.5, layout="einsum"), (8, 2, 4))
    with pytest.raises(ValueError, match="center_density=0.5 applies to convolution kernels only"):
        traced(eoi_jax.eoi(0.5, center_density=0.5), (8, 8))
    with pytest.warns(eoi_jax.AmbiguousLayoutWarning, match="layout='einsum'"):
        traced(eoi_jax.eoi(0.5), (16, 4, 4))


def test_keep_masked_rejects_masks_that_do_not_fit():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    with pytest.raises(TypeError, match="pytree of bool arrays.*float32"):
        eoi_jax.keep_masked({"w": jnp.ones((2, 3)), "b": jnp.ones(3, bool)})
    missing = optax.chain(optax.sgd(0.1), eoi_jax.keep_masked({"w": jnp.ones((2, 3), bool)}))
    with pytest.raises(ValueError, match="masks must have the structure of the params"):
        missing.init(params)
    wrong_shape = eoi_jax.keep_masked({"w": jnp.ones((3, 2), bool), "b": jnp.ones(3, bool)})
    with pytest.raises(ValueError, match=r"mask shape \(3, 2\) for a leaf of shape \(2, 3\)"):
        wrong_shape.init(params)
    fitting = eoi_jax.keep_masked({"w": np.ones((2, 3), bool), "b": np.ones(3, bool)})
    state = fitting.init(params)
    with pytest.raises(ValueError, match="masks must have the structure of the updates"):
        fitting.update({"w": jnp.zeros((2, 3))}, state)
