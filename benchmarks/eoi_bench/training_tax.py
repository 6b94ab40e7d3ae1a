"""The training tax of keeping masks: step and forward time of a sparsified MLP over the dense one.

A stack of ``nn.Linear(width, width)`` + ReLU layers is timed, side by side in
one run, dense and sparsified by ``eoi_torch.sparsify`` in each masking mode:
``parametrize`` (``weight = original * mask`` on every access), ``hook`` (the
gradient masked after backward, no forward overhead) and ``hook`` with
``eoi_torch.keep_masks`` (the weights re-zeroed after every optimizer step
too).  A training step is forward, MSE backward and an AdamW step; inference
is a forward under ``torch.no_grad()``, for ``parametrize`` also inside
``torch.nn.utils.parametrize.cached()`` (each masked weight computed once per
block).  The modes are stepped round-robin (one step of each in turn), so a
change in machine load hits all of them alike; cells are medians over rounds
after warm-up, ratios are over dense.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from typing import Callable

from . import report
from ._command import add_common, configure_torch, standalone
from .argtypes import positive_int

MODES = ("dense", "parametrize", "hook", "hook+keep_masks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, threads=True)
    parser.add_argument("--steps", type=positive_int, default=7, help="timed steps per cell (median)")
    parser.add_argument("--layers", type=positive_int, default=4, help="Linear layers (default: %(default)s)")
    parser.set_defaults(threads=2)


def _interleaved(functions: dict[str, Callable[[], object]], steps: int, warmup: int = 2) -> dict[str, float]:
    """Median time of each function, called round-robin so that load changes hit every one alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(warmup + steps):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _build(mode: str, layers: int, width: int):
    import torch
    from torch import nn

    import eoi_torch

    torch.manual_seed(0)
    model = nn.Sequential(*[module for _ in range(layers) for module in (nn.Linear(width, width), nn.ReLU())])
    if mode != "dense":
        eoi_torch.sparsify(model, 0.1, distribution="uniform", mode=mode.split("+")[0], verify=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    if mode == "hook+keep_masks":
        eoi_torch.keep_masks(optimizer, model)
    return model, optimizer


def run(args: argparse.Namespace) -> dict:
    configure_torch(args.threads)
    import torch
    from torch.nn.utils import parametrize

    out = report.prepare_output(args.out)
    width = 512 if args.quick else 4096
    batches = (64,) if args.quick else (64, 512)
    steps = 3 if args.quick else args.steps
    rows, table = [], []
    for batch in batches:
        inputs = torch.randn(batch, width)
        targets = torch.randn(batch, width)
        built = {mode: _build(mode, args.layers, width) for mode in MODES}

        def step(model, optimizer):
            def run_step():
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(model(inputs), targets).backward()
                optimizer.step()
            return run_step

        def forward(model, cached=False):
            def run_forward():
                with torch.no_grad(), (parametrize.cached() if cached else contextlib.nullcontext()):
                    model(inputs)
            return run_forward

        steps_timed = _interleaved({mode: step(*built[mode]) for mode in MODES}, steps)
        forwards = {mode: forward(built[mode][0]) for mode in MODES}
        forwards["parametrize cached"] = forward(built["parametrize"][0], cached=True)
        forwards_timed = _interleaved(forwards, steps)
        cells = {mode: {"step": steps_timed[mode], "forward": forwards_timed[mode]} for mode in MODES}
        cells["parametrize"]["cached forward"] = forwards_timed["parametrize cached"]
        del built
        print(f"  batch {batch}: done", file=sys.stderr)
        dense = cells["dense"]
        for mode in MODES:
            cell = cells[mode]
            rows.append({"batch": batch, "mode": mode, **cell})
            table.append([batch, mode, f"{cell['step'] * 1e3:.1f}", f"{cell['step'] / dense['step']:.3f}x",
                          f"{cell['forward'] * 1e3:.1f}", f"{cell['forward'] / dense['forward']:.3f}x",
                          "-" if "cached forward" not in cell else
                          f"{cell['cached forward'] * 1e3:.1f} ({cell['cached forward'] / dense['forward']:.3f}x)"])
    headers = ["batch", "mode", "step (ms)", "step / dense", "forward (ms)", "forward / dense",
               "cached() forward (ms)"]
    text = report.markdown_table(headers, table, align="rlrrrrr")
    print(f"{args.layers} x Linear({width}) + ReLU, density 0.1, AdamW, threads={args.threads}, "
          f"median of {steps} steps\n{text}")
    report.write_text(out / "training_tax.md", text)
    report.write_json(out / "training_tax.json", rows)

    plt = report.pyplot()
    figure, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 3.2), squeeze=False)
    for axis, batch in zip(axes[0], batches):
        chosen = [row for row in rows if row["batch"] == batch]
        dense = chosen[0]["step"]
        axis.bar([row["mode"] for row in chosen], [row["step"] / dense for row in chosen], color="tab:blue")
        axis.axhline(1.05, color="gray", linestyle="--", linewidth=1, label="1.05x dense")
        axis.set_title(f"training step, batch {batch}")
        axis.set_ylabel("time / dense")
        axis.tick_params(axis="x", labelsize=7)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "training_tax.png", dpi=120)
    plt.close(figure)
    return {"rows": rows}


def main(argv=None) -> int:
    return standalone("training-tax", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
