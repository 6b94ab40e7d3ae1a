"""Layer selection by name, shared by every adapter's ``sparsify``.

Walking a model is framework-specific; deciding which of the names it found
are selected is not.  A *selector* is

* a qualified layer name, matching that layer and everything inside it (the
  name followed by the framework's separator: ``"encoder"`` matches
  ``"encoder.0.linear"`` in PyTorch and ``"encoder/Dense_0"`` in Flax);
* a glob pattern (``"blocks.*.mlp"``, with ``*``, ``?`` or ``[...]``),
  matched with :func:`fnmatch.fnmatchcase` against the whole name;
* a predicate ``f(name) -> bool``;
* or something framework-specific (a layer type) that the adapter matches
  itself through ``match_other``;

and ``include``/``exclude`` take one selector or an iterable of them.  A name
or pattern that matches no layer of the model is an error, never silently
ignored: it is almost always a typo.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Iterable, Sequence

__all__ = ["selectors", "matches", "select", "check_matched"]

_WILDCARDS = frozenset("*?[")


def selectors(value: Any, argument: str, *, other: tuple[type, ...] = (), other_doc: str = "") -> list:
    """Validate ``include``/``exclude`` and return it as a list of selectors.

    Parameters
    ----------
    value : None, selector or iterable of selectors
        What the user passed.
    argument : str
        ``"include"`` or ``"exclude"``, for messages.
    other : tuple of type, optional
        Framework-specific selector classes the adapter accepts as well
        (e.g. ``(type,)`` for layer types).
    other_doc : str, optional
        How the message names those, e.g. ``"a layer type"``.

    Examples
    --------
    >>> selectors("encoder", "include")
    ['encoder']
    >>> selectors(None, "exclude")
    []
    """
    allowed = "None, a qualified layer name, a glob pattern, a predicate on the name"
    allowed += f", {other_doc}" if other_doc else ""
    allowed += " or an iterable of these"
    if value is None:
        return []
    if isinstance(value, str) or callable(value) or (other and isinstance(value, other)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise TypeError(f"{argument} must be {allowed}, got {value!r}") from None
    for item in items:
        if isinstance(item, type) and not (other and isinstance(item, other)):
            raise TypeError(
                f"{argument} entries must be qualified layer names (str), glob patterns or predicates; "
                f"got the type {item.__name__} (this framework selects layers by name)"
            )
        if not (isinstance(item, str) or callable(item) or (other and isinstance(item, other))):
            raise TypeError(
                f"{argument} entries must be qualified layer names (str), glob patterns or predicates"
                f"{', or ' + other_doc if other_doc else ''}; got {item!r} of type {type(item).__name__}"
            )
    return items


def matches(name: str, selector: Any, sep: str = ".") -> bool:
    """Whether the layer ``name`` is selected by the string or predicate ``selector``.

    Examples
    --------
    >>> matches("encoder.0.linear", "encoder")
    True
    >>> matches("encoder2.linear", "encoder")
    False
    >>> matches("blocks.3.mlp.fc1", "blocks.*.mlp*")
    True
    """
    if isinstance(selector, str):
        if selector == "" or name == selector or name.startswith(selector + sep):
            return True
        return bool(_WILDCARDS & set(selector)) and fnmatch.fnmatchcase(name, selector)
    return bool(selector(name))


def check_matched(items: Sequence[Any], names: Sequence[str], argument: str, sep: str = ".") -> None:
    """Raise ``ValueError`` for a string selector that matches none of ``names``."""
    for item in items:
        if isinstance(item, str) and not any(matches(name, item, sep) for name in names):
            shown = ", ".join(repr(name) for name in names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(
                f"{argument} names {item!r}, which matches no layer of the model (layers: {shown})"
            )


def select(
    names: Sequence[str],
    include: Any = None,
    exclude: Any = None,
    *,
    sep: str = ".",
    candidates: Iterable[str] | None = None,
    objects: Sequence[Any] | None = None,
    other: tuple[type, ...] = (),
    other_doc: str = "",
    match_other: Callable[[Any, Any], bool] | None = None,
) -> list[int]:
    """Indices of the ``names`` that ``include`` selects and ``exclude`` does not.

    Parameters
    ----------
    names : sequence of str
        Qualified names of the candidate layers (the ones the adapter can initialise).
    include, exclude : selector or iterable of selectors, optional
        See the module docstring; ``include=None`` selects every candidate.
    sep : str, optional
        The framework's separator of qualified names (``"."`` or ``"/"``).
    candidates : iterable of str, optional
        Every name of the model, for the "matches nothing" check (default: ``names``):
        a name that exists but holds no candidate is not a typo, it selects nothing.
    objects : sequence, optional
        The layer objects, parallel to ``names``, for ``match_other``.
    other, other_doc, match_other : optional
        Framework-specific selectors: their classes, how messages name them,
        and ``match_other(selector, layer) -> bool``.

    Raises
    ------
    TypeError
        For a malformed ``include``/``exclude``.
    ValueError
        For a name or pattern that matches no layer of the model.

    Examples
    --------
    >>> select(["0", "2", "4"], exclude="4")
    [0, 1]
    >>> select(["enc.0", "dec.0"], include="enc")
    [0]
    """
    included = selectors(include, "include", other=other, other_doc=other_doc)
    excluded = selectors(exclude, "exclude", other=other, other_doc=other_doc)
    universe = list(names) if candidates is None else list(candidates)
    check_matched(included, universe, "include", sep)
    check_matched(excluded, universe, "exclude", sep)

    def hit(index: int, selector: Any) -> bool:
        if isinstance(selector, str) or (callable(selector) and not (other and isinstance(selector, other))):
            return matches(names[index], selector, sep)
        if match_other is None or objects is None:
            raise TypeError(f"selector {selector!r} needs the layer objects to match")
        return bool(match_other(selector, objects[index]))

    chosen = []
    for index in range(len(names)):
        if included and not any(hit(index, s) for s in included):
            continue
        if any(hit(index, s) for s in excluded):
            continue
        chosen.append(index)
    return chosen
