"""Where a key is in a round-trip document (its line), and the ``Problem`` naming it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.errors import Problem
from orchestrator.inventory.problems import format_path


def line_of(doc: Any, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest key of ``path`` that exists in ``doc`` (None: not known)."""
    node = doc
    line: int | None = None
    for part in path:
        lc = getattr(node, "lc", None)
        try:
            child = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if lc is not None:
            try:
                pos = lc.key(part) if isinstance(part, str) else lc.item(part)
                line = int(pos[0]) + 1
            except (KeyError, IndexError, TypeError):
                pass
        node = child
    return line


def problem(file: str, doc: Any, path: Sequence[str | int], message: str, hint: str) -> Problem:
    return Problem(file, line_of(doc, path), format_path(tuple(path)), message, hint)
