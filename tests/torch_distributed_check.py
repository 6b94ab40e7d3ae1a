"""Multi-process checks of eoi_torch on DTensors and FSDP2, run by tests/test_torch_distributed.py.

``python tests/torch_distributed_check.py WORLD`` spawns ``WORLD`` CPU processes
(gloo on the loopback interface, a file rendezvous); every rank runs every check below and compares
its own shard with what one process computes from the same seeds.  Any failed
check raises in its rank, so the command exits non-zero with the traceback.

1. ``eoi_`` on DTensors: ``Shard(0)``, ``Shard(1)``, ``Replicate()`` and strided
   shards on a 1-D mesh and pairs of them on a 2-D mesh (world 4), dense and grouped conv
   weights, uneven shards: local shard and mask equal the single-process
   weight's shard bit for bit; torch's RNG advances as in one process.
2. ``sparsify`` after ``fully_shard`` (both mask modes): weights, masks (DTensors
   laid out like their weights), report and ``layer.weight`` equal the
   single-process run; three Adam steps keep every off-mask entry exactly zero
   and track the single-process losses; ``make_permanent`` works and training
   goes on.
3. The large-model flow: build on ``meta``, ``fully_shard``, ``to_empty``, sparsify;
   ``verify="exact"`` on sharded weights; another scheme (``"kaiming"``).
4. ``sparsify`` first, ``fully_shard`` after: train, ``layer.weight``, ``masks``,
   ``make_permanent``.
5. FSDP2 on top of tensor parallelism (world 4, a (2, 2) ``dp`` x ``tp`` mesh:
   column- and row-wise parallel layers, so strided shards), both mask modes:
   every rank's local weight and mask equal the single-process slice, the
   report is the single-process one, training keeps the stored shards zero off
   their masks and tracks the single-process losses; ``state_dict`` and
   ``torch.distributed.checkpoint`` round trips; ``make_permanent``.  And
   ``sparsify`` (hook mode) before tensor parallelism and FSDP2.
6. Saving and loading a sharded, sparsified, trained model (world 2, both
   modes): ``state_dict`` into a freshly sharded model after
   ``prepare_for_load``, and ``torch.distributed.checkpoint`` ``save``/``load``
   into a freshly sharded, sparsified one: weights and masks equal the saved
   ones bit for bit, and further training keeps the zeros.
7. A tied embedding / output head under FSDP2 (world 2, both modes):
   ``tied="skip"`` reports the tie, ``"error"`` raises before anything is
   drawn or written, ``"sparsify"`` gives both holders one mask (the
   single-process one) and training keeps the tie and the zeros; the same for
   ``transformers``' GPT-2 (tied ``wte``/``lm_head``, ``Conv1D`` weights) when
   it is installed.
8. Mixed precision (``MixedPrecisionPolicy(param_dtype=bfloat16,
   reduce_dtype=float32)``, world 2, both modes): the forward runs in
   bfloat16, the float32 shards stay exactly zero off their masks.
"""

from __future__ import annotations

import copy
import os
import tempfile
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DENSITY = 0.3


class Conv1D(nn.Module):
    """transformers' Conv1D (``y = x @ W + b``, ``W`` stored ``(in, out)``), without transformers."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Net(nn.Module):
    """Every layout kind: Linear, MHA (fused q/k/v), a stored-transposed Conv1D, Conv1d, LSTM gates."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.proj = Conv1D(24, 16)
        self.conv = nn.Conv1d(24, 12, 3, padding=1, groups=2)
        self.lstm = nn.LSTM(12, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.embed(x))
        x = x + self.attention(x, x, x, need_weights=False)[0]
        x = torch.relu(self.proj(x))
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        x, _ = self.lstm(x)
        return self.head(x[:, -1])


