"""Turn benchmark output folders into the documentation's results pages.

Every ``eoi demo`` / ``eoi bench NAME --out DIR`` run leaves in ``DIR`` its
tables (``*.md``), raw numbers (``*.json``), figures (``*.png``) and the stamp
``run.json`` (command line, UTC date, commit, machine; written by
``eoi_bench._command.write_stamp``).  This script copies them into
``docs/results/<name>/`` and writes ``docs/results/<name>.md``: the
benchmark's own description (its module docstring), the stamp, every table
verbatim and every figure, so a number on the site can never drift from the
run that printed it.  It then rewrites ``docs/results/index.md`` from every
stamped page.

Usage::

    python scripts/results_pages.py results/demo results/speed ...
    python scripts/results_pages.py /tmp/run1=sparse-training /tmp/run2=sparse-training

A folder's page is named after the folder, or after ``=NAME``; several
folders with one name share a page (one section each, in the order given).
A folder without ``run.json`` is an error: unstamped numbers are not
published.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "eoi_bench"
STAMP = "run.json"

#: Page titles; benchmarks not listed here take their registry help text.
TITLES = {
    "demo": "The demo: a 200-layer sparse tanh MLP",
    "deep": "Deep: a 1000-layer sparse tanh MLP (Table 1, CPU version)",
    "density": "The density law (Fig. 4)",
    "spectrum": "The Jacobian spectrum at initialisation (Fig. 2)",
    "angles": "Rotation angles (Appendix G)",
    "speed": "Speed of one weight (Appendix B)",
    "scheme-speed": "Time per layer: EOI, SAO and approximate isometry (Appendix B)",
    "sparse-training": "Static sparse training: density sources x initialisations (Table 1)",
    "model-init": "Whole-model initialisation: time and peak memory",
    "training-tax": "The cost of keeping masks in training",
    "shard": "Sharded initialisation: per-rank memory and time",
}


def registry_help() -> dict[str, str]:
    """``BENCHMARKS`` of ``eoi_bench/registry.py``, read without importing the package."""
    tree = ast.parse((BENCH / "registry.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "BENCHMARKS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def rst_to_markdown(text: str) -> str:
    """The little reStructuredText the benchmark docstrings use, as Markdown."""
    text = re.sub(r":(?:mod|func|class|meth|data|attr):`~?([^`]+)`", r"``\1``", text)
    text = text.replace("``", "`")
    # ".. math:: formula" (one line) becomes a display formula.
    text = re.sub(r"^\.\. math:: (.+)$", r"$$\n\1\n$$", text, flags=re.M)
    text = re.sub(r"::\n", ":\n", text)
    return "\n\n".join(_column_list(paragraph) for paragraph in text.split("\n\n"))


def _column_list(paragraph: str) -> str:
    """A ``term   definition`` paragraph (continuations indented) as a Markdown list; others unchanged."""
    lines = paragraph.splitlines()
    term = re.compile(r"^(\S.*?)\s{2,}(\S.*)$")
    if len(lines) < 2 or not all(term.match(line) or line.startswith(" ") for line in lines) \
            or not term.match(lines[0]):
        return paragraph
    items: list[str] = []
    for line in lines:
        match = term.match(line)
        if match:
            items.append(f"- {match.group(1)}: {match.group(2)}")
        else:
            items[-1] += " " + line.strip()
    return "\n".join(items)


def description(name: str) -> str:
    """The benchmark module's docstring (the single description of what it measures)."""
    path = BENCH / f"{name.replace('-', '_')}.py"
    if not path.exists():
        return ""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first, _, rest = doc.partition("\n\n")
    return rst_to_markdown(rest.strip()) if rest else ""


def stamp_block(stamp: dict) -> str:
    """The stamp as an admonition: command, date, commit, machine."""
    machine = stamp.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    cores = machine.get("cores")
    usable = machine.get("cores_usable")
    core_text = f"{cores} cores" + (f" ({usable} usable)" if usable not in (None, cores) else "")
    memory = f", {machine['memory_gib']} GiB" if machine.get("memory_gib") else ""
    target = f" (compiled for {machine['compile_target']})" if machine.get("compile_target") else ""
    lines = [
        '!!! info "How these numbers were made"',
        "",
        f"    **Command** `{stamp.get('command', '?')}`  ",
        f"    **Date (UTC)** {stamp.get('date', '?')}  ",
        f"    **Commit** `{stamp.get('commit') or 'unknown'}`  ",
        f"    **Machine** {machine.get('cpu', '?')}{target}, {core_text}{memory}; {machine.get('platform', '?')}  ",
        f"    **Software** Python {machine.get('python', '?')}; {packages}",
    ]
    if stamp.get("note"):
        lines += ["", "    " + stamp["note"]]
    return "\n".join(lines)


