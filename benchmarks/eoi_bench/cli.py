"""The ``eoi`` command: ``eoi demo``, ``eoi init`` and ``eoi bench {speed,density,spectrum,deep,angles}``.

Every subcommand has working defaults and a ``--quick`` variant.  Bad
arguments end with a ``usage`` line, a message saying what was wrong and
exit status 2; never with a traceback (set ``EOI_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from ._command import execute
from .registry import BENCHMARKS

__all__ = ["main", "build_parser", "BENCHMARKS"]



def _plain(text: str) -> str:
    return text.replace("``", "").strip()


def _add(subparsers: argparse._SubParsersAction, name: str, module_name: str, help_text: str) -> None:
    module = importlib.import_module(f"eoi_bench.{module_name}")
    # The module docstring's first paragraph is the description; a module may add an epilog.
    parser = subparsers.add_parser(name, help=help_text, description=_plain(module.__doc__.split("\n\n")[0]),
                                   epilog=_plain(getattr(module, "CLI_EPILOG", "")) or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run, _parser=parser)


def build_parser() -> argparse.ArgumentParser:
    """The full ``eoi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="eoi", description="Exact Orthogonal Initialization (EOI) of sparse neural networks: "
                                "demo, weight export and the paper's benchmarks on a CPU.")
    parser.add_argument("--version", action="version", version=f"eoi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add(commands, "demo", "demo", "deep sparse tanh MLPs on digits: EOI trains, random sparse inits do not")
    _add(commands, "init", "init_npz", "write an EOI weight and mask to an .npz file")
    bench = commands.add_parser("bench", help="run one of the paper's benchmarks",
                                description="Run one of the paper's benchmarks (each prints a table and writes a PNG).")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        _add(benchmarks, name, name, help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eoi`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    return execute(args._parser, args._run, args)


if __name__ == "__main__":
    raise SystemExit(main())
