"""Definitions vulture (``make deadcode``) reports but that are used, grouped by why.

_.vulture sees Python only: it cannot see a field read by a Jinja template, a parameter a Protocol names,
_.a method paramiko or a test calls, or a value that is part of a file format. Each group says which.
_.Click commands are skipped by ``--ignore-decorators`` instead. A new finding is dead code or a new line
here, with its reason.
"""
# ruff: noqa: B018 - bare references are how vulture whitelists work
from typing import Any

_: Any = None

# Read by tests only, or by design for a caller to come.
_.state_dir_source  # config.Settings: where the state dir came from (cli|env|default)
_.repaired  # journal.Journal: the journal-repaired record open_existing appended (tests/unit/test_journal.py)
_.template_path  # drivers.devices: where a platform's action template lives (tests check each exists)
_.host_state  # drivers.vsphere: hypervisor power, maintenance and shutdown (issue 14's estate order)
_.shutdown_host
_.exit_maintenance
_.open_driver  # drivers.power_controllers: a controller's driver by type (issue 14's estate)
_.from_address
_.vagrant_json  # lab.vagrant: called by vagrant/Vagrantfile through `python -m`

# Called by a library, not by us.
_.missing_host_key  # paramiko's MissingHostKeyPolicy hook
_.trust_env  # requests.Session: no proxy or netrc from the environment

# Parameters of a Protocol (drivers.netmiko's typed view of a netmiko session).
_.command_string
_.expect_string
_.read_timeout
_.cmd_verify
_.config_commands
_.error_pattern

# Interface members (drivers.base) that drivers implement and the executor may call.
_.succeeded
_.restore_config

# Fields of journal events (orchestrator.events): written by the executor, pinned by the contract test.
_.sent_with
_.verified_before
_.event_type
_.event_seq
_.consequence
_.statement
_.torn_bytes
_.torn_sha256
_.collector
_.retry
_.ignored
_.forced

# Sections of an integrity snapshot (integrity.snapshot), compared by name from the section table.
_.missing_roots
_.package_verify
_.authorized_keys
_.cron
_.suid

# Values of the inventory and plan formats (DESIGN.md): valid in a file even where no code names them.
_.WAN
_.PARTNER
_.PENDING
_.VSPHERE  # power controller types (model.ControllerType), built from the file's `type:`
_.REDFISH
_.IPMI

# Fields read by the report templates (orchestrator/templates/report/*.j2).
_.label2
_.point
_.evidence_sha256
_.evidence_file
_.complete_by
_.basis
_.failures
_.journal_ok
_.journal_head
_.journal_problems

# The restore's per-host evidence (report/evidence.py HostEvidence), read by the report templates and the JSON report.
_.integrity_text
_.baseline_key_id
_.difference_paths
_.suites_passed
_.suites_total
_.suite_failures
_.gate_approver
_.reconnected_at

# pytest hooks of the health-suite child's plugin (orchestrator/health/plugin.py): pytest calls them by name.
_.pytest_addoption
_.pytest_runtest_logreport
_.pytest_collectreport
_.pytest_configure

# ruamel.yaml reads it: an inventory merged by `inventory import` keeps its quoted values quoted
# (orchestrator/onboarding/base.py round_trip).
_.preserve_quotes
