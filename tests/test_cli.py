"""Smoke tests of the ``eoi`` command at tiny sizes: every subcommand runs and writes its
files, ``eoi init`` writes a valid, exactly orthogonal ``.npz``, and bad arguments end with
a clear message and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eoi_core
from eoi_bench import schemes
from eoi_bench.memory import peak_memory
from eoi_bench.published import published_eoi
from eoi_core.cli import main
from eoi_core.io import load_npz

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> int:
    return main([str(arg) for arg in argv])


# --- eoi init -------------------------------------------------------------------------------


def test_init_writes_an_exactly_orthogonal_npz(tmp_path, capsys):
    path = tmp_path / "layer.npz"
    assert run_cli("init", path, "--shape", 96, 40, "--density", 0.15, "--seed", 3) == 0
    with np.load(path, allow_pickle=False) as archive:
        weight, mask, dtype = archive["weight"], archive["mask"], str(archive["dtype"])
        assert float(archive["density"]) == 0.15
    assert weight.shape == mask.shape == (96, 40)
    assert weight.dtype == np.float32 and dtype == "float32" and mask.dtype == bool
    assert int(mask.sum()) == eoi_core.mask_count(0.15, 96 * 40)
    assert not np.any(weight[~mask])
    gram = weight.T.astype(np.float64) @ weight
    np.testing.assert_allclose(gram, np.eye(40), atol=1e-5)
    printed = capsys.readouterr().out
    assert "orthogonality" in printed and "density" in printed and " ms " in printed


def test_init_is_reproducible_and_appends_the_suffix(tmp_path):
    assert run_cli("init", tmp_path / "a", "--shape", 32, 32, "--density", 0.3, "--seed", 7) == 0
    assert run_cli("init", tmp_path / "b.npz", "--shape", 32, 32, "--density", 0.3, "--seed", 7) == 0
    first, second = load_npz(tmp_path / "a.npz"), load_npz(tmp_path / "b.npz")
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_init_bfloat16_is_stored_as_raw_bits_and_restored(tmp_path):
    path = tmp_path / "bf16.npz"
    assert run_cli("init", path, "--shape", 24, 48, "--density", 0.25, "--seed", 0, "--dtype", "bfloat16",
                   "--gain", 2.0) == 0
    with np.load(path, allow_pickle=False) as archive:
        assert archive["weight"].dtype == np.uint16 and str(archive["dtype"]) == "bfloat16"
    weight, mask = load_npz(path)
    assert weight.dtype.name == "bfloat16"
    assert eoi_core.orthogonality_error(weight, gain=2.0) < 4 * 2.0**-7 * 4.0  # bfloat16 rounding of g^2 = 4


def test_init_grouped_conv_kernel(tmp_path):
    path = tmp_path / "conv.npz"
    assert run_cli("init", path, "--shape", 8, 4, 3, 3, "--groups", 2, "--density", 0.3, "--seed", 1,
                   "--center-density", "sqrt") == 0
    weight, mask = load_npz(path)
    assert weight.shape == (8, 4, 3, 3)
    assert eoi_core.orthogonality_error(weight, groups=2) < 1e-5
    assert int(mask[:4].sum()) == int(mask[4:].sum()) == eoi_core.mask_count(0.3, 4 * 4 * 9)


# --- bad arguments --------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["init", "{tmp}/w.npz", "--shape", "64", "32", "--density", "1.5"], "density in (0, 1]"),
    (["init", "{tmp}/w.npz", "--shape", "64", "32", "--density", "nan"], "finite"),
    (["init", "{tmp}/w.npz", "--shape", "64", "32", "--density", "0.001"], "infeasible"),
    (["init", "{tmp}/w.npz", "--shape", "64", "--density", "0.5"], "at least 2 dimensions"),
    (["init", "{tmp}/w.npz", "--shape", "64", "x", "--density", "0.5"], "expected an integer"),
    (["init", "{tmp}/w.npz", "--shape", "64", "32", "--density", "0.5", "--dtype", "int8"], "invalid choice"),
    (["init", "{tmp}/w.npz", "--shape", "9", "4", "3", "3", "--groups", "2", "--density", "0.5"], "groups"),
    (["init", "{tmp}/w.npz", "--shape", "8", "8", "--density", "0.5", "--center-density", "cube"], "'sqrt'"),
    (["init", "{tmp}", "--shape", "8", "8", "--density", "0.5"], "is a directory"),
    (["init", "{tmp}/w.npz", "--density", "0.5"], "--shape"),
    (["frobnicate"], "invalid choice"),
    (["bench"], "required"),
    (["bench", "nope"], "invalid choice"),
    (["demo", "--depth", "0"], "integer >= 1"),
    (["demo", "--lr", "-1"], "number > 0"),
    (["demo", "--momentum", "1.5", "--out", "{tmp}"], "momentum"),
    (["demo", "--quick", "--mnist", "{tmp}/missing.npz", "--out", "{tmp}"], "does not exist"),
    (["demo", "--schemes", "magic"], "invalid choice"),
    (["bench", "deep", "--density", "0"], "density in (0, 1]"),
    (["bench", "speed", "--sizes", "10", "--out", "{tmp}"], "multiples of 4"),
    (["bench", "density", "--shapes", "12"], "ROWSxCOLS"),
    (["bench", "density", "--up-to", "1", "--out", "{tmp}"], "--up-to"),
    (["bench", "spectrum", "--sparsities", "1.0"], "sparsity in [0, 1)"),
    (["bench", "angles", "--angles", "wide"], "expected a number"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a[:3]) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        run_cli(*[arg.format(tmp=tmp_path) for arg in argv])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error and "error:" in error and message in error
    assert "Traceback" not in error


def test_a_core_error_in_a_subprocess_gives_no_traceback(tmp_path):
    child = subprocess.run([sys.executable, "-m", "eoi_bench", "init", str(tmp_path / "w.npz"), "--shape", "64",
                            "32", "--density", "0.0001"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "EOI_DEBUG": ""})
    assert child.returncode == 2
    assert "eoi init: error:" in child.stderr and "min_density" in child.stderr
    assert "Traceback" not in child.stderr
    assert not (tmp_path / "w.npz").exists()  # nothing half-written


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as raised:
        run_cli("--version")
    assert raised.value.code == 0 and "eoi" in capsys.readouterr().out
    for argv in (["--help"], ["bench", "--help"], ["demo", "--help"], ["bench", "speed", "--help"]):
        with pytest.raises(SystemExit) as raised:
            run_cli(*argv)
        assert raised.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["speed", "density", "spectrum", "deep", "angles"])
def test_benchmark_scripts_are_runnable(script):
    child = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--help"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert "--quick" in child.stdout and "--out" in child.stdout


# --- every subcommand runs (tiny sizes) -----------------------------------------------------

TINY_NET = ["--depth", "3", "--width", "16", "--epochs", "1", "--batch-size", "256", "--no-progress"]


def test_demo_runs_every_scheme(tmp_path, capsys):
    assert run_cli("demo", "--quick", *TINY_NET, "--out", tmp_path) == 0
    result = json.loads((tmp_path / "demo.json").read_text())
    assert [run["scheme"] for run in result["runs"]] == list(schemes.TRAINING_SCHEMES)
    for run in result["runs"]:
        assert len(run["train_loss"]) == 2 and len(run["test_accuracy"]) == 2  # at init and after epoch 1
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert "final train loss" in capsys.readouterr().out


def _fake_mnist(path: Path, **drop: bool) -> Path:
    """A tiny random file in the layout of keras' mnist.npz (no real data is needed to test the path)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 40, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 20, dtype=np.uint8)}
    np.savez(path, **{key: value for key, value in arrays.items() if not drop.get(key)})
    return path


