"""The board's access token: random per start, or kept in a private file so the link survives restarts."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from orchestrator import storage
from orchestrator.board.app import new_token
from orchestrator.errors import UsageError

_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


def load_token(path: Path | None) -> str:
    """A new random token, or the one in ``path`` (made, 0600, when missing)."""
    if path is None:
        return new_token()
    if not path.exists():
        token = new_token()
        storage.atomic_write(path, (token + "\n").encode("ascii"))
        return token
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise UsageError(f"the token file is readable by others (mode {mode:04o})", target=str(path),
                         hint=f"chmod 600 {path}, or delete it to get a new token")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not _TOKEN.fullmatch(text):
        raise UsageError("the token file does not hold a board token (32-128 characters of A-Z a-z 0-9 - _)",
                         target=str(path), hint="delete it: the board makes a new one")
    return text