def shard(model: Net, mesh) -> Net:
    from torch.distributed.fsdp import fully_shard

    for name in ("embed", "attention", "proj", "conv", "lstm"):
        fully_shard(getattr(model, name), mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def whole(tensor: torch.Tensor) -> torch.Tensor:
    from eoi_torch.distributed import is_dtensor

    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def expected_local(reference: torch.Tensor, like) -> torch.Tensor:
    """This rank's piece of the single-process ``reference``, cut by torch itself (every rank holds the
    reference, so a local split: torch's scatter of strided shards needs even sizes)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(reference.contiguous(), like.device_mesh, like.placements,
                             src_data_rank=None).to_local()


def check_eoi(rank: int, world: int) -> None:
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    meshes = [(init_device_mesh("cpu", (world,)), [(Shard(0),), (Shard(1),), (Replicate(),)])]
    # Strided shards (FSDP2 on top of tensor parallelism) hold several runs of rows or columns.
    meshes[0][1].extend([(_StridedShard(0, split_factor=2),), (_StridedShard(1, split_factor=3),)])
    if world == 4:
        meshes.append((init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")), [
            (Shard(0), Shard(1)), (Shard(1), Shard(0)), (Replicate(), Shard(0)), (Shard(0), Shard(0)),
            (Shard(1), Replicate()), (_StridedShard(0, split_factor=2), Shard(0)),
            (_StridedShard(1, split_factor=2), Shard(1)), (Shard(1), _StridedShard(0, split_factor=3))]))
    cases = [((50, 21), {}, torch.float32), ((21, 50), {}, torch.float32),
             ((24, 6, 3, 3), {"groups": 2, "center_density": "sqrt"}, torch.float32),
             ((30, 30), {"gain": 2.0}, torch.bfloat16)]
    for mesh, placements_list in meshes:
        for placements in placements_list:
            for shape, options, dtype in cases:
                torch.manual_seed(3)
                reference = torch.empty(shape, dtype=dtype)
                reference_mask = eoi_torch.eoi_(reference, DENSITY, **options)
                after = torch.randint(0, 2**31, (4,))
                tensor = distribute_tensor(torch.zeros(shape, dtype=dtype), mesh, list(placements), src_data_rank=None)
                torch.manual_seed(3)
                mask = eoi_torch.eoi_(tensor, DENSITY, **options)
                where = f"rank {rank}, {shape}, {placements}"
                assert torch.equal(tensor.to_local(), expected_local(reference, tensor)), where
                assert tuple(mask.placements) == tuple(placements) and mask.device_mesh == mesh, where
                assert torch.equal(mask.to_local(), expected_local(reference_mask, tensor)), where
                assert torch.equal(mask.full_tensor(), reference_mask), where
                assert torch.equal(torch.randint(0, 2**31, (4,)), after), f"{where}: torch's RNG advanced differently"
    # sparsify on weights held in several runs (strided shards): the same masks and weights, and the
    # report's global numbers (mask counts, the probe's all-reduces over runs) as in one process.
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(21, 50), nn.Tanh(), nn.Linear(50, 21))
    model = copy.deepcopy(reference)
    for layer, placements in ((model[0], [_StridedShard(0, split_factor=2)]),
                              (model[2], [_StridedShard(1, split_factor=3)])):
        layer.weight = nn.Parameter(distribute_tensor(layer.weight.detach(), meshes[0][0], placements,
                                                      src_data_rank=None))
    torch.manual_seed(1)
    reference_report = eoi_torch.sparsify(reference, DENSITY, mode="hook")
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, DENSITY, mode="hook")
    check_same_report(report, reference_report, f"rank {rank}, sparsify on strided shards")
    for key, mask in eoi_torch.masks(reference).items():
        assert torch.equal(eoi_torch.masks(model)[key].full_tensor(), mask), f"rank {rank}: strided mask {key}"
        assert torch.equal(model.get_submodule(key).weight.full_tensor(), reference.get_submodule(key).weight), (
            f"rank {rank}: strided weight {key}")

    # A placement that is not one rectangle of the weight is an error, never a guessed weight.
    from torch.distributed.tensor import Partial
    from torch.distributed.tensor import DTensor

    partial = DTensor.from_local(torch.zeros(8, 8), meshes[0][0], [Partial()])
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    model[1].weight = nn.Parameter(partial)
    first = model[0].weight.detach().clone()
    for call in (lambda: eoi_torch.eoi_(partial, DENSITY), lambda: eoi_torch.sparsify(model, DENSITY)):
        state = torch.get_rng_state()
        try:
            call()
        except ValueError as error:
            assert "Partial" in str(error), error
        else:
            raise AssertionError("a Partial DTensor did not raise")
        assert torch.equal(torch.get_rng_state(), state), "a failed call advanced torch's RNG"
    assert torch.equal(model[0].weight, first) and not eoi_torch.masks(model), "a failed sparsify wrote"


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(11)
    return [(torch.randn(4, 5, 6, generator=generator), torch.randint(0, 3, (4,), generator=generator))
            for _ in range(steps)]


def train(model: nn.Module, steps: int = 3) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for x, y in batches(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every masked weight as the forward sees it (``layer.<name>``), gathered whole."""
    import eoi_torch

    modules = dict(model.named_modules())
    found = {}
    for key in eoi_torch.masks(model):  # "layer" for a weight, else "layer.parameter"
        layer, name = (key, "weight") if key in modules else key.rsplit(".", 1)
        found[key] = whole(getattr(modules[layer], name)).detach()
    return found


def assert_off_mask_zero(model: nn.Module, where: str) -> None:
    import eoi_torch

    masks = {key: whole(mask) for key, mask in eoi_torch.masks(model).items()}
    for key, weight in effective_weights(model).items():
        assert int(weight[~masks[key]].count_nonzero()) == 0, f"{where}: {key} moved off its mask"


def assert_shards_off_mask_zero(model: nn.Module, where: str) -> None:
    """Every masked parameter as stored (the sharded ``original`` in parametrize mode) is zero off its
    mask, rank by rank, on the local shards."""
    import eoi_torch

    modules = dict(model.named_modules())
    for key, mask in eoi_torch.masks(model).items():
        layer, name = (key, "weight") if key in modules else key.rsplit(".", 1)
        module = modules[layer]
        parametrized = name in getattr(module, "parametrizations", {})
        parameter = module.parametrizations[name].original if parametrized else module._parameters[name]
        local, local_mask = parameter.to_local(), mask.to_local()
        assert local.shape == local_mask.shape, f"{where}: {key}"
        assert int(local[~local_mask].count_nonzero()) == 0, f"{where}: the stored {key} moved off its mask"


def reference_run(mode: str) -> tuple[Net, object, list[float]]:
    import eoi_torch

    torch.manual_seed(0)
    model = Net()
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, DENSITY, mode=mode)
    report.rng_after = torch.randint(0, 2**31, (4,))  # where torch's RNG stands after sparsify
    trained = copy.deepcopy(model)
    return model, report, train(trained)