def test_demo_reads_a_local_mnist_file(tmp_path, capsys):
    mnist = _fake_mnist(tmp_path / "mnist.npz")
    assert run_cli("demo", *TINY_NET, "--schemes", "eoi", "--mnist", mnist, "--out", tmp_path) == 0
    assert "mnist" in capsys.readouterr().out
    assert json.loads((tmp_path / "demo.json").read_text())["data"] == "mnist"
    broken = _fake_mnist(tmp_path / "broken.npz", y_test=True)
    with pytest.raises(SystemExit) as raised:
        run_cli("demo", *TINY_NET, "--mnist", broken, "--out", tmp_path)
    assert raised.value.code == 2 and "lacks the arrays ['y_test']" in capsys.readouterr().err


def test_bench_deep_and_angles_run(tmp_path):
    assert run_cli("bench", "deep", *TINY_NET, "--schemes", "eoi", "kaiming", "--out", tmp_path) == 0
    assert len(json.loads((tmp_path / "deep.json").read_text())["runs"]) == 2
    assert run_cli("bench", "angles", *TINY_NET, "--angles", "1", "uniform", "--seeds", "2", "--out", tmp_path) == 0
    runs = json.loads((tmp_path / "angles.json").read_text())["runs"]
    assert [(run["label"], run["seed"]) for run in runs] == [
        ("fixed 1 deg", 0), ("fixed 1 deg", 1), ("uniform angles", 0), ("uniform angles", 1)]
    assert (tmp_path / "deep.png").exists() and (tmp_path / "angles.png").exists()


