"""Baselines on disk: the controller's signing key, the signed documents (``baselines/HOST/TAKEN.json``,
one per capture, never overwritten; a legacy ``baselines/HOST.json``), and the captures journal.

The document format (``orchestrator.baseline/v1``) and its signature are a contract with every
baseline already stored: HMAC-SHA256 over the document without its ``signature``, as canonical JSON
(sorted keys, no spaces, ASCII)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import storage
from orchestrator.config import Settings
from orchestrator.errors import IntegrityError, OrchestratorError
from orchestrator.integrity.snapshot import Snapshot

if TYPE_CHECKING:
    from orchestrator.journal import Journal

BASELINE_SCHEMA = "orchestrator.baseline/v1"
SIGNATURE_ALG = "hmac-sha256"
CAPTURES_JOURNAL_ID = "baseline-captures"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# signing
# --------------------------------------------------------------------------------------------


def signing_key(settings: Settings, *, create: bool) -> bytes:
    """The controller's HMAC key (32 random bytes, mode 0600). Created on first capture (or run) only."""
    path = settings.signing_key_path
    try:
        key = storage.load_key(path, create=create)
    except OrchestratorError as exc:
        raise IntegrityError(f"the baseline signing key: {exc.message}", target=str(path), hint=exc.hint) from None
    if key is None:
        raise IntegrityError(
            f"the baseline signing key {path} does not exist, so no baseline can be trusted",
            target=str(path),
            hint="restore the key from the controller's backup; or, if the baselines are lost "
            "too, run `orchestrator baseline capture` on hosts known to be good",
        )
    return key


def _canonical(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"orchestrator-baseline-key:" + key).hexdigest()[:16]


def sign_document(doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    signature = hmac.new(key, _canonical(doc), hashlib.sha256).hexdigest()
    return {**doc, "signature": {"alg": SIGNATURE_ALG, "key_id": _key_id(key), "value": signature}}


def _verify_signature(doc: Any, path: Path, host: str, settings: Settings) -> None:
    sig = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict) or sig.get("alg") != SIGNATURE_ALG or not isinstance(sig.get("value"), str):
        raise IntegrityError(
            f"baseline {path} carries no valid {SIGNATURE_ALG} signature",
            target=host,
            hint="do not trust it; capture a new baseline from a known-good host",
        )
    key = signing_key(settings, create=False)
    expected = hmac.new(key, _canonical(doc), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig["value"]):
        other_key = sig.get("key_id") != _key_id(key)
        why = "it was signed with another key" if other_key else "its content was changed after signing"
        raise IntegrityError(
            f"baseline {path} FAILS its signature check: {why}",
            target=host,
            hint="treat the baseline as tampered with; do not restore on it. Capture a new one only "
            "from a host known to be good (or use the right state dir and key)",
        )


# --------------------------------------------------------------------------------------------
# baseline files
# --------------------------------------------------------------------------------------------


def baseline_path(host: str, settings: Settings) -> Path:
    """The legacy single-file location (read only when a host has no versioned baseline yet)."""
    return settings.baselines_dir / f"{host}.json"


def baseline_dir(host: str, settings: Settings) -> Path:
    """Every baseline of ``host``, one file per capture, never overwritten: ``baselines/HOST/TAKEN.json``."""
    return settings.baselines_dir / host


def baseline_versions(host: str, settings: Settings) -> list[Path]:
    """The host's baseline files, newest first (the legacy ``HOST.json`` last)."""
    directory = baseline_dir(host, settings)
    versions = sorted(directory.glob("*.json"), reverse=True) if directory.is_dir() else []
    legacy = baseline_path(host, settings)
    return versions + ([legacy] if legacy.is_file() else [])


def store_baseline(host: str, doc: dict[str, Any], key: bytes, settings: Settings) -> Path:
    """Sign ``doc`` with ``key`` and write it as a new version, 0600, durably; an existing version is
    never replaced."""
    signed = sign_document(doc, key)
    data = json.dumps(signed, sort_keys=True, indent=1).encode() + b"\n"
    for _ in range(100):
        name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + ".json"
        path = baseline_dir(host, settings) / name
        try:
            storage.write_new(path, data)
        except FileExistsError:
            continue
        return path
    raise IntegrityError("could not name a new baseline version", target=host, hint="try again")


def load_baseline(host: str, settings: Settings) -> dict[str, Any]:
    """The host's newest baseline, after checking its signature. Missing, unreadable or forged:
    IntegrityError. A newest version that fails its check is refused loudly, never skipped for an
    older one: a forged file among the baselines is evidence of tampering, not noise."""
    versions = baseline_versions(host, settings)
    if not versions:
        raise IntegrityError(
            f"no baseline for this host in {baseline_dir(host, settings)}",
            target=host,
            hint="run `orchestrator baseline capture INVENTORY --host "
            f"{host}` while the host is known to be good; without a baseline it cannot be declared clean",
        )
    path = versions[0]
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IntegrityError(
            f"baseline {path} cannot be read: {exc}",
            target=host,
            hint="restore it from backup or capture a new one from a known-good host",
        ) from None
    _verify_signature(doc, path, host, settings)
    if doc.get("host") != host or doc.get("schema") != BASELINE_SCHEMA:
        raise IntegrityError(
            f"baseline {path} belongs to {doc.get('host')!r} ({doc.get('schema')}), not to this host",
            target=host,
            hint="capture a baseline for this host",
        )
    return dict(doc)


@dataclass(frozen=True)
class Baseline:
    """A baseline whose signature was checked, typed where the code reads it."""

    host: str
    taken: str
    roots: tuple[str, ...]
    snapshot: Snapshot
    document: Mapping[str, Any]  # the signed document, as stored

    @classmethod
    def from_document(cls, host: str, doc: Mapping[str, Any]) -> Baseline:
        return cls(host, str(doc.get("taken", "")), tuple(doc.get("roots", ())), Snapshot.from_json(doc["snapshot"]),
                   doc)


def read_baseline(host: str, settings: Settings) -> Baseline:
    """:func:`load_baseline`, typed."""
    return Baseline.from_document(host, load_baseline(host, settings))


# --------------------------------------------------------------------------------------------
# the captures journal
# --------------------------------------------------------------------------------------------


def open_captures_journal(settings: Settings) -> Journal:
    """``baselines/captures.jsonl``: every capture and refusal, hash chained and keyed like a run's journal."""
    from orchestrator.journal import Journal, journal_key
    from orchestrator.runs import open_forwarder

    key = journal_key(settings.signing_key_path, create=True)
    path = settings.baseline_journal_path
    if path.exists() and path.stat().st_size == 0:
        path.unlink()  # a capture that failed before its first record left an empty file: nothing to keep
    if path.exists():
        return Journal.open_existing(path, key=key, forwarder=open_forwarder(settings))
    return Journal.create(path, CAPTURES_JOURNAL_ID, key=key, forwarder=open_forwarder(settings))