def check_same_report(report, reference, where: str) -> None:
    assert len(report) == len(reference), where
    for row, expected in zip(report, reference):
        assert (row.name, row.parameter, row.kind, row.shape, row.groups, row.status, row.mask_count, row.size) == (
            expected.name, expected.parameter, expected.kind, expected.shape, expected.groups, expected.status,
            expected.mask_count, expected.size), f"{where}: {row} != {expected}"
        assert row.density == expected.density, f"{where}: {row} != {expected}"
        if expected.orthogonality_error is not None:
            assert row.orthogonality_error is not None and row.orthogonality_error < 1e-5, f"{where}: {row}"


def check_sparsify_sharded(rank: int, world: int, mode: str, meta: bool) -> None:
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh

    where = f"rank {rank}, sparsify after fully_shard, mode={mode}, meta={meta}"
    mesh = init_device_mesh("cpu", (world,))
    reference, reference_report, reference_losses = reference_run(mode)
    torch.manual_seed(0)
    if meta:
        with torch.device("meta"):
            model = Net()
        shard(model, mesh)
        try:  # not materialised yet: a clear error, nothing drawn
            eoi_torch.sparsify(model, DENSITY)
        except ValueError as error:
            assert "to_empty" in str(error), error
        else:
            raise AssertionError("sparsify on meta DTensors did not raise")
        model.to_empty(device="cpu")
        torch.manual_seed(0)
        with torch.no_grad():  # the same values as the reference for everything EOI does not write
            for parameter, value in zip(model.parameters(), Net().parameters()):
                parameter.to_local().copy_(expected_local(value.detach(), parameter))
    else:
        model = shard(Net(), mesh)
    torch.manual_seed(1)
    # hook runs check verify="exact" (gathers each weight) against the reference's probe
    report = eoi_torch.sparsify(model, DENSITY, mode=mode, verify="exact" if mode == "hook" else "probe")
    assert torch.equal(torch.randint(0, 2**31, (4,)), reference_report.rng_after), f"{where}: torch's RNG"
    check_same_report(report, reference_report, where)
    assert list(report)[0].kind == "Linear", list(report)[0].kind

    masks, reference_masks = eoi_torch.masks(model), eoi_torch.masks(reference)
    assert sorted(masks) == sorted(reference_masks), where
    weights, reference_weights = effective_weights(model), effective_weights(reference)
    for key, mask in masks.items():
        assert torch.equal(mask.full_tensor(), reference_masks[key]), f"{where}: mask {key}"
        assert torch.equal(weights[key], reference_weights[key]), f"{where}: weight {key}"
    assert tuple(masks["embed"].placements) == tuple(model.embed.weight.placements), where
    assert torch.equal(model.embed.weight.to_local(), expected_local(reference.embed.weight.detach(),
                                                                      model.embed.weight)), where

    losses = train(model)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses, reference_losses)), (
        f"{where}: losses {losses} against one process {reference_losses}")
    assert_off_mask_zero(model, where)
    before = effective_weights(model)
    eoi_torch.make_permanent(model)
    assert eoi_torch.masks(model) == {}, where
    after = {key: whole(model.get_submodule(key).weight).detach() for key in ("embed", "conv", "head")}
    for key, value in after.items():
        assert torch.equal(value, before[key]), f"{where}: make_permanent changed {key}"
    train(model, 1)  # FSDP2 still trains the plain parameters


