"""Settings and every path the orchestrator writes, resolved once (cli > env > default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = ".orchestrator"
STATE_DIR_ENV = "ORCHESTRATOR_STATE_DIR"


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    state_dir_source: str  # "cli" | "env" | "default"
    forks: int = 32

    @classmethod
    def resolve(cls, cli_state_dir: str | None = None, forks: int | None = None) -> Settings:
        if cli_state_dir:
            path, source = Path(cli_state_dir), "cli"
        elif os.environ.get(STATE_DIR_ENV):
            path, source = Path(os.environ[STATE_DIR_ENV]), "env"
        else:
            path, source = Path(DEFAULT_STATE_DIR), "default"
        return cls(state_dir=path.absolute(), state_dir_source=source, forks=forks or 32)

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def journal_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "journal.jsonl"

    @property
    def baselines_dir(self) -> Path:
        return self.state_dir / "baselines"

    @property
    def backups_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def signing_key_path(self) -> Path:
        return self.state_dir / "keys" / "baseline-signing.key"

    @property
    def lab_dir(self) -> Path:
        return self.state_dir / "lab"
