"""What an install promises: the base package alone runs ``eoi init``, the commands that
need an extra say which one in a single line, a read-only install with no writable Numba
cache still works (one warning), and the version and the extras have one source each.

Each scenario runs in a fresh interpreter: an install's state (missing packages, an
unwritable cache) is fixed when modules are first imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import eoi_core
from eoi_core.cli import EXTRA_MODULES
from eoi_core.io import load_npz

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Everything outside the base install (numpy, numba): blocked to simulate `pip install eoi`.
OPTIONAL = ("torch", "matplotlib", "sklearn", "scipy", "tqdm", "ml_dtypes", "keras", "tensorflow", "jax",
            "flax", "optax", "mnist1d", "transformers", "threadpoolctl")

#: Import name -> distribution name, where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn"}

# A meta-path finder that makes modules absent the way an uninstalled package is
# (ModuleNotFoundError with .name set), without a None in sys.modules, which some
# libraries probe.
BLOCKER = textwrap.dedent("""
    import sys

    class _Absent:
        def __init__(self, names):
            self.names = set(names)

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Absent(BLOCKED))
""")


def run_python(code: str, *, blocked: tuple[str, ...] = (), env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    source = (BLOCKER.replace("BLOCKED", repr(tuple(blocked))) if blocked else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EOI_DEBUG": "", **(env or {})}, cwd=cwd)


# --- the base install ------------------------------------------------------------------------


def test_eoi_init_needs_only_numpy_and_numba(tmp_path):
    out = tmp_path / "w.npz"
    child = run_python(f"""
        import sys
        from eoi_core.cli import main
        status = main(["init", {str(out)!r}, "--shape", "48", "16", "3", "3", "--density", "0.1", "--seed", "2"])
        loaded = sorted(name for name in {OPTIONAL!r} if name in sys.modules)
        print("LOADED", loaded)
        sys.exit(status)
    """, blocked=OPTIONAL)
    assert child.returncode == 0, child.stderr
    assert "LOADED []" in child.stdout  # not even attempted-and-failed imports linger
    weight, mask = load_npz(out)
    assert weight.shape == (48, 16, 3, 3) and int(mask.sum()) == eoi_core.mask_count(0.1, weight.size)
    assert eoi_core.orthogonality_error(weight) < 1e-5


@pytest.mark.parametrize("argv", [["demo", "--quick"], ["demo", "--help"], ["bench", "speed", "--quick"],
                                  ["bench", "deep", "--help"]], ids=" ".join)
def test_a_command_without_its_extra_prints_one_line_naming_it(tmp_path, argv):
    child = run_python(f"""
        import sys
        from eoi_core.cli import main
        sys.exit(main({argv!r}))
    """, blocked=OPTIONAL, cwd=tmp_path)
    assert child.returncode == 1
    assert child.stdout == ""
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr
    assert 'pip install "eoi[bench]"' in lines[0] and f"eoi {argv[0]}" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing started


def test_a_module_missing_mid_run_names_the_extra_too(tmp_path):
    # Only scikit-learn is missing, and `eoi demo` imports it once it loads its data.
    child = run_python("""
        import sys
        import eoi_core.cli
        eoi_core.cli.EXTRA_MODULES["bench"] = ()  # pretend the up-front check passed
        sys.exit(eoi_core.cli.main(["demo", "--quick", "--no-progress", "--out", "out"]))
    """, blocked=("sklearn",), cwd=tmp_path)
    assert child.returncode == 1, child.stderr
    assert child.stderr.strip().splitlines() == [
        "error: eoi demo needs the optional dependency 'sklearn', which is not installed; "
        'install it with: pip install "eoi[bench]"']


def test_help_lists_every_command_without_the_extras():
    child = run_python("""
        import sys
        from eoi_core.cli import main
        sys.exit(main(["bench", "--help"]))
    """, blocked=OPTIONAL)
    assert child.returncode == 0, child.stderr
    from eoi_bench.registry import BENCHMARKS

    assert all(name in child.stdout for name in BENCHMARKS)


# --- a read-only install ---------------------------------------------------------------------


def _read_only_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of eoi_core where Numba finds no cache locator, even for root.

    Numba caches into NUMBA_CACHE_DIR, else a ``__pycache__`` beside the module,
    else the user cache directory, each only if it can create and write it.  Here
    ``__pycache__`` is a plain file and the user cache directory lies under one (a
    read-only mode bit alone does not stop root), NUMBA_CACHE_DIR is unset, and the
    folders are read-only as well.
    """
    site = tmp_path / "site"
    package = site / "eoi_core"
    shutil.copytree(ROOT / "eoi_core", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__pycache__").write_text("not a directory")
    (package / "probe.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef probe():\n    return 1\n")
    blocker = tmp_path / "no-cache-here"
    blocker.write_text("")
    for folder in (package, site):
        folder.chmod(0o555)
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(blocker / "cache"), HOME=str(blocker / "home"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(site), EOI_DEBUG="")
    return site, env


def test_read_only_install_without_a_cache_compiles_in_process_with_one_warning(tmp_path):
    site, env = _read_only_copy(tmp_path)
    code = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("always")  # count every warning, not once per location
        import numpy as np
        try:
            import eoi_core.probe
        except RuntimeError as error:  # the control: plain cache=True cannot work here
            print("CONTROL", error)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import eoi_core
            assert eoi_core.__file__.startswith({str(site)!r}), eoi_core.__file__
            weight, mask = eoi_core.sparse_orthogonal((64, 48), 0.2, rng=0)
            density = eoi_core.expected_density(64, 48, 100)
            again, _ = eoi_core.sparse_orthogonal((64, 48), 0.2, rng=0)
        assert np.array_equal(weight, again) and int(mask.sum()) == eoi_core.mask_count(0.2, 64 * 48)
        assert eoi_core.orthogonality_error(weight) < 1e-5 and 0 < density < 1
        from eoi_core._jit import NumbaCacheWarning
        print("WARNINGS", sum(issubclass(w.category, NumbaCacheWarning) for w in caught), len(caught))
        print("MESSAGE", [str(w.message) for w in caught][:1])
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    for folder in (site / "eoi_core", site):  # let pytest clean up
        folder.chmod(0o755)
    assert child.returncode == 0, child.stderr
    assert "CONTROL cannot cache function 'probe': no locator available" in child.stdout
    assert "WARNINGS 1 1" in child.stdout, child.stdout
    assert "NUMBA_CACHE_DIR" in child.stdout  # the warning says how to get the cache back


def test_with_a_writable_cache_there_is_no_warning(tmp_path):
    child = run_python("""
        import warnings
        warnings.simplefilter("error")
        import eoi_core
        eoi_core.sparse_orthogonal((16, 8), 0.5, rng=0)
        eoi_core.expected_density(16, 8, 10)
        print("OK")
    """, env={"NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    assert child.returncode == 0 and "OK" in child.stdout, child.stderr
    assert any((tmp_path / "numba").rglob("*.nbi"))  # the kernels were cached there


# --- one source for the version and the dependencies -------------------------------------------


def test_one_version_everywhere(capsys):
    import eoi_bench
    import eoi_torch
    from eoi_core.cli import main

    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert metadata.version("eoi") == eoi_core.__version__ == eoi_bench.__version__ == eoi_torch.__version__
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"eoi {eoi_core.__version__}"
    pattern = re.compile(r"__version__\s*=\s*[\"']")
    written = [path.relative_to(ROOT) for folder in ("eoi_core", "adapters", "benchmarks")
               for path in (ROOT / folder).rglob("*.py") if pattern.search(path.read_text())]
    assert written == [Path("eoi_core/_version.py")]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_extras_state_ranges_and_cover_what_the_commands_import():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for name, requirements in {**extras, "base": PYPROJECT["project"]["dependencies"]}.items():
        pinned = [requirement for requirement in requirements if "==" in requirement]
        assert not pinned, f"[{name}] pins {pinned}: pins belong in scripts/constraints.txt"
    for extra, modules in EXTRA_MODULES.items():
        assert {DISTRIBUTION.get(module, module) for module in modules} <= _names(extras[extra])
    assert "torch" in _names(extras["torch"]) and "torch" in _names(extras["bench"])
    assert PYPROJECT["project"]["scripts"]["eoi"] == "eoi_core.cli:main"


def test_set_up_installs_under_the_constraints():
    constraints = (ROOT / "scripts" / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", constraints, re.MULTILINE)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '-c "$constraints"' in setup and "constraints.txt" in setup
    assert "$constraints" in setup.split("sha256sum")[0]  # the stamp changes with the pins too
    test = (ROOT / "scripts" / "test.sh").read_text()
    assert test.count("-m pytest") == 1 and "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_python_m_runs_the_same_command():
    for package in ("eoi_core", "eoi_bench"):
        child = subprocess.run([sys.executable, "-m", package, "--version"], capture_output=True, text=True,
                               timeout=120)
        assert child.returncode == 0 and child.stdout.strip() == f"eoi {eoi_core.__version__}", child.stderr
