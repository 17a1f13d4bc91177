"""Shared fixtures for every test tier. Kept small: the lab fixtures live in tests/lab_fixtures.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory

pytest_plugins = ("lab_fixtures",)  # the nspawn lab, shared by tests/lab and tests/adversarial

DATA_DIR = Path(__file__).parent / "data"
SMALL_INVENTORY = DATA_DIR / "small.yml"


@pytest.fixture
def small_inventory_path() -> Path:
    """The small two-campus sample inventory (tests/data/small.yml)."""
    return SMALL_INVENTORY


@pytest.fixture
def small_inventory() -> Inventory:
    return load_inventory(SMALL_INVENTORY)


@pytest.fixture
def write_inventory(tmp_path: Path) -> Callable[[str], Path]:
    """Write inventory text to a fresh file under tmp_path and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"inventory-{next(counter)}.yml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
