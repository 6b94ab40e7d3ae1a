"""Promise: the documentation builds cleanly and every example in it runs and prints what it shows.

* ``mkdocs build --strict`` (the site in ``docs/``, the API reference generated
  from the docstrings): any warning, such as a broken link or a reference
  to a name that does not exist, fails.
* Every ```` ```python ```` block of the guides runs, page by page, in order, in
  one interpreter per page (a fresh working directory each); when the next
  fenced block is ```` ```text ````, it is the output the block must print
  (compared as doctest does, with ELLIPSIS).  ```` ```console ```` blocks
  hold ``$ command`` lines that run in the page's shell, each followed by its
  output.  The results pages are generated from runs (scripts/results_pages.py)
  and the API pages from docstrings (their examples run as doctests), so
  neither is executed here.
* The headline tables of the README and the home page are the generated
  results page's table, verbatim: a quoted number cannot drift from its run.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Guides and the other hand-written pages: every page outside the generated folders.
GUIDE_PAGES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in ("results", "api"))
MARK = "\x1e-- eoi docs block {} --"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass
class Block:
    kind: str  # "python" or "console"
    code: str
    want: str | None
    line: int


def blocks(text: str) -> list[Block]:
    """The runnable blocks of a page, each with the output it shows (or None)."""
    fences = [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]
    found = []
    for i, (lang, body, line) in enumerate(fences):
        if lang == "python":
            following = fences[i + 1] if i + 1 < len(fences) else None
            want = following[1] if following and following[0] == "text" else None
            found.append(Block("python", body, want, line))
        elif lang == "console":
            # "$ command" lines, each followed by the output it prints.
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, _, want = chunk.partition("\n")
                found.append(Block("console", command, want, line))
    return found


def page_script(page_blocks: list[Block]) -> str:
    """One Python program running a page's blocks in order, a marker before each."""
    parts = ["import subprocess as _eoi_sp, sys as _eoi_sys\n"]
    for i, block in enumerate(page_blocks):
        parts.append(f"print({MARK.format(i)!r}, flush=True)\n")
        if block.kind == "python":
            parts.append(block.code + "\n")
        else:
            parts.append(f"_eoi_r = _eoi_sp.run({block.code!r}, shell=True, capture_output=True, text=True)\n"
                         "_eoi_sys.stdout.write(_eoi_r.stdout + _eoi_r.stderr); _eoi_sys.stdout.flush()\n")
    return "".join(parts)


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    """Run every guide page at once (one process each) and collect what each block printed."""
    # Keras examples run on the JAX backend unless one is chosen (they print the same on every backend;
    # JAX starts in about half the time TensorFlow takes).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0", KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    running = {}
    for page in GUIDE_PAGES:
        page_blocks = blocks(page.read_text())
        if not page_blocks:
            continue
        cwd = tmp_path_factory.mktemp(page.stem)
        process = subprocess.Popen([sys.executable, "-c", page_script(page_blocks)], cwd=cwd, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running[page] = (page_blocks, process)
    results = {}
    for page, (page_blocks, process) in running.items():
        stdout, stderr = process.communicate(timeout=600)
        pieces = re.split("^" + re.escape(MARK.split("{}")[0]) + r"(\d+) --\n", stdout, flags=re.M)
        printed = {int(pieces[k]): pieces[k + 1] for k in range(1, len(pieces), 2)}
        results[page] = (page_blocks, printed, process.returncode, stderr)
    return results


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_guide_examples_run_and_print_what_they_show(page, page_runs):
    if page not in page_runs:
        pytest.skip("no runnable example on this page")
    page_blocks, printed, returncode, stderr = page_runs[page]
    assert returncode == 0, f"{page.name}: an example failed:\n{stderr[-4000:]}"
    checker = doctest.OutputChecker()
    for i, block in enumerate(page_blocks):
        if block.want is None:
            continue
        got = printed.get(i, "")
        assert checker.check_output(block.want, got, FLAGS), (
            f"{page.relative_to(DOCS)} line {block.line}: the example printed\n{got}\nbut the page shows\n{block.want}")


def test_blocks_reader():
    page = "x\n```python\nprint(1)\n```\n\n```text\n1\n```\n```console\n$ echo a\na\n$ echo b\nb\n```\n"
    found = blocks(page)
    assert [(b.kind, b.code.strip(), b.want) for b in found] == [
        ("python", "print(1)", "1\n"), ("console", "echo a", "a\n"), ("console", "echo b", "b\n")]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason='needs the docs extra: pip install "eoi[docs]"')
