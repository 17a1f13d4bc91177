"""Benchmark: the CPU an armed shutdown's waiting workers spend while its hosts are released.

An armed stop run (``orchestrator.drivers.ansible.AnsibleDriver.arm_stops``) has one Ansible worker per
host, each waiting in ``raw_when_released`` for its release file. This forks ``--hosts`` processes that
wait exactly as a worker does (the plugin's own ``_wait_for_release``), then releases them in
``--batches`` batches, as the executor does level by level and host by host (the orchestrator's own
``write_new``), and measures the CPU the waiting processes used, for two layouts, interleaved:

* ``per-host``: each host's release in a directory of its own (the product's layout): a release wakes
  one worker;
* ``shared``: every release in one directory (the layout before): every release woke every worker,
  N x N looks;

against a **floor**: the same processes whose release is already there (one look, then exit: the fork,
the wait's set-up and the exit, nothing else). Medians over ``--repeat`` rounds, CPU of the waited
children (their rusage), which a busy machine does not inflate:

    bench: release-wait-cpu-270-hosts 1.03 cpu-s            (per-host)
    bench: release-wait-shared-cpu-270-hosts 3.18 cpu-s
    bench: release-wait-floor-cpu-270-hosts 0.73 cpu-s
    bench: release-wait-vs-floor 1.41 x
    bench: release-wait-shared-vs-floor 4.37 x

(2-core machine, idle, 2026-12-04; at 90 hosts in 30 batches: 0.33, 0.56 and 0.27 cpu-s). Not part
of ``make bench``: it needs no lab, and takes about 30 s.

    python bench/release_wait.py [--hosts N] [--batches B] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from orchestrator.drivers.ansible import RELEASE_FILE_NAME
from orchestrator.storage import write_new

PLUGIN = Path(__file__).resolve().parents[1] / "playbooks" / "action_plugins" / "raw_when_released.py"
LAYOUTS = ("per-host", "shared", "floor")
SETTLE_S = 1.0  # time for every worker to be waiting before the first release


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("raw_when_released", PLUGIN)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {PLUGIN}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_path(root: Path, layout: str, host: str) -> Path:
    return root / host / RELEASE_FILE_NAME if layout != "shared" else root / host


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_round(plugin: ModuleType, layout: str, hosts: int, batches: int) -> float:
    """The waiting processes' CPU, in seconds, for one release of ``hosts`` hosts in ``batches``."""
    with tempfile.TemporaryDirectory(prefix="release-wait-") as directory:
        root = Path(directory)
        names = [f"host{i:04d}" for i in range(hosts)]
        for name in names:
            path = release_path(root, layout, name)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            if layout == "floor":
                write_new(path, "stop\n")
        before = children_cpu_s()
        pids = []
        for name in names:
            pid = os.fork()
            if pid == 0:  # a worker: wait as raw_when_released does, then leave without clean-up
                verdict = plugin._wait_for_release(str(release_path(root, layout, name)), 600.0)
                os._exit(0 if verdict == "stop" else 1)
            pids.append(pid)
        if layout != "floor":
            time.sleep(SETTLE_S)
            size = -(-hosts // batches)
            for start in range(0, hosts, size):
                for name in names[start:start + size]:
                    write_new(release_path(root, layout, name), "stop\n")
                time.sleep(0.02)  # the next level's hosts are verified off a little later
        failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in pids)
        if failed:
            raise SystemExit(f"{failed} worker(s) did not read their release")
        return children_cpu_s() - before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=270, help="workers (the 300-host lab arms 270)")
    parser.add_argument("--batches", type=int, default=90, help="releases in this many batches")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args(argv)
    plugin = load_plugin()
    figures: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for round_no in range(args.repeat):
        order = LAYOUTS if round_no % 2 == 0 else tuple(reversed(LAYOUTS))
        for layout in order:
            figures[layout].append(one_round(plugin, layout, args.hosts, args.batches))
    medians = {layout: statistics.median(values) for layout, values in figures.items()}
    n = args.hosts
    print(f"bench: release-wait-cpu-{n}-hosts {medians['per-host']:.2f} cpu-s")
    print(f"bench: release-wait-shared-cpu-{n}-hosts {medians['shared']:.2f} cpu-s")
    print(f"bench: release-wait-floor-cpu-{n}-hosts {medians['floor']:.2f} cpu-s")
    for layout, values in figures.items():
        print(f"range: release-wait-{layout} {min(values):.2f}-{max(values):.2f} cpu-s ({len(values)} values)")
    print(f"bench: release-wait-vs-floor {medians['per-host'] / medians['floor']:.2f} x")
    print(f"bench: release-wait-shared-vs-floor {medians['shared'] / medians['floor']:.2f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
