"""Tables, files and figures: how every benchmark reports what it measured.

Tables are GitHub markdown (they print readably in a terminal, and
``scripts/results_pages.py`` puts them on the documentation's results pages
unchanged).  Figures use Matplotlib's non-interactive ``Agg``
backend, so nothing needs a display.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["markdown_table", "fmt", "prepare_output", "write_text", "write_json", "pyplot"]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-markdown table; ``align`` is one character per column (``l`` or ``r``)."""
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(items: Sequence[str]) -> str:
        padded = [item.ljust(w) if a == "l" else item.rjust(w) for item, w, a in zip(items, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align)]
    return "\n".join([line([str(h) for h in headers]), "| " + " | ".join(rule) + " |"] + [line(r) for r in cells])


def prepare_output(directory: str | Path) -> Path:
    """Create ``directory`` (and parents), stamp it and return it as a ``Path``.

    The stamp is ``run.json`` (:func:`eoi_bench._command.write_stamp`): the
    command line, UTC date, commit and machine of this run.

    Raises
    ------
    ValueError
        If it exists and is not a directory, or cannot be created.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"--out {str(path)!r} exists and is not a directory") from None
    except PermissionError:
        raise ValueError(f"--out {str(path)!r} cannot be created (permission denied)") from None
    from ._command import write_stamp  # every benchmark's outputs say which run made them

    write_stamp(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def write_json(path: Path, payload: Any) -> Path:
    def default(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"cannot serialise {type(value).__name__}")

    path.write_text(json.dumps(payload, indent=1, default=default, allow_nan=True) + "\n")
    return path


def publish(out: Path, stem: str, header: str, table: str, payload: Any, figure: Path) -> None:
    """Print ``header`` and ``table``, write ``<stem>.md`` and ``<stem>.json`` to ``out``, say what was written."""
    print(header)
    print(table)
    write_text(out / f"{stem}.md", header + "\n\n" + table)
    write_json(out / f"{stem}.json", payload)
    print(f"wrote {figure}, {out / (stem + '.md')} and {out / (stem + '.json')}")


def pyplot():
    """``matplotlib.pyplot`` on the ``Agg`` backend (imported lazily: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