def section(folder: Path, name: str, dest: Path, index: int, demote: int = 1) -> tuple[str, dict]:
    """Copy one run's files under ``dest`` and return its Markdown and its stamp.

    The tables' own headings are pushed down ``demote`` levels, below the page's.
    """
    stamp_path = folder / STAMP
    if not stamp_path.exists():
        raise SystemExit(f"{folder}: no {STAMP}; unstamped outputs are not published")
    stamp = json.loads(stamp_path.read_text())
    sub = dest if index == 0 else dest / f"run{index + 1}"
    sub.mkdir(parents=True, exist_ok=True)
    parts = [stamp_block(stamp), ""]
    for table in sorted(folder.glob("*.md")):
        text = re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + demote) + " ", table.read_text().strip(),
                      flags=re.M)
        parts += [text, ""]
    for figure in sorted(folder.glob("*.png")):
        shutil.copy2(figure, sub / figure.name)
        rel = sub.relative_to(dest.parent) / figure.name
        parts += [f"![{name}: {figure.stem.replace('_', ' ')}]({rel.as_posix()})", ""]
    links = []
    for data in sorted(folder.glob("*.json")):
        shutil.copy2(data, sub / data.name)
        links.append(f"[{data.name}]({(sub.relative_to(dest.parent) / data.name).as_posix()})")
    parts += ["Raw numbers and the stamp: " + ", ".join(links), ""]
    return "\n".join(parts), stamp


def write_page(name: str, folders: list[Path], docs: Path, helps: dict[str, str]) -> dict:
    dest = docs / "results" / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    title = TITLES.get(name) or helps.get(name) or name
    about = description(name)
    body = [f"# {title}", "", "*Generated by `scripts/results_pages.py` from the run's output folder; "
            "edit the benchmark, not this page.*", ""]
    stamps = []
    about_after = about
    for i, folder in enumerate(folders):
        text, stamp = section(folder, name, dest, i, demote=2 if len(folders) > 1 else 1)
        if len(folders) > 1:
            body += [f"## `{stamp.get('command', folder.name)}`", ""]
        if about_after and i == 0 and len(folders) == 1:
            block = stamp_block(stamp)
            text = f"{block}\n\n{about_after}\n{text[len(block):]}"
            about_after = ""
        body += [text]
        stamps.append(stamp)
    if about_after:  # several runs: the description once, before them
        body.insert(4, about_after + "\n")
    (docs / "results" / f"{name}.md").write_text("\n".join(body).rstrip() + "\n")
    return {"name": name, "title": title, "stamps": stamps}


def write_index(docs: Path, helps: dict[str, str]) -> None:
    """``docs/results/index.md``: every generated page, with its command and date."""
    rows = []
    for stamp_path in sorted((docs / "results").glob(f"*/{STAMP}")):
        name = stamp_path.parent.name
        stamp = json.loads(stamp_path.read_text())
        commit = (stamp.get("commit") or "unknown")[:12] + ("-dirty" if str(stamp.get("commit")).endswith("-dirty") else "")
        title = TITLES.get(name) or helps.get(name) or name
        rows.append(f"| [{title}]({name}.md) | `{stamp.get('command', '?')}` | {stamp.get('date', '?')[:16]} | `{commit}` |")
    text = [
        "# Results",
        "",
        "The paper's claims, reproduced on a CPU. Every page below is generated from the output folder",
        "of one run (`scripts/results_pages.py`): its tables and figures verbatim, stamped with the",
        "command, the date, the commit and the machine, so a number can never drift from its run.",
        "Run any of them yourself with the command shown; each has a `--quick` variant that runs in",
        "seconds and writes the same files to `--out` (default `results/`).",
        "",
        "The machine was a shared 2-core x86-64 virtual machine with other jobs running, so timings",
        "are noisy; every ratio in a table compares columns measured side by side in one process.",
        "",
        "Method notes that hold for every training run: SGD with momentum 0.9 and cross-entropy; masks",
        "are fixed and the forward pass uses `weight * mask`, so masked-out entries get exactly zero",
        "gradient; PyTorch runs on one thread unless `--threads` says otherwise (the layers are small);",
        "subnormal floats are flushed to zero, so signals that vanish through hundreds of layers do not",
        "slow the baselines down. The data are scikit-learn's bundled digits or MNIST-1D (generated),",
        "never downloaded; `--mnist PATH` takes a local `mnist.npz`.",
        "",
        "| page | command | date (UTC) | commit |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
    ]
    extra = docs / "results" / "sparse_training.md"
    if extra.exists():
        text += ["The [PaI x initialisation guide and its tables](sparse_training.md) explains the sparse-training",
                 "comparison and how to run it on your own model.", ""]
    (docs / "results" / "index.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", metavar="DIR[=NAME]", help="benchmark output folders")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs directory (default: %(default)s)")
    args = parser.parse_args(argv)
    pages: OrderedDict[str, list[Path]] = OrderedDict()
    for item in args.folders:
        folder, _, name = item.partition("=")
        path = Path(folder)
        if not path.is_dir():
            parser.error(f"{folder!r} is not a directory")
        pages.setdefault(name or path.name, []).append(path)
    helps = registry_help()
    for name, folders in pages.items():
        page = write_page(name, folders, args.docs, helps)
        print(f"wrote {args.docs / 'results' / (name + '.md')} ({len(folders)} run(s))")
    write_index(args.docs, helps)
    print(f"wrote {args.docs / 'results' / 'index.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
