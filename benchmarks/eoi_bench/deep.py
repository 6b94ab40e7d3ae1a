"""Deep vanilla sparse MLPs: EOI against random sparse baselines (the paper's Table 1, CPU version).

A ``depth``-layer tanh MLP (width 128, no residuals, no normalisation), every
layer at the same density (0.125), initialised at the critical point of tanh
(gain 1.0247, bias standard deviation 0.00448), trained with SGD on the
digits.  Every scheme gets the same masks budget, data order and optimiser;
only the initial weights (and, for the baselines, where the mask falls)
differ.

``eoi bench deep`` runs the paper's 1000 layers; ``eoi demo`` is the same
comparison at 200 layers (see :mod:`eoi_bench.demo`).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import report
from ._command import add_common, configure_torch, standalone
from .argtypes import nonnegative_float, positive_float, positive_int, fraction, nonnegative_int
from .data import Dataset, load
from .schemes import ACTIVATION_NAMES, LABELS, TANH_CRITICAL_BIAS_STD, TANH_CRITICAL_GAIN, TRAINING_SCHEMES

if TYPE_CHECKING:  # torch is imported only when a network is trained: `eoi init` stays fast
    from .train import History

# Default SGD learning rates.  Measured on the digits with EOI: 0.005 trains a 200-layer net
# smoothly, but at 1000 layers it reaches loss 1.0 in two epochs and then blows up back to
# chance in the third; 0.002 trains 1000 layers steadily.
SHALLOW_LR, DEEP_LR, DEEP_FROM = 0.005, 0.002, 500

__all__ = ["Setting", "Run", "compare", "results_table", "plot_histories", "add_arguments", "run", "main"]


@dataclass(frozen=True)
class Setting:
    """One training comparison: the network, the optimiser and the data."""

    depth: int
    width: int = 128
    density: float = 0.125
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.005
    momentum: float = 0.9
    gain: float = TANH_CRITICAL_GAIN
    bias_std: float = TANH_CRITICAL_BIAS_STD
    activation: str = "tanh"
    seed: int = 0

    def describe(self, data: Dataset) -> str:
        return (f"{self.depth}-layer {self.activation} MLP, width {self.width}, density {self.density:g}, "
                f"{data.name}; SGD lr {self.learning_rate:g} momentum {self.momentum:g}, "
                f"batch {self.batch_size}, {self.epochs} epochs, gain {self.gain:g}, "
                f"bias std {self.bias_std:g}, seed {self.seed}")


@dataclass
class Run:
    """One scheme's result: its history and how long its initialisation took."""

    scheme: str
    label: str
    init_seconds: float
    history: "History"


def compare(data: Dataset, setting: Setting, schemes: Sequence[str], *, progress: bool = True,
            angles: dict[str, float | None] | None = None) -> list[Run]:
    """Train one network per scheme (same seed, data order and optimiser) and return the runs.

    ``angles`` maps extra labels to fixed EOI angles (radians) for the angle
    study; when given, ``schemes`` is ignored and every run is EOI.
    """
    from .models import SparseMLP
    from .train import train

    variants = ([(label, "eoi", angle) for label, angle in angles.items()] if angles is not None
                else [(LABELS.get(scheme, scheme), scheme, None) for scheme in schemes])
    runs = []
    for label, scheme, angle in variants:
        start = time.perf_counter()
        model = SparseMLP(data.features, data.classes, width=setting.width, depth=setting.depth,
                          density=setting.density, scheme=scheme, activation=setting.activation,
                          gain=setting.gain, bias_std=setting.bias_std, seed=setting.seed, angle=angle)
        init_seconds = time.perf_counter() - start
        history = train(model, data, epochs=setting.epochs, batch_size=setting.batch_size,
                        learning_rate=setting.learning_rate, momentum=setting.momentum,
                        seed=setting.seed, progress=progress, description=label)
        runs.append(Run(scheme, label, init_seconds, history))
    return runs


def results_table(runs: Sequence[Run], classes: int) -> str:
    """Markdown: loss at init, final train loss, test accuracy and times per scheme.

    The verdict compares the final loss with chance (``ln classes``): below half of
    it "trains", below 90% "slow", else "stuck" (or "diverged").
    """
    chance = math.log(classes)
    rows = []
    for run in runs:
        history = run.history
        if history.diverged:
            note = "diverged"
        elif history.final_loss < 0.5 * chance:
            note = "trains"
        elif history.final_loss < 0.9 * chance:
            note = "slow"
        else:
            note = "stuck"
        rows.append([run.label, history.train_loss[0], history.final_loss, history.final_accuracy,
                     round(run.init_seconds, 2), round(history.seconds, 1), note])
    headers = ["scheme", "train loss at init", "final train loss", "test accuracy",
               "init [s]", "train [s]", "verdict"]
    return report.markdown_table(headers, rows)


