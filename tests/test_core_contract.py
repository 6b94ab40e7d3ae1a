"""The rules every adapter shares live once in the core: report, selection, center_density, mappings."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import eoi_core
from eoi_core import checks, distributions, selection
from eoi_core.report import LayerReport, SparsifyReport


def _row(name, size=100, count=10, error=1e-7, **kwargs):
    return LayerReport(
        name=name, kind="Linear", shape=(10, 10), groups=1, dtype="float32", density=count / size,
        mask_count=count, size=size, gain=1.0, orthogonality_error=error, **kwargs
    )


def test_report_totals_count_sparsified_rows_and_model_density_counts_skipped_as_dense():
    report = SparsifyReport(
        [_row("a"), _row("b", count=30), LayerReport.skipped("emb", "Embedding", (5, 20), "float32", "tied")]
    )
    assert len(report) == 3 and [r.name for r in report.sparsified] == ["a", "b"]
    assert [r.reason for r in report.skipped] == ["tied"]
    assert report.mask_count == 40 and report.size == 200 and report.density == 0.2
    assert math.isclose(report.model_density, (40 + 100) / 300)
    assert report.orthogonality_error == 1e-7
    assert report["b"].mask_count == 30
    table = str(report)
    assert "skipped: tied" in table and "1 skipped" in table and table.splitlines()[0].startswith("layer")
    with pytest.raises(KeyError, match="nope"):
        report["nope"]


def test_report_without_computed_errors_says_so():
    report = SparsifyReport([_row("a", error=None)])
    assert report.orthogonality_error is None
    assert " - " in str(report).splitlines()[2] or str(report).splitlines()[2].count("-") >= 1


def test_report_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="status"):
        _row("a", status="done")


@pytest.mark.parametrize(
    "name, selector, sep, expected",
    [
        ("encoder.0.linear", "encoder", ".", True),
        ("encoder2.linear", "encoder", ".", False),
        ("encoder/Dense_0", "encoder", "/", True),
        ("encoder.Dense_0", "encoder", "/", False),
        ("blocks.3.mlp.fc1", "blocks.*.mlp.*", ".", True),
        ("blocks.3.attn.qkv", "blocks.*.mlp.*", ".", False),
        ("head", "", ".", True),
    ],
)
def test_selection_matches_names_prefixes_and_globs(name, selector, sep, expected):
    assert selection.matches(name, selector, sep) is expected


def test_selection_include_exclude_and_predicates():
    names = ["enc.0", "enc.1", "dec.0", "head"]
    assert selection.select(names) == [0, 1, 2, 3]
    assert selection.select(names, include="enc") == [0, 1]
    assert selection.select(names, exclude=["head", "enc.1"]) == [0, 2]
    assert selection.select(names, include=lambda n: n.endswith(".0")) == [0, 2]


def test_selection_a_name_that_matches_nothing_is_an_error_everywhere():
    with pytest.raises(ValueError, match=r"include names 'encoder', which matches no layer"):
        selection.select(["enc.0"], include="encoder")
    with pytest.raises(ValueError, match=r"exclude names 'x\*'"):
        selection.select(["enc.0"], exclude="x*")


def test_selection_malformed_selectors_are_type_errors():
    with pytest.raises(TypeError, match="include must be"):
        selection.select(["a"], include=3)
    with pytest.raises(TypeError, match="include entries"):
        selection.select(["a"], include=["a", 3])
    with pytest.raises(TypeError, match="type int"):
        selection.select(["a"], include=int)


def test_selection_framework_specific_selectors_go_through_match_other():
    class Dense: ...

    class Conv: ...

    objects = [Dense(), Conv()]
    chosen = selection.select(
        ["d", "c"], include=Conv, objects=objects, other=(type,), other_doc="a layer type",
        match_other=lambda kind, obj: isinstance(obj, kind),
    )
    assert chosen == [1]


def test_center_density_is_a_kernel_option():
    assert checks.kernel_center_density((64, 32), 0.3) is None
    assert checks.kernel_center_density((64, 32, 3), 0.3) == 0.3
    assert checks.kernel_center_density((64, 32, 3, 3), "sqrt") == "sqrt"
    with pytest.raises(ValueError, match="center_density must be None"):
        checks.kernel_center_density((64, 32), "cube")
    with pytest.raises(ValueError, match="applies to convolution kernels only"):
        eoi_core.sparse_orthogonal((64, 32), 0.5, center_density=0.1)
    # "sqrt" on a dense weight is its own density (K = 1): the same weight as None.
    a = eoi_core.sparse_orthogonal((64, 32), 0.3, center_density="sqrt", rng=1)
    b = eoi_core.sparse_orthogonal((64, 32), 0.3, rng=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_mapping_takes_no_model_wide_density():
    shapes, names = [(8, 8), (4, 8)], ["a", "b"]
    assert distributions.layer_densities({"a": 0.5, "b": 0.75}, shapes, None, names=names) == [0.5, 0.75]
    with pytest.raises(ValueError, match="density must be None when distribution is a mapping"):
        distributions.layer_densities({"a": 0.5, "b": 0.75}, shapes, 0.1, names=names)


def test_a_callable_distribution_is_checked():
    shapes, names = [(8, 8), (4, 8)], ["a", "b"]

    def halves(shapes, density, *, names, groups):
        return [density / 2, density]

    assert distributions.layer_densities(halves, shapes, 0.8, names=names) == [0.4, 0.8]
    with pytest.raises(ValueError, match="returned 1 densities for 2 layers"):
        distributions.layer_densities(lambda s, d, **_: [d], shapes, 0.5, names=names)
    with pytest.raises(ValueError, match="layer 'b'"):
        distributions.layer_densities(lambda s, d, **_: [d, 1.5], shapes, 0.5, names=names)


@pytest.mark.parametrize(
    "gain, dtype, word",
    [(1e-8, np.float16, "underflow"), (1e5, np.float16, "overflow"), (1e300, np.float32, "overflow"),
     (1e-40, np.float32, "underflow")],
)
def test_a_gain_the_dtype_cannot_hold_is_an_error(gain, dtype, word):
    with pytest.raises(ValueError, match=rf"gain={re.escape(repr(gain))} cannot be represented .* would {word}"):
        eoi_core.sparse_orthogonal((64, 32), 0.2, gain=gain, dtype=dtype)
    with pytest.raises(ValueError, match="gain"):
        eoi_core.validate((64, 32), 0.2, gain=gain, dtype=dtype)


@pytest.mark.parametrize("dtype", eoi_core.dtypes.DTYPES)
def test_gains_at_the_ends_of_the_range_give_finite_nonzero_orthogonal_weights(dtype):
    low, high = eoi_core.dtypes.gain_range(dtype)
    for gain in (low * 4, high / 4):
        weight, _ = eoi_core.sparse_orthogonal((16, 8), 0.5, gain=gain, dtype=dtype, rng=0)
        values = weight.astype(np.float64)
        assert np.isfinite(values).all() and np.count_nonzero(values) >= 8


def test_orthogonality_error_never_hides_behind_an_unrepresentable_gain():
    zeros = np.zeros((4, 4))
    with pytest.raises(ValueError, match="relative=True"):
        eoi_core.orthogonality_error(zeros, gain=1e-300)
    assert eoi_core.orthogonality_error(zeros, gain=1e-300, relative=True) == 1.0
    with pytest.raises(ValueError, match="relative=True"):
        eoi_core.orthogonality_error(np.eye(4) * 1e200, gain=1e200)
    assert eoi_core.orthogonality_error(np.eye(4) * 1e200, gain=1e200, relative=True) == 0.0


def test_one_dtype_list_and_one_engine_list():
    assert eoi_core.dtypes.DTYPES == ("float16", "bfloat16", "float32", "float64")
    assert eoi_core.ENGINES == checks.ENGINES
    with pytest.raises(ValueError, match="engine must be one of"):
        eoi_core.sparse_orthogonal((4, 4), 1.0, engine="cuda")