def test_bench_speed_runs(tmp_path, capsys):
    assert run_cli("bench", "speed", "--quick", "--sizes", "64", "--densities", "0.5", "--aspects", "square",
                   "wide", "--repeats", "1", "--no-progress", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "64 x 64" in out and "16 x 64" in out and "published / numba" in out
    assert (tmp_path / "speed_size.png").exists() and (tmp_path / "speed_density.png").exists()
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert set(rows[0]["cells"]) == {"numba", "reference", "published", "dense QR", "floor", "floor N"}


def test_bench_shard_runs(tmp_path):
    assert run_cli("bench", "shard", "--shapes", "64x256", "--worlds", "2", "--axes", "free", "--rounds", "2",
                   "--no-progress", "--out", tmp_path) == 0
    measured = json.loads((tmp_path / "shard.json").read_text())
    rows = measured["rows"]
    assert [(row["axis"], row["world"]) for row in rows] == [("free", 1), ("free", 2)]
    assert rows[0]["cpu_ratio"] == 1.0 and (tmp_path / "shard.png").exists()
    # two rounds: one result per rank, its best of both
    assert [(rank["world"], rank["rank"]) for rank in measured["ranks"]] == [(1, 0), (2, 0), (2, 1)]


def test_bench_shard_keeps_a_ranks_least_cpu_and_largest_memory_over_rounds():
    from eoi_bench.shard import RankResult, _merge

    first = RankResult((64, 256), "free", 2, 1, 100, cpu_seconds=0.5, user_seconds=0.3, peak_bytes=1000)
    second = RankResult((64, 256), "free", 2, 1, 100, cpu_seconds=0.4, user_seconds=0.35, peak_bytes=1200)
    merged = _merge(first, second)
    assert (merged.cpu_seconds, merged.user_seconds, merged.peak_bytes) == (0.4, 0.3, 1200)
    assert _merge(first, RankResult((64, 256), "free", 2, 1, 100, 0.6, 0.4, None)).peak_bytes == 1000


def test_bench_density_and_spectrum_run(tmp_path):
    assert run_cli("bench", "density", "--shapes", "8x8", "12x4", "--seeds", "2", "--points", "4",
                   "--out", tmp_path) == 0
    curves = json.loads((tmp_path / "density.json").read_text())
    assert [tuple(c["shape"]) for c in curves] == [(8, 8), (12, 4)]
    assert curves[0]["expected"][0] == pytest.approx(1 / 8) and [seed[0] for seed in curves[0]["empirical"]] == [1 / 8, 1 / 8]
    assert run_cli("bench", "spectrum", "--sparsities", "0", "0.5", "--seeds", "1", "--ai-steps", "3",
                   "--out", tmp_path) == 0
    stats = json.loads((tmp_path / "spectrum.json").read_text())["stats"]
    # A linear network of exactly orthogonal layers has every Jacobian singular value equal to 1.
    np.testing.assert_allclose(np.asarray(stats["eoi"]["linear"]), 1.0, atol=1e-6)
    assert (tmp_path / "spectrum.png").exists()


# --- the pieces the benchmarks rest on -------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(schemes.SCHEMES))
def test_every_scheme_has_the_eoi_mask_budget(scheme):
    weight, mask = schemes.initialise(scheme, (24, 40), 0.2, 1.5, np.random.default_rng(0))
    assert weight.shape == mask.shape == (24, 40) and mask.dtype == bool
    assert int(mask.sum()) == eoi_core.mask_count(0.2, 24 * 40)
    assert not np.any(weight[~mask])


def test_masked_mlp_keeps_its_masks_and_starts_exactly_orthogonal():
    import torch
    import torch.nn.functional as F

    from eoi_bench.models import SparseMLP

    model = SparseMLP(12, 3, width=16, depth=3, density=0.3, scheme="eoi", gain=1.0, seed=0)
    for layer in model.layers:
        weight = layer.weight.detach().double().numpy()
        assert eoi_core.orthogonality_error(weight) < 1e-6
        assert int(layer.mask.sum()) == eoi_core.mask_count(0.3, weight.size)
    masks = [layer.mask.clone() for layer in model.layers]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, 12, generator=generator), torch.randint(0, 3, (8,), generator=generator)
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    for layer, mask in zip(model.layers, masks):
        assert torch.equal(layer.mask, mask)
        assert not torch.any(layer.weight[mask == 0])  # masked-out entries never move off zero
        assert torch.any(layer.weight[mask == 1] != 0)