def plot_histories(runs: Sequence[Run], path: Path, title: str, classes: int) -> Path:
    """Two panels: training loss and test accuracy against epochs, one line per run."""
    plt = report.pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["-", "--", "-.", ":"]  # runs stuck at chance coincide: the styles keep each visible
    markers = ["o", "s", "^", "v"]
    for index, run in enumerate(runs):
        epochs = range(len(run.history.train_loss))
        style = dict(marker=markers[index % 4], markersize=4, linestyle=styles[index % 4], label=run.label)
        loss_axis.plot(epochs, run.history.train_loss, **style)
        accuracy_axis.plot(epochs, run.history.test_accuracy, **style)
    loss_axis.axhline(math.log(classes), color="grey", linestyle=":", label=f"chance (ln {classes})")
    accuracy_axis.axhline(1.0 / classes, color="grey", linestyle=":", label="chance")
    loss_axis.set(xlabel="epoch", ylabel="training loss (whole train set)", yscale="log")
    accuracy_axis.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
    loss_axis.legend(fontsize=8)
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def add_training_arguments(parser: argparse.ArgumentParser, *, depth: int, quick_depth: int,
                           epochs: int, quick_epochs: int) -> None:
    """The options of every training benchmark; ``None`` defaults are resolved by ``--quick``."""
    parser.add_argument("--depth", type=positive_int, default=None,
                        help=f"hidden layers (default: {depth}; --quick: {quick_depth})")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default: {epochs}; --quick: {quick_epochs})")
    parser.add_argument("--width", type=positive_int, default=128, help="hidden width (default: %(default)s)")
    parser.add_argument("--density", type=fraction, default=0.125,
                        help="density of every layer (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="(default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"SGD learning rate (default: {SHALLOW_LR:g} up to {DEEP_FROM - 1} layers, "
                             f"{DEEP_LR:g} from {DEEP_FROM})")
    parser.add_argument("--momentum", type=nonnegative_float, default=0.9,
                        help="SGD momentum (default: %(default)s; 0 for plain SGD)")
    parser.add_argument("--gain", type=positive_float, default=TANH_CRITICAL_GAIN,
                        help="weight scale of every scheme (default: %(default)s, tanh's critical point)")
    parser.add_argument("--bias-std", type=nonnegative_float, default=TANH_CRITICAL_BIAS_STD,
                        help="bias standard deviation (default: %(default)s)")
    parser.add_argument("--activation", choices=ACTIVATION_NAMES, default="tanh",
                        help="(default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="(default: %(default)s)")
    parser.add_argument("--mnist", metavar="PATH", default=None,
                        help="train on MNIST from this local .npz (x_train, y_train, x_test, y_test) "
                             "instead of the digits; nothing is downloaded")
    add_common(parser, progress=True, threads=True)
    parser.set_defaults(_depths=(depth, quick_depth), _epochs=(epochs, quick_epochs))


def resolve_setting(args: argparse.Namespace) -> Setting:
    """The :class:`Setting` the options ask for (``--quick`` picks the small defaults)."""
    pick = 1 if args.quick else 0
    depth = args.depth if args.depth is not None else args._depths[pick]
    epochs = args.epochs if args.epochs is not None else args._epochs[pick]
    learning_rate = args.lr if args.lr is not None else (DEEP_LR if depth >= DEEP_FROM else SHALLOW_LR)
    if args.momentum >= 1.0:
        raise ValueError(f"--momentum must lie in [0, 1), got {args.momentum}")
    return Setting(depth=depth, width=args.width, density=args.density, epochs=epochs,
                   batch_size=args.batch_size, learning_rate=learning_rate, momentum=args.momentum,
                   gain=args.gain, bias_std=args.bias_std, activation=args.activation, seed=args.seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, depth=1000, quick_depth=50, epochs=5, quick_epochs=1)
    parser.add_argument("--schemes", nargs="+", choices=TRAINING_SCHEMES, default=list(TRAINING_SCHEMES),
                        help="schemes to compare (default: all)")


def run_training(args: argparse.Namespace, name: str) -> list[Run]:
    """Load data, train every scheme, print the table, write ``{name}.png/.md/.json``."""
    setting = resolve_setting(args)
    out = report.prepare_output(args.out)
    data = load(args.mnist)
    configure_torch(args.threads)
    description = setting.describe(data)
    print(description, flush=True)
    runs = compare(data, setting, args.schemes, progress=args.progress)
    table = results_table(runs, data.classes)
    print(table)
    png = plot_histories(runs, out / f"{name}.png", description, data.classes)
    report.write_text(out / f"{name}.md", f"{description}\n\n{table}")
    report.write_json(out / f"{name}.json", {
        "setting": setting.__dict__, "data": data.name,
        "runs": [{"scheme": r.scheme, "label": r.label, "init_seconds": r.init_seconds,
                  **r.history.__dict__} for r in runs]})
    print(f"wrote {png}, {out / f'{name}.md'} and {out / f'{name}.json'}")
    return runs


def run(args: argparse.Namespace) -> list[Run]:
    return run_training(args, "deep")


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/deep.py [--quick] [--out DIR] ...``"""
    return standalone("deep.py", __doc__.splitlines()[0], add_arguments, run, argv)
