"""A griffe extension: the reStructuredText bits of the numpydoc docstrings, as Markdown.

The docstrings are the single source of the API reference and are written
for Python's ``help`` and Sphinx-style readers: ``:func:`name``` roles,
``.. math::`` directives and bare ``>>>`` sessions outside an *Examples*
section.  mkdocstrings renders docstrings as Markdown, so this rewrites those
three, leaving the source untouched:

* ``:role:`~a.b.c``` -> `` `c` ``, ``:role:`a.b.c``` -> `` `a.b.c` ``;
* ``.. math:: formula`` (and its indented continuation lines) -> a ``$$`` block;
* a run of ``>>>`` lines with their output, outside *Examples* -> a ``pycon`` fence;
* a *Public API* section (``name   what it is`` lines) -> a list of names.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|data|attr|obj|exc|const|ref|term|math):`(~?)([^`]+)`")
_EXAMPLES = re.compile(r"^\s*Examples?\s*$")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    target = target.split("<")[-1].rstrip(">").strip()  # `text <target>`
    return f"``{target.rsplit('.', 1)[-1] if tilde else target}``"


def convert(text: str) -> str:
    """The docstring ``text`` with roles, math and bare sessions in Markdown."""
    text = _ROLE.sub(_role, text)
    lines = text.splitlines()
    out: list[str] = []
    in_examples = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _EXAMPLES.match(line) and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            in_examples = True
        elif i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"} and stripped:
            in_examples = False  # another numpydoc section starts
        if stripped.startswith(".. math::"):
            indent = line[: len(line) - len(line.lstrip())]
            formula = [stripped[len(".. math::"):].strip()]
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                if lines[i].strip():
                    formula.append(lines[i].strip())
                elif i + 1 < len(lines) and not lines[i + 1].startswith(indent + " "):
                    break
                i += 1
            out += [f"{indent}$$", *(f"{indent}{f}" for f in formula if f), f"{indent}$$"]
            continue
        if stripped.startswith(">>>") and not in_examples:
            indent = line[: len(line) - len(line.lstrip())]
            session = []
            while i < len(lines) and lines[i].strip():
                session.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            out += [f"{indent}```pycon", *(indent + s for s in session), f"{indent}```"]
            continue
        if stripped == "Public API" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            out += ["**Public API**", ""]
            i += 2
            while i < len(lines) and lines[i].strip():
                name, _, what = lines[i].strip().partition(" ")
                item = f"- `{name}`: {what.strip()}"
                i += 1
                while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                    item += " " + lines[i].strip()  # a wrapped description
                    i += 1
                out.append(item)
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring once, when its object is loaded."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
