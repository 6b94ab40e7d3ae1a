"""The ``eoi`` command: ``eoi init``, ``eoi demo`` and ``eoi bench NAME``.

``eoi init`` needs only the base install (NumPy and Numba).  ``eoi demo`` and
``eoi bench NAME`` run the implementations in :mod:`eoi_bench`, imported only
when asked for; where their optional dependencies are missing the command
prints one line naming the extra to install (``pip install "eoi[bench]"``) and
exits with status 1.

The demo and every benchmark have working defaults and a ``--quick`` variant.
Bad arguments end with a ``usage`` line, a message saying what was wrong and
exit status 2; never with a traceback (set ``EOI_DEBUG=1`` to see one).

>>> print(MissingExtra("eoi demo", "torch", "bench"))
eoi demo needs the optional dependency 'torch', which is not installed; install it with: pip install "eoi[bench]"
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable, Sequence

from ._version import __version__

__all__ = ["main", "build_parser", "execute", "MissingExtra", "COMMAND_EXTRAS", "EXTRA_MODULES"]

#: The extra each command's optional dependencies come with.
COMMAND_EXTRAS = {"demo": "bench", "bench": "bench"}

#: What each extra brings that the commands import (checked before a command starts).
EXTRA_MODULES = {"bench": ("torch", "matplotlib", "sklearn", "tqdm")}

#: Top-level packages of this distribution: a missing one is a broken install, not a missing extra.
_OWN_PACKAGES = {"eoi_core", "eoi_bench", "eoi_torch", "eoi_keras", "eoi_jax"}


class MissingExtra(Exception):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, command: str, module: str, extra: str) -> None:
        self.command, self.module, self.extra = command, module, extra
        super().__init__(f"{command} needs the optional dependency {module!r}, which is not installed; "
                         f'install it with: pip install "eoi[{extra}]"')


def _report(error: MissingExtra) -> int:
    """Print the one-line message (or raise, with ``EOI_DEBUG=1``); the exit status is 1."""
    if os.environ.get("EOI_DEBUG"):
        raise error
    print(f"error: {error}", file=sys.stderr)
    return 1


def _missing_module(error: ModuleNotFoundError) -> str | None:
    """The top-level name of a missing third-party module, or None for one of ours."""
    top = (error.name or "").split(".")[0]
    return None if not top or top in _OWN_PACKAGES else top


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a module without a spec
        return False


def _plain(text: str) -> str:
    return text.replace("``", "").strip()


def _load(command: str, module_name: str, extra: str | None) -> ModuleType:
    """Import a command's implementation, turning a missing dependency into :class:`MissingExtra`."""
    for name in EXTRA_MODULES.get(extra, ()):
        if not _installed(name):  # fail now, not halfway through a run
            raise MissingExtra(command, name, extra)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = _missing_module(error)
        if missing is None or extra is None:
            raise
        raise MissingExtra(command, missing, extra) from error


def _fill(parser: argparse.ArgumentParser, module: ModuleType) -> None:
    # The module docstring's first paragraph is the description; a module may add an epilog.
    parser.description = _plain((module.__doc__ or "").split("\n\n")[0])
    parser.epilog = _plain(getattr(module, "CLI_EPILOG", "")) or None
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run, _parser=parser)


def _benchmarks() -> dict[str, str]:
    from eoi_bench.registry import BENCHMARKS  # imports nothing heavy

    return BENCHMARKS


def _requested(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """``(command, benchmark)`` named in ``argv``: the first words that are not options."""
    words = [word for word in argv if not word.startswith("-")]
    command = words[0] if words else None
    benchmark = words[1] if command == "bench" and len(words) > 1 else None
    return command, benchmark


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``eoi`` argument parser, with the options of the command ``argv`` names.

    Only that command's implementation is imported (so ``eoi init`` never loads
    the benchmarks' dependencies); the others are listed with their help line.
    Raises :class:`MissingExtra` when the named command cannot be imported.

    Examples
    --------
    >>> parser = build_parser(["init"])
    >>> args = parser.parse_args(["init", "w.npz", "--shape", "8", "8", "--density", "0.5"])
    >>> args.shape, args.density
    ([8, 8], 0.5)
    """
    command, benchmark = _requested(argv)
    parser = argparse.ArgumentParser(
        prog="eoi", description="Exact Orthogonal Initialization (EOI) of sparse neural networks: "
                                "weight export, demo and the paper's benchmarks on a CPU.")
    parser.add_argument("--version", action="version", version=f"eoi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init = commands.add_parser("init", help="write an EOI weight and mask to an .npz file")
    if command == "init":
        _fill(init, _load("eoi init", "eoi_core.init_command", None))
    demo = commands.add_parser("demo", help='deep sparse tanh MLPs on digits: EOI trains, random sparse inits '
                                            'do not (needs "eoi[bench]")')
    if command == "demo":
        _fill(demo, _load("eoi demo", "eoi_bench.demo", COMMAND_EXTRAS["demo"]))
    bench = commands.add_parser("bench", help='run one of the paper\'s benchmarks (needs "eoi[bench]")',
                                description="Run one of the paper's benchmarks (each prints a table and "
                                            "writes a PNG).")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in _benchmarks().items():
        sub = benchmarks.add_parser(name, help=help_text)
        if command == "bench" and benchmark == name:
            _fill(sub, _load(f"eoi bench {name}", f"eoi_bench.{name.replace('-', '_')}",
                             COMMAND_EXTRAS["bench"]))
    return parser


def execute(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
            args: argparse.Namespace, *, extra: str | None = None) -> int:
    """Run a command and return its exit status.

    A ``ValueError``/``TypeError``/``OSError`` becomes ``prog: error: ...``
    (exit 2).  When ``extra`` names the command's extra, a third-party module
    missing while it runs becomes one line naming that extra (exit 1).  Set
    ``EOI_DEBUG=1`` to see the traceback instead.
    """
    try:
        run(args)
    except BrokenPipeError:  # `eoi ... | head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as error:  # an optional dependency imported while running
        missing = _missing_module(error)
        if missing is None or extra is None or os.environ.get("EOI_DEBUG"):
            raise
        return _report(MissingExtra(parser.prog, missing, extra))
    except (ValueError, TypeError, OSError) as error:
        if os.environ.get("EOI_DEBUG"):
            raise
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eoi`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    try:
        parser = build_parser(argv)
    except MissingExtra as error:
        return _report(error)
    args = parser.parse_args(argv)
    return execute(args._parser, args._run, args, extra=COMMAND_EXTRAS.get(args.command))


if __name__ == "__main__":
    raise SystemExit(main())