def check_scheme(rank: int, world: int) -> None:
    """Another scheme has no shard function: built whole from the same seed, each rank keeps its shard."""
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4))
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    eoi_torch.sparsify(reference, 0.5, scheme="kaiming")
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, 0.5, scheme="kaiming")
    assert [row.orthogonality_error for row in report] == [None, None], report
    for key, mask in eoi_torch.masks(reference).items():
        assert torch.equal(eoi_torch.masks(model)[key].full_tensor(), mask), f"rank {rank}: scheme mask {key}"
        assert torch.equal(whole(model.get_submodule(key).weight).detach(), reference.get_submodule(key).weight), (
            f"rank {rank}: scheme weight {key}")


def check_sparsify_then_shard(rank: int, world: int, mode: str) -> None:
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh

    where = f"rank {rank}, fully_shard after sparsify, mode={mode}"
    mesh = init_device_mesh("cpu", (world,))
    reference, _, reference_losses = reference_run(mode)
    torch.manual_seed(0)
    model = Net()
    torch.manual_seed(1)
    eoi_torch.sparsify(model, DENSITY, mode=mode)
    shard(model, mesh)
    losses = train(model)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses, reference_losses)), (
        f"{where}: losses {losses} against one process {reference_losses}")
    assert_off_mask_zero(model, where)
    weight = model.embed.weight
    assert type(weight).__name__ == "DTensor", f"{where}: {type(weight)}"
    before = effective_weights(model)
    eoi_torch.make_permanent(model)
    assert eoi_torch.masks(model) == {}, where
    assert torch.equal(whole(model.embed.weight).detach(), before["embed"]), where
    train(model, 1)


