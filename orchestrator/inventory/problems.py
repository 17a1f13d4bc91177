"""Key paths and the collector of problems: each with the file, its line, the key path and a fix."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orchestrator.errors import Problem

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        text = part if isinstance(part, int) or part.isprintable() else repr(part)  # a key with "\n" stays one line
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else str(text))
    return out or "(top level)"


class Problems:
    """Problems found, each with its line. The line map is built only when a first problem needs it
    (``lines`` may be a function producing it): a clean file never pays for it."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int] | Callable[[], Mapping[KeyPath, int]]) -> None:
        self.file = file
        self._lines = lines
        self.items: list[Problem] = []
        self.skip: set[KeyPath] = set()  # values already refused: no second complaint about them

    @property
    def lines(self) -> Mapping[KeyPath, int]:
        if callable(self._lines):
            self._lines = self._lines()
        return self._lines

    def line_of(self, path: KeyPath) -> int | None:
        lines = self.lines
        probe = path
        while probe:
            if probe in lines:
                return lines[probe]
            probe = probe[:-1]
        return lines.get((), None)

    def add(self, path: KeyPath, message: str, hint: str, severity: str = "error") -> None:
        if self.skip and any(path[:len(bad)] == bad for bad in self.skip):
            return  # that value was refused already; what else is said about its stand-in is noise
        self.items.append(Problem(self.file, self.line_of(path), format_path(path), message, hint, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]
