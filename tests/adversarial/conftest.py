"""The adversarial tier: hostile and careless input (inventory, device output, compromised hosts).

Each test reproduces one finding of the hardening review end to end where it can (the nspawn lab,
through the shared fixtures of tests/lab_fixtures.py) or at unit level, and asserts the refusal
(exit 2 with file:line) or the safe outcome. Nothing here is skipped in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LAB_FIXTURES = {"lab_up_status", "lab_status", "lab_run", "lab_ssh", "lab_host", "lab_ssh_config"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.adversarial)
            if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.lab)  # `-m "not lab"` never builds the lab by surprise