def check_state_dict(rank: int, world: int, mode: str, directory: str) -> None:
    """A sharded, sparsified, trained model saved and loaded: ``state_dict``/``load_state_dict`` into a
    fresh sharded model (``prepare_for_load``), and ``torch.distributed.checkpoint`` save/load."""
    import eoi_torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    where = f"rank {rank}, state dict, mode={mode}"
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = shard(Net(), mesh)
    torch.manual_seed(1)
    eoi_torch.sparsify(model, DENSITY, mode=mode)
    train(model, 2)
    state = model.state_dict()
    saved = {key: value.to_local().clone() for key, value in state.items()}
    dcp.save(state, checkpoint_id=directory)

    def same_as_saved(fresh: nn.Module, how: str) -> None:
        loaded = fresh.state_dict()
        assert sorted(loaded) == sorted(saved), f"{where}, {how}: keys {sorted(loaded)}"
        for key, value in loaded.items():
            assert type(value).__name__ == "DTensor", f"{where}, {how}: {key} is a {type(value)}"
            assert torch.equal(value.to_local(), saved[key]), f"{where}, {how}: {key}"
        for key, mask in eoi_torch.masks(fresh).items():
            assert torch.equal(mask.full_tensor(), eoi_torch.masks(model)[key].full_tensor()), f"{where}: {key}"
        assert_shards_off_mask_zero(fresh, f"{where}, {how}")
        train(fresh, 2)  # the loaded masks keep the zeros in training
        assert_off_mask_zero(fresh, f"{where}, {how}, trained")
        assert_shards_off_mask_zero(fresh, f"{where}, {how}, trained")

    torch.manual_seed(7)
    fresh = eoi_torch.prepare_for_load(shard(Net(), mesh), state)
    result = fresh.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys, f"{where}: {result}"
    same_as_saved(fresh, "load_state_dict")

    # torch.distributed.checkpoint loads in place into a model of the same structure: sparsify a freshly
    # sharded model (any seed, the same mode), then load.
    torch.manual_seed(7)
    fresh = shard(Net(), mesh)
    eoi_torch.sparsify(fresh, DENSITY, mode=mode)
    loading = fresh.state_dict()
    dcp.load(loading, checkpoint_id=directory)
    fresh.load_state_dict(loading)
    same_as_saved(fresh, "torch.distributed.checkpoint")


