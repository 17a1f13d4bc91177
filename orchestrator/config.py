"""Settings and every path the orchestrator writes, resolved once (cli > env > default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.syslog_copy import SyslogTarget

DEFAULT_STATE_DIR = ".orchestrator"
STATE_DIR_ENV = "ORCHESTRATOR_STATE_DIR"
SYSLOG_ENV = "ORCHESTRATOR_SYSLOG"  # tcp://HOST:PORT or tls://HOST:PORT: the journal's off-box copy
SYSLOG_CA_ENV = "ORCHESTRATOR_SYSLOG_CA"  # the CA file that signed a tls:// collector's certificate


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    state_dir_source: str  # "cli" | "env" | "default"
    forks: int = 32
    syslog: str | None = None  # the collector every journal record is also sent to (None: no copy)
    syslog_ca_file: str | None = None

    @classmethod
    def resolve(cls, cli_state_dir: str | None = None, forks: int | None = None) -> Settings:
        if cli_state_dir:
            path, source = Path(cli_state_dir), "cli"
        elif os.environ.get(STATE_DIR_ENV):
            path, source = Path(os.environ[STATE_DIR_ENV]), "env"
        else:
            path, source = Path(DEFAULT_STATE_DIR), "default"
        return cls(state_dir=path.absolute(), state_dir_source=source, forks=forks or 32,
                   syslog=os.environ.get(SYSLOG_ENV) or None, syslog_ca_file=os.environ.get(SYSLOG_CA_ENV) or None)

    def syslog_target(self) -> SyslogTarget | None:
        """The parsed collector address (UsageError, exit 2, when malformed), or None."""
        if not self.syslog:
            return None
        from orchestrator.syslog_copy import SyslogTarget

        return SyslogTarget.parse(self.syslog, self.syslog_ca_file)

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
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def signing_key_path(self) -> Path:
        return self.state_dir / "keys" / "baseline-signing.key"

    @property
    def baseline_journal_path(self) -> Path:
        """Every baseline capture, hash chained and keyed like a run's journal."""
        return self.baselines_dir / "captures.jsonl"