def test_fixed_angle_changes_the_values_not_the_mask():
    first = schemes.eoi((32, 32), 0.2, 1.0, np.random.default_rng(5), angle=np.radians(1.0))
    second = schemes.eoi((32, 32), 0.2, 1.0, np.random.default_rng(5))
    np.testing.assert_array_equal(first[1], second[1])
    assert np.abs(np.diag(first[0])).min() > 0.9  # 1-degree rotations stay near the identity
    assert eoi_core.orthogonality_error(first[0]) < 1e-12


def test_fan_in_scaling_uses_each_units_actual_fan_in():
    weight, mask = schemes.kaiming_fanin((400, 400), 0.1, 2.0, np.random.default_rng(0))
    # E[sum_j w_ij^2] = g^2 for every unit: the row sums of squares average to g^2 = 4.
    assert np.mean(np.sum(weight**2, axis=1)) == pytest.approx(4.0, rel=0.05)
    plain, _ = schemes.kaiming((400, 400), 0.1, 2.0, np.random.default_rng(0))
    assert np.mean(np.sum(plain**2, axis=1)) == pytest.approx(0.4, rel=0.05)  # shrunk by the density


def test_published_algorithm_is_orthogonal_and_reaches_the_density():
    weight, rotations = published_eoi(48, 12, 0.3, np.random.default_rng(0))
    assert weight.shape == (48, 12) and rotations > 0
    assert np.count_nonzero(weight) >= 0.3 * weight.size
    np.testing.assert_allclose(weight.T @ weight, np.eye(12), atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc (Linux only)")
def test_peak_memory_of_the_floor_is_its_output():
    (floor,) = peak_memory([("floor", (2048, 1024), 0.1)])
    assert floor["output_bytes"] == 2048 * 1024 * 5
    assert 0.8 <= floor["peak_bytes"] / floor["output_bytes"] <= 1.3
