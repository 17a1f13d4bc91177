"""Bounded mutational fuzzing of `orchestrator validate` over the shipped inventories (issue 12, finding 7).

3,000 mutants (fixed seed: the same ones on every run), each through the real command line entry:
every result must be exit 0 or exit 2 with FILE:LINE, never a traceback. The figures are printed
(always, even without -s) so they can be quoted; `python bench/fuzz_inventory.py --count N --seed S`
runs more.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
COUNT = 3000
SEED = 12


def _fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_inventory", REPO / "bench" / "fuzz_inventory.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_mutated_inventories_are_valid_or_refused_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    fuzz = _fuzz_module()
    assert len(fuzz.CORPUS) >= 5
    outcome = fuzz.fuzz(COUNT, SEED)
    with capsys.disabled():
        print(f"\n{outcome.summary()} (seed {SEED}, corpus: {', '.join(p.name for p in fuzz.CORPUS)})")
    assert outcome.mutations == COUNT
    assert outcome.exit_2 > COUNT // 2  # the mutations do break files: this is not fuzzing valid input only
    assert outcome.exit_0 > 0
    shown = "\n\n".join(f"{source}: {why}" for source, why, _ in outcome.failures[:3])
    assert not outcome.failures, f"{len(outcome.failures)} failures, first ones:\n{shown}"
    assert outcome.seconds < 120  # about 20 s on the CI machine; far more means something expands


def test_the_mutations_reach_every_operator() -> None:
    """Each mutation operator changes text (a fuzzer whose operators do nothing proves nothing)."""
    import random

    fuzz = _fuzz_module()
    text = (REPO / "tests" / "data" / "fake-campus.yml").read_text(encoding="utf-8")
    for operator in fuzz.MUTATIONS:
        rng = random.Random(1)
        assert any(operator(text, rng) != text for _ in range(20)), operator.__name__
