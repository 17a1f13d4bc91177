"""Errors that explain themselves: a stable code, the target, what is wrong and how to fix it.

Exceptions mean "cannot continue". Per-host and per-step outcomes are values (see model.StepResult).
Nothing here logs or prints; the CLI renders errors once and maps ``exit_code`` to the process exit.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERLOCK = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where, which key, what, and how to fix it."""

    file: str
    line: int | None
    key: str
    message: str
    hint: str
    severity: str = "error"  # "error" | "warning"

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message} (fix: {self.hint})"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
        }


def exception_text(exc: BaseException) -> str:
    """What a caught exception says, or its type when it says nothing (an EOFError, a bare socket
    timeout): an error message never ends in an empty reason."""
    return str(exc) or type(exc).__name__


class OrchestratorError(Exception):
    """Base error. ``code`` is stable for scripts; ``exit_code`` is the CLI's exit status."""

    code = "error"
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, target: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.target:
            text = f"{self.target}: {text}"
        if self.hint:
            text = f"{text} (fix: {self.hint})"
        return text


class InventoryError(OrchestratorError):
    """The inventory is invalid. Carries every problem found, not just the first."""

    code = "inventory-invalid"
    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0].file if errors else "inventory"
        super().__init__(
            f"{len(errors)} error(s) in {first}:\n" + "\n".join("  " + p.render() for p in errors),
            target=first,
        )

    def __str__(self) -> str:
        return self.message


class UsageError(OrchestratorError):
    """Bad flags or arguments."""

    code = "bad-usage"
    exit_code = EXIT_BAD_INPUT


class PlanError(OrchestratorError):
    """A plan file that cannot be read or does not belong to the inventory."""

    code = "plan-invalid"
    exit_code = EXIT_BAD_INPUT


class SafetyInterlock(OrchestratorError):  # noqa: N818 - an interlock is not a bug, it is the point
    """Refused on purpose: lock held, gate not approved, stale plan, no confirmation."""

    code = "interlock"
    exit_code = EXIT_INTERLOCK


class StalePlanError(SafetyInterlock):
    code = "plan-stale"


class LockHeldError(SafetyInterlock):
    code = "lock-held"


class ApprovalRequired(SafetyInterlock):
    code = "approval-required"


class DriverError(OrchestratorError):
    """A driver could not do what was asked. Recorded against the step, never retried blindly."""

    code = "driver-error"


class UnreachableError(DriverError):
    code = "unreachable"


class AuthFailedError(DriverError):
    code = "auth-failed"


class DriverTimeoutError(DriverError):
    code = "timeout"


class UnknownDriverError(DriverError):
    code = "unknown-driver"
    exit_code = EXIT_BAD_INPUT


class JournalError(OrchestratorError):
    """The journal cannot be written or does not verify. A run cannot continue without it."""

    code = "journal-error"


class IntegrityError(OrchestratorError):
    """A baseline is missing or its signature does not verify."""

    code = "integrity-error"


class LabError(OrchestratorError):
    """The rehearsal lab could not be built, queried or torn down."""

    code = "lab-error"