class Tied(nn.Module):
    """A language model's tie: the output head holds the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 12, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(self.embed(tokens))))


def train_tied(model: nn.Module, steps: int = 3) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(9)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, 12, (4, 5), generator=generator)
        loss = nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def check_tied(rank: int, world: int, mode: str) -> None:
    """A tied embedding / output head under FSDP2: skip reports it, sparsify gives one mask and training
    keeps the tie and the zeros, error raises before anything is written."""
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    where = f"rank {rank}, tied under FSDP2, mode={mode}"
    mesh = init_device_mesh("cpu", (world,))

    def build() -> Tied:
        torch.manual_seed(0)
        model = Tied()
        fully_shard(model.body, mesh=mesh)
        return fully_shard(model, mesh=mesh)  # the tied weight lives in the root's group

    model = build()
    assert model.head.weight is model.embed.weight, f"{where}: fully_shard broke the tie"
    report = eoi_torch.sparsify(model, DENSITY, mode=mode)  # tied="skip"
    rows = {row.name: row for row in report}
    assert rows["head"].status == "skipped" and "tied with 'embed.weight'" in rows["head"].reason, report
    assert sorted(eoi_torch.masks(model)) == ["body"], where

    model = build()
    state = torch.get_rng_state()
    try:
        eoi_torch.sparsify(model, DENSITY, mode=mode, tied="error")
    except ValueError as error:
        assert "embed.weight" in str(error), error
    else:
        raise AssertionError(f"{where}: tied='error' did not raise")
    assert torch.equal(torch.get_rng_state(), state) and not eoi_torch.masks(model), where

    torch.manual_seed(0)
    reference = Tied()
    torch.manual_seed(1)
    reference_report = eoi_torch.sparsify(reference, DENSITY, mode=mode, tied="sparsify")
    reference_losses = train_tied(copy.deepcopy(reference))
    model = build()
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, DENSITY, mode=mode, tied="sparsify")
    check_same_report(report, reference_report, where)
    masks = eoi_torch.masks(model)
    expected = {"body", "embed", "head"} if mode == "parametrize" else {"body", "head"}  # hook: the primary
    assert set(masks) == expected, f"{where}: {sorted(masks)}"
    if mode == "parametrize":  # one mask object and one parameter for both holders
        assert masks["embed"] is masks["head"], where
        assert model.embed.parametrizations.weight.original is model.head.parametrizations.weight.original
    else:
        assert model.embed.weight is model.head.weight, where
    assert torch.equal(masks["head"].full_tensor(), eoi_torch.masks(reference)["head"]), where
    losses = train_tied(model)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses, reference_losses)), (
        f"{where}: losses {losses} against one process {reference_losses}")
    assert torch.equal(whole(model.embed.weight).detach(), whole(model.head.weight).detach()), (
        f"{where}: training broke the tie")
    assert_off_mask_zero(model, where)
    assert_shards_off_mask_zero(model, where)


def check_gpt2(rank: int, world: int, mode: str) -> None:
    """transformers' GPT-2 (Conv1D weights stored ``(in, out)``, fused c_attn, a tied word embedding / LM
    head) under FSDP2 with ``tied="sparsify"``: the single-process masks and weights, the tie kept in training."""
    try:
        import transformers
    except ImportError:
        return
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    where = f"rank {rank}, GPT-2 under FSDP2, mode={mode}"
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(config)
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    reference_report = eoi_torch.sparsify(reference, DENSITY, mode=mode, tied="sparsify")
    mesh = init_device_mesh("cpu", (world,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert model.lm_head.weight is model.transformer.wte.weight, f"{where}: fully_shard broke the tie"
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, DENSITY, mode=mode, tied="sparsify")
    check_same_report(report, reference_report, where)
    masks, reference_masks = eoi_torch.masks(model), eoi_torch.masks(reference)
    assert sorted(masks) == sorted(reference_masks), where
    weights, reference_weights = effective_weights(model), effective_weights(reference)
    for key, mask in masks.items():
        assert torch.equal(mask.full_tensor(), reference_masks[key]), f"{where}: mask {key}"
        assert torch.equal(weights[key], reference_weights[key]), f"{where}: weight {key}"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tokens = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        optimizer.zero_grad()
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
    assert torch.equal(whole(model.lm_head.weight).detach(), whole(model.transformer.wte.weight).detach()), where
    assert_off_mask_zero(model, where)
    assert_shards_off_mask_zero(model, where)


class MLP(nn.Module):
    """Two tensor-parallel layers (column- then row-wise, as in a transformer's MLP) and a plain head."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 10)
        self.down = nn.Linear(10, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def train_mlp(model: nn.Module, steps: int = 3) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def check_mixed_precision(rank: int, world: int, mode: str) -> None:
    """FSDP2 computing in bfloat16 (``MixedPrecisionPolicy``) on float32 sharded parameters: training keeps
    the float32 shards exactly zero off their masks, and the masks themselves do not change."""
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    where = f"rank {rank}, mixed precision, mode={mode}"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = MLP()
    for layer in (model.up, model.down):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    torch.manual_seed(1)
    eoi_torch.sparsify(model, DENSITY, mode=mode)
    before = {key: mask.full_tensor() for key, mask in eoi_torch.masks(model).items()}
    stored = model.up.parametrizations.weight.original if mode == "parametrize" else model.up.weight
    initial = stored.full_tensor()
    seen = []
    model.up.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    losses = train_mlp(model, 4)
    assert seen and set(seen) == {torch.bfloat16}, f"{where}: the forward ran in {set(seen)}"
    assert all(torch.isfinite(torch.tensor(losses))), f"{where}: {losses}"
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.float32 and type(parameter).__name__ == "DTensor", f"{where}: {name}"
    assert_shards_off_mask_zero(model, where)
    assert_off_mask_zero(model, where)
    for key, mask in eoi_torch.masks(model).items():
        assert torch.equal(mask.full_tensor(), before[key]), f"{where}: mask {key} changed"
    assert not torch.equal(stored.full_tensor(), initial), f"{where}: the weight did not train"


def check_fsdp_tp(rank: int, world: int, mode: str, directory: str) -> None:
    """FSDP2 over ``dp`` on top of tensor parallelism over ``tp`` (a (2, 2) mesh): strided shards."""
    import eoi_torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    from eoi_torch.distributed import gather

    where = f"rank {rank}, FSDP2 + TP, mode={mode}"
    torch.manual_seed(0)
    reference = MLP()
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    reference_report = eoi_torch.sparsify(reference, DENSITY, mode=mode)
    reference_losses = train_mlp(copy.deepcopy(reference))

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))

    def parallel(model: MLP) -> MLP:
        parallelize_module(model, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
        return fully_shard(model, mesh=mesh["dp"])

    parallel(model)
    assert isinstance(model.up.weight.placements[0], _StridedShard), model.up.weight.placements
    torch.manual_seed(1)
    report = eoi_torch.sparsify(model, DENSITY, mode=mode)
    check_same_report(report, reference_report, where)
    masks, reference_masks = eoi_torch.masks(model), eoi_torch.masks(reference)
    assert sorted(masks) == sorted(reference_masks) == ["down", "head", "up"], where
    weights, reference_weights = effective_weights(model), effective_weights(reference)
    for key, mask in masks.items():
        parameter = dict(model.named_parameters())[  # the sharded parameter, either mode
            f"{key}.parametrizations.weight.original" if mode == "parametrize" else f"{key}.weight"]
        assert tuple(mask.placements) == tuple(parameter.placements), f"{where}: {key}"
        assert torch.equal(mask.to_local(), expected_local(reference_masks[key], parameter)), f"{where}: mask {key}"
        assert torch.equal(parameter.to_local(), expected_local(reference_weights[key], parameter)), (
            f"{where}: weight {key}")
        assert torch.equal(weights[key], reference_weights[key]), f"{where}: layer.weight {key}"
    # Inside FSDP2's forward a TP weight is a DTensor on the tp sub-mesh: its mask is the TP piece.
    for key, placement in (("up", Shard(0)), ("down", Shard(1))):
        piece = distribute_tensor(reference_weights[key], mesh["tp"], [placement], src_data_rank=None)
        gathered = gather(masks[key], piece)
        assert tuple(gathered.placements) == (placement,) and gathered.device_mesh == mesh["tp"], where
        assert torch.equal(gathered.to_local(), expected_local(reference_masks[key], piece)), f"{where}: {key}"
    flat = distribute_tensor(reference_weights["up"], init_device_mesh("cpu", (world,)), [Shard(1)], src_data_rank=None)
    assert torch.equal(gather(masks["up"], flat).to_local(), expected_local(reference_masks["up"], flat)), where
    losses = train_mlp(model)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses, reference_losses)), (
        f"{where}: losses {losses} against one process {reference_losses}")
    assert_off_mask_zero(model, where)
    assert_shards_off_mask_zero(model, where)

    # Saved and loaded with strided shards: state_dict into a fresh model, and torch.distributed.checkpoint.
    state = model.state_dict()
    saved = {key: value.to_local().clone() for key, value in state.items()}
    dcp.save(state, checkpoint_id=directory)
    fresh = eoi_torch.prepare_for_load(parallel(MLP()), state)
    result = fresh.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys, f"{where}: {result}"
    other = parallel(MLP())
    eoi_torch.sparsify(other, DENSITY, mode=mode)
    loading = other.state_dict()
    dcp.load(loading, checkpoint_id=directory)
    other.load_state_dict(loading)
    for how, loaded in (("load_state_dict", fresh), ("torch.distributed.checkpoint", other)):
        for key, value in loaded.state_dict().items():
            assert torch.equal(value.to_local(), saved[key]), f"{where}, {how}: {key}"
        train_mlp(loaded, 2)
        assert_shards_off_mask_zero(loaded, f"{where}, {how}, trained")

    before = effective_weights(model)
    eoi_torch.make_permanent(model)
    assert eoi_torch.masks(model) == {}, where
    for key in ("up", "down", "head"):
        assert torch.equal(whole(model.get_submodule(key).weight).detach(), before[key]), f"{where}: {key}"
    train_mlp(model, 1)


