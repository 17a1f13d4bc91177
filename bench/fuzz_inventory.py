"""Mutational fuzzing of `orchestrator validate` over the shipped inventories.

Each case takes one shipped inventory (inventories/*.yml, tests/data/*.yml), applies one to three
random mutations, byte-level (a character deleted, duplicated, swapped or inserted: brackets, colons,
quotes, tabs, control characters) or YAML-structural (a line deleted, duplicated or moved, its
indentation changed, a tag, an anchor, an alias or a merge key inserted, a number replaced by NaN,
infinity or a huge value), and runs the real command line entry (``orchestrator.cli.main``, in
process) on it. Every result must be exit 0 (still valid) or exit 2 with ``FILE:LINE:`` in the
message; anything else (a traceback, exit 1, an exit 2 without a line) is a finding. Deterministic
for a given seed::

    python bench/fuzz_inventory.py [--count 2000] [--seed 12] [--show 5]

prints ``fuzz: N mutations, A exit 0, B exit 2, C failures, S s`` and the first failures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = sorted([*REPO.glob("inventories/*.yml"), *REPO.glob("tests/data/*.yml")])

_INSERTS = ["[", "]", "{", "}", ":", ": ", ",", "-", "- ", "'", '"', "#", "&", "*", "!", "|", ">", "%", "@",
            "`", "?", "\t", "\n", " ", "\\", "\x00", "\x01", "\x7f", "\u2028", "\ufeff", "é", "<<: "]
_TAGS = ["!vault ", "!!int ", "!!float ", "!!bool ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!map ",
         "!!seq ", "!!str ", "!!null ", "!!python/object:os.system ", "!Ref ", "!!merge "]
_NUMBERS = [".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e400", "1.0e+400", "-1", "0", "99999999999999999999999",
            "0x7fffffffffffffff", "1_000", "0o777", "1.5", "-0.0", "4095", "4096", "65536", "2e-400"]
_NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _pos(text: str, rng: random.Random) -> int:
    return rng.randrange(len(text) + 1)


def delete_char(text: str, rng: random.Random) -> str:
    i = _pos(text, rng)
    return text[:i] + text[i + 1:]


def duplicate_char(text: str, rng: random.Random) -> str:
    i = _pos(text, rng)
    return text[:i] + text[i:i + 1] + text[i:]


def swap_chars(text: str, rng: random.Random) -> str:
    i = rng.randrange(max(len(text) - 1, 1))
    return text[:i] + text[i + 1:i + 2] + text[i:i + 1] + text[i + 2:]


def insert_char(text: str, rng: random.Random) -> str:
    i = _pos(text, rng)
    return text[:i] + rng.choice(_INSERTS) + text[i:]


def delete_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "".join(lines)


def duplicate_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "".join(lines)


def move_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    line = lines.pop(rng.randrange(len(lines)))
    lines.insert(rng.randrange(len(lines) + 1), line)
    return "".join(lines)


def reindent_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    if rng.random() < 0.5:
        lines[i] = " " * rng.choice([1, 2, 4]) + lines[i]
    else:
        lines[i] = lines[i][rng.choice([1, 2]):] if lines[i].startswith(" ") else "\t" + lines[i]
    return "".join(lines)


def _after_colon(text: str, rng: random.Random) -> int | None:
    spots = [m.end() for m in re.finditer(r":\s", text)]
    return rng.choice(spots) if spots else None


def insert_tag(text: str, rng: random.Random) -> str:
    i = _after_colon(text, rng)
    return text if i is None else text[:i] + rng.choice(_TAGS) + text[i:]


def insert_anchor_alias(text: str, rng: random.Random) -> str:
    i = _after_colon(text, rng)
    j = _after_colon(text, rng)
    if i is None or j is None:
        return text
    name = rng.choice(["a", "b", "x"])
    if i > j:
        i, j = j, i
    # an anchor on one value, an alias standing for another value (or for itself: a loop)
    anchored = text[:i] + f"&{name} " + text[i:]
    j += len(name) + 2
    end = anchored.find("\n", j)
    end = len(anchored) if end < 0 else end
    return anchored[:j] + f"*{name}" + (anchored[end:] if rng.random() < 0.5 else anchored[j:])


def insert_merge(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    indent = len(lines[i]) - len(lines[i].lstrip(" "))
    value = rng.choice(["1", "*a", "[1, 2]", "{}", "[*a]", "x"])
    lines.insert(i, " " * indent + f"<<: {value}\n")
    return "".join(lines)


def replace_number(text: str, rng: random.Random) -> str:
    spots = list(_NUMBER_RE.finditer(text))
    if not spots:
        return text
    m = rng.choice(spots)
    return text[:m.start()] + rng.choice(_NUMBERS) + text[m.end():]


MUTATIONS: tuple[Callable[[str, random.Random], str], ...] = (
    delete_char, duplicate_char, swap_chars, insert_char, insert_char,
    delete_line, duplicate_line, move_line, reindent_line,
    insert_tag, insert_anchor_alias, insert_merge, replace_number, replace_number,
)


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.choice([1, 1, 2, 3])):
        text = rng.choice(MUTATIONS)(text, rng)
    return text


@dataclass
class Outcome:
    mutations: int = 0
    exit_0: int = 0
    exit_2: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # source, why, mutated text
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"fuzz: {self.mutations} mutations, {self.exit_0} exit 0, {self.exit_2} exit 2, "
                f"{len(self.failures)} failures (tracebacks or exit 2 without file:line), {self.seconds:.1f} s")


def run_validate(path: Path) -> tuple[object, str]:
    """``orchestrator validate PATH`` in process: (exit code or the exception's traceback, stderr)."""
    from orchestrator.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["validate", str(path)])
        except SystemExit as exc:
            return exc.code, err.getvalue()
        except BaseException:  # noqa: BLE001 - a crash is what this looks for
            return traceback.format_exc(), err.getvalue()
    return 0, err.getvalue()


def fuzz(count: int = 2000, seed: int = 12, corpus: Sequence[Path] = CORPUS) -> Outcome:
    rng = random.Random(seed)
    sources = [(p, p.read_text(encoding="utf-8")) for p in corpus]
    outcome = Outcome()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-inventory-") as tmp:
        target = Path(tmp) / "mutant.yml"
        line_re = re.compile(re.escape(str(target)) + r":\d+: ")
        for _ in range(count):
            source, text = sources[rng.randrange(len(sources))]
            mutant = mutate(text, rng)
            target.write_bytes(mutant.encode("utf-8", errors="surrogatepass"))
            code, err = run_validate(target)
            outcome.mutations += 1
            if code == 0:
                outcome.exit_0 += 1
            elif code == 2 and line_re.search(err):
                outcome.exit_2 += 1
            else:
                why = code if isinstance(code, str) else f"exit {code} without file:line: {err[-400:]}"
                outcome.failures.append((source.name, str(why), mutant))
    outcome.seconds = time.perf_counter() - started
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--show", type=int, default=3, help="print the first N failures in full")
    args = parser.parse_args(argv)
    outcome = fuzz(args.count, args.seed)
    for source, why, mutant in outcome.failures[: args.show]:
        print(f"--- failure on a mutant of {source}:\n{why}\n--- mutant:\n{mutant}\n", file=sys.stderr)
    print(outcome.summary())
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