def test_site_builds_strictly(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    api = (tmp_path / "site" / "api" / "torch.html").read_text()
    assert 'id="eoi_torch.sparsify.sparsify"' in api  # the reference is generated from the docstrings


def _table_rows(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("| ") and not line.startswith("| -")]


@pytest.mark.parametrize("path", [ROOT / "README.md", DOCS / "index.md"], ids=["README", "index"])
def test_headline_table_is_the_stamped_runs(path):
    text = path.read_text()
    generated = (DOCS / "results" / "demo.md").read_text()
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = _table_rows(section)
    assert rows, f"{path.name} has no results table"
    missing = [row for row in rows if row not in generated]
    assert not missing, f"{path.name} quotes {len(missing)} rows that are not in docs/results/demo.md, e.g. {missing[:2]}"


def test_every_results_page_is_stamped():
    pages = sorted((DOCS / "results").glob("*/run.json"))
    assert pages
    for stamp_path in pages:
        stamp = json.loads(stamp_path.read_text())
        assert {"command", "date", "commit", "machine"} <= set(stamp), stamp_path
        page = (DOCS / "results" / f"{stamp_path.parent.name}.md").read_text()
        assert stamp["command"] in page and stamp["date"] in page, stamp_path


def test_results_pages_refuse_unstamped_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("results_pages", ROOT / "scripts" / "results_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = tmp_path / "run" / "density"
    run.mkdir(parents=True)
    (run / "density.md").write_text("| a | b |\n| - | -: |\n| x | 1 |\n")
    docs = tmp_path / "docs"
    with pytest.raises(SystemExit, match="no run.json"):
        module.main([str(run), "--docs", str(docs)])
    from eoi_bench._command import write_stamp

    write_stamp(run, ["eoi", "bench", "density", "--out", str(run)])
    assert module.main([str(run), "--docs", str(docs)]) == 0
    page = (docs / "results" / "density.md").read_text()
    assert "eoi bench density --out" in page and "| x | 1 |" in page
    assert "density.md" in (docs / "results" / "index.md").read_text()


def test_no_citation_of_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    offenders = []
    for name in tracked.stdout.split():
        path = ROOT / name
        if path.suffix in (".py", ".md", ".sh", ".toml", ".yml", ".cfg", ".txt") and path.exists():
            if re.search(r"DESIGN(\.md| section)", path.read_text(errors="ignore")) and path != Path(__file__):
                offenders.append(name)
    assert not offenders, f"these cite a design document that is not in the repository: {offenders}"


def test_readme_examples_are_the_tested_quick_start():
    """The README's examples are the home page's (which run above), verbatim."""
    readme = [b.code for b in blocks((ROOT / "README.md").read_text()) if b.kind == "python"]
    index = [b.code for b in blocks((DOCS / "index.md").read_text()) if b.kind == "python"]
    assert readme and readme == index


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert targets and not missing, missing


def test_a_benchmark_run_stamps_its_outputs(tmp_path):
    """``eoi bench NAME --out DIR`` leaves run.json beside its tables: command, date, commit, machine."""
    done = subprocess.run([sys.executable, "-m", "eoi_core", "bench", "density", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stamp = json.loads((tmp_path / "run.json").read_text())
    assert stamp["command"] == f"python -m eoi_core bench density --quick --out {tmp_path}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp["date"])
    assert stamp["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", stamp["commit"])
    assert stamp["machine"]["cores"] >= 1 and stamp["machine"]["python"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["density.json", "density.md", "density.png", "run.json"]