def check_sparsify_then_tp(rank: int, world: int) -> None:
    """``sparsify`` (hook mode) first, then tensor parallelism and FSDP2: every rank keeps whole masks, cut
    to its strided shards where used; training tracks one process and keeps the zeros.  (Parametrize mode
    cannot go first: torch's ``parallelize_module`` does not shard a parametrized weight.)"""
    import eoi_torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    where = f"rank {rank}, sparsify, then TP and FSDP2"
    torch.manual_seed(0)
    model = MLP()
    torch.manual_seed(1)
    eoi_torch.sparsify(model, DENSITY, mode="hook")
    reference_losses = train_mlp(copy.deepcopy(model))
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    parallelize_module(model, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
    fully_shard(model, mesh=mesh["dp"])
    losses = train_mlp(model)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses, reference_losses)), (
        f"{where}: losses {losses} against one process {reference_losses}")
    assert_off_mask_zero(model, where)


def run(rank: int, world: int, store: str) -> None:
    # Rendezvous through a file (no port to pick, so no race with other processes for a free
    # port); gloo's own connections stay on the loopback interface.
    os.environ.update(GLOO_SOCKET_IFNAME="lo", EOI_NUM_THREADS="1")
    sys.path[:0] = [str(ROOT / "adapters"), str(ROOT)]
    # This test model's layers return views (attention output, LSTM output): FSDP2 warns about in-place
    # use, which these checks do not make.
    warnings.filterwarnings("ignore", message=".*returned a view tensor")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        check_eoi(rank, world)
        for mode in ("parametrize", "hook"):
            check_sparsify_sharded(rank, world, mode, meta=False)
            check_sparsify_then_shard(rank, world, mode)
        check_sparsify_sharded(rank, world, "parametrize", meta=True)
        check_scheme(rank, world)
        if world == 2:  # world 4 saves and loads strided shards in check_fsdp_tp
            for mode in ("parametrize", "hook"):
                check_state_dict(rank, world, mode, os.path.join(os.path.dirname(store), f"checkpoint-{mode}"))
                check_tied(rank, world, mode)
                check_gpt2(rank, world, mode)
                check_mixed_precision(rank, world, mode)
        if world == 4:
            for mode in ("parametrize", "hook"):
                check_fsdp_tp(rank, world, mode, os.path.join(os.path.dirname(store), f"tp-{mode}"))
            check_sparsify_then_tp(rank, world)
        dist.barrier()
        if rank == 0:
            print(f"world {world}: all checks passed", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    world = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory() as directory:
        mp.spawn(run, args=(world, os.path.join(directory, "store")), nprocs=world, join=True)
