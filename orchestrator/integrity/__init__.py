"""Integrity baselines: what a known-good host looked like, kept off the host, signed; and the diff.

``capture_baseline`` runs a POSIX shell collector on the host over SSH (the script travels on stdin;
the host needs no Python and nothing is written on it) and stores the parsed snapshot in the state
dir as ``baselines/HOST/TAKEN.json``, signed with HMAC-SHA256 under a key that never leaves the
controller. ``check_host`` collects again and lists every difference by category and path. Nothing
compared against lives on the suspect host: the host's own dpkg md5sums are recorded
(``package-verify``) as one more view, never as the truth.

Files that legitimately change on every boot or on routine maintenance are excluded by name in
``VOLATILE_FILES`` (``snapshot.py``), and only those.

One job per module:

- ``collector``: the roots, the collector's commands, running it on a host (``collect``);
- ``parse``: the collector's output -> :class:`Snapshot`, a parser per section;
- ``snapshot``: the :class:`Snapshot` value and its JSON form inside a baseline;
- ``diff``: two snapshots -> :class:`Difference` values, a comparer per snapshot field;
- ``store``: the signing key, the signed baseline files, the captures journal;
- ``baseline``: capture and check, one host or many, and which hosts are suspect.
"""

from __future__ import annotations

from orchestrator.integrity.baseline import (
    BaselineRefused,
    capture_all,
    capture_baseline,
    check_all,
    check_host,
    listening_ports,
    listening_tcp_ports,
    suspect_hosts,
)
from orchestrator.integrity.collector import (
    COLLECT_TIMEOUT_S,
    SYSTEM_ROOTS,
    Collected,
    CommandRunner,
    collect,
    collector_commands,
    collector_script,
    host_roots,
)
from orchestrator.integrity.diff import CATEGORIES, Difference, IntegrityResult, diff_snapshots
from orchestrator.integrity.parse import MARK, parse_collector_output
from orchestrator.integrity.snapshot import MUST_SUCCEED, VOLATILE_FILES, Snapshot, failed_sections
from orchestrator.integrity.store import (
    BASELINE_SCHEMA,
    CAPTURES_JOURNAL_ID,
    SIGNATURE_ALG,
    Baseline,
    baseline_dir,
    baseline_path,
    baseline_versions,
    load_baseline,
    read_baseline,
    sign_document,
    signing_key,
)

__all__ = [
    "BASELINE_SCHEMA",
    "CAPTURES_JOURNAL_ID",
    "CATEGORIES",
    "COLLECT_TIMEOUT_S",
    "MARK",
    "MUST_SUCCEED",
    "SIGNATURE_ALG",
    "SYSTEM_ROOTS",
    "VOLATILE_FILES",
    "Baseline",
    "BaselineRefused",
    "Collected",
    "CommandRunner",
    "Difference",
    "IntegrityResult",
    "Snapshot",
    "baseline_dir",
    "baseline_path",
    "baseline_versions",
    "capture_all",
    "capture_baseline",
    "check_all",
    "check_host",
    "collect",
    "collector_commands",
    "collector_script",
    "diff_snapshots",
    "failed_sections",
    "host_roots",
    "listening_ports",
    "listening_tcp_ports",
    "load_baseline",
    "parse_collector_output",
    "read_baseline",
    "sign_document",
    "signing_key",
    "suspect_hosts",
]
