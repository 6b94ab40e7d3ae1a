"""eoi_torch on torch.distributed: DTensor shards and FSDP2 (``fully_shard``), real multi-process runs.

The multi-process checks live in ``tests/torch_distributed_check.py`` (its
docstring lists them): one ``torch.multiprocessing`` spawn per world size, gloo
on 127.0.0.1, every rank comparing its own shard with the single-process
result.  The tests here run it for world sizes 2 and 4, and check in one
process what needs no process group.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)

import eoi_torch  # noqa: E402
from torch import nn  # noqa: E402

CHECK = Path(__file__).with_name("torch_distributed_check.py")


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_builds_its_shard_and_fsdp2_trains(world):
    environment = dict(os.environ, EOI_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, str(CHECK), str(world)], capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert f"world {world}: all checks passed" in result.stdout


def test_plain_tensors_do_not_touch_torch_distributed(torch_one_thread):
    """Without a process group nothing changes: eoi_ and sparsify on plain tensors stay single-process."""
    from eoi_torch.distributed import is_dtensor

    weight = torch.empty(16, 8)
    mask = eoi_torch.eoi_(weight, 0.5)
    assert not is_dtensor(mask) and not torch.distributed.is_initialized()


def test_hook_mode_rearms_layers_whose_forward_never_runs(torch_one_thread):
    """MultiheadAttention reads out_proj.weight without calling out_proj: after a deepcopy (and after
    fully_shard, which swaps parameter objects) the model's own pre-hook re-arms its gradient mask."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8))
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    eoi_torch.sparsify(attention, 0.3, mode="hook")
    attention = copy.deepcopy(attention)
    optimizer = torch.optim.SGD(attention.parameters(), lr=0.5)
    x = model(torch.randn(2, 3, 4))
    for _ in range(2):
        optimizer.zero_grad()
        attention(x, x, x)[0].square().sum().backward(retain_graph=True)
        optimizer.step()
    masks = eoi_torch.masks(attention)
    assert int(attention.out_proj.weight[~masks["out_proj"]].count_nonzero()) == 0
    assert int(attention.in_proj_weight[~masks["in_proj_weight"]].count_nonzero()) == 0


@pytest.mark.parametrize(("recipe", "ranks", "printed"), [(0, 2, "0.1000"), (1, 4, "_StridedShard(dim=0, sf=2)")],
                         ids=["fsdp2", "fsdp2+tp"])
def test_the_fsdp2_recipes_run(tmp_path, recipe, ranks, printed):
    """docs/sharding.md's PyTorch recipes, as written, under torchrun with CPU ranks: FSDP2, then FSDP2
    on top of tensor parallelism with a torch.distributed.checkpoint round trip."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "sharding.md").read_text()
    section = text.split("## Initialising a model larger than one machine (PyTorch DTensor / FSDP2)", 1)
    assert len(section) == 2, "docs/sharding.md lost its PyTorch recipes"
    blocks = re.findall(r"```py\n(.*?)```", section[1].split("\n## ", 1)[0], flags=re.S)
    assert len(blocks) == 2
    script = tmp_path / "recipe.py"
    script.write_text(blocks[recipe])
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1",
                       PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), str(script)],
        capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert printed in result.stdout  # rank 0 printed the report / the placements
