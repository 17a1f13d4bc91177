"""`make bench`: how fast the product contains and shuts down a campus, against the floor and plain Ansible.

In one run, on one lab (a generated two-campus inventory of --hosts hosts built with `orchestrator lab
up`, or --inventory), each measured from "go" to "verified", the lab restored to running in between:

1. the product: `orchestrator shutdown --contain-only --yes --json` (time_to_containment_s from its
   result line) and `orchestrator shutdown --yes --json` (time_to_shutdown_s), the real console
   script with ORCHESTRATOR_STATE_DIR in the output directory;
2. the floor (bench/floor.py): the same waves and device commands with bare parallel paramiko;
3. plain `ansible-playbook` with default settings, wave by wave (bench/ansible_baseline.py).

Also the planning of a generated 5,000-host inventory (bench/plan_bench.py) and the controller's peak
memory: the largest resident set of the orchestrator's process tree (its own wait4 rusage).

Output, one figure a line (medians when --repeat > 1):

    bench: contain-100-hosts 3.2 s
    ...
    bench: shutdown-vs-floor 1.4 x
    bench: ansible-vs-product 6.1 x

Lines starting with `detail:` say where the product's time goes (from its run journal). The lab is
always brought down at the end. Exit 0 when every measurement ran and verified, 1 otherwise.

    .venv/bin/python bench/run.py [--hosts 100] [--repeat 1] [--skip-lab] [--inventory PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from ansible_baseline import run_ansible_baseline  # noqa: E402
from floor import run_floor  # noqa: E402
from generate_inventory import generate  # noqa: E402
from plan_bench import PlanFigures  # noqa: E402

from orchestrator.inventory import load_inventory  # noqa: E402
from orchestrator.model import Inventory  # noqa: E402

GOALS = {  # issue 6: for the benchmark's report, never as timed tests
    "contain": 5.0,  # s
    "shutdown-vs-floor": 1.5,  # x
    "ansible-vs-product": 5.0,  # x, at least
    "plan": 1.0,  # s
    "peak-rss-mb": 300.0,  # MB
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- running commands with a bound, and their memory ------------------------------------------------


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float  # the largest resident set in the command's process tree (wait4 rusage)
    peak_tree_mb: float | None = None  # sampled sum of PSS over the tree, with --memory-tree


def run_bounded(argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None,
                cwd: Path = REPO, sample_tree: bool = False) -> Completed:
    """Run a command in its own session; kill the whole session after ``timeout_s``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        return _run_bounded(argv, out, err, timeout_s, env, cwd, sample_tree)


def _run_bounded(argv: Sequence[str], out: IO[bytes], err: IO[bytes], timeout_s: float,
                 env: dict[str, str] | None, cwd: Path, sample_tree: bool) -> Completed:
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                            start_new_session=True)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    peak: list[float] = [0.0]
    stop_sampling = threading.Event()
    sampler = None
    if sample_tree:
        sampler = threading.Thread(target=_sample_tree, args=(proc.pid, peak, stop_sampling), daemon=True)
        sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        stop_sampling.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler is not None:
        sampler.join(5)
    seconds = time.monotonic() - start
    out.seek(0)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    if killed.is_set():
        stderr += f"\n(killed after {timeout_s:.0f} s)"
    return Completed(list(argv), proc.returncode, out.read().decode(errors="replace"), stderr, seconds,
                     usage.ru_maxrss / 1024, peak[0] / 1024 if sample_tree else None)


def _sample_tree(root: int, peak: list[float], stop: threading.Event) -> None:
    """Sum of PSS (kB) over the process tree of ``root``, twice a second. By parent links, not by
    session: ansible-runner starts ansible-playbook in a session of its own (a pty)."""
    while not stop.wait(0.5):
        parent: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_bytes()
                    parent[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
                except (OSError, ValueError):
                    continue
        tree = {root}
        grew = True
        while grew:
            new = {pid for pid, ppid in parent.items() if ppid in tree and pid not in tree}
            tree |= new
            grew = bool(new)
        total = 0
        for pid in tree:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            except (OSError, ValueError):
                continue
        peak[0] = max(peak[0], float(total))


# ---- the lab ----------------------------------------------------------------------------------------


def cli(bin_dir: Path) -> str:
    return str(bin_dir / "orchestrator")


def lab_cmd(bin_dir: Path, *args: str, timeout_s: float) -> Completed:
    res = run_bounded([cli(bin_dir), "lab", *args], timeout_s=timeout_s)
    if res.returncode != 0:
        raise RuntimeError(f"orchestrator lab {' '.join(args)} exited {res.returncode}: "
                           f"{(res.stderr or res.stdout).strip()[-800:]}")
    return res


def restore_lab(inv: Inventory, timeout_s: float = 300.0) -> float:
    """Every host running and answering SSH, no isolation or cut in force. Returns the seconds it took."""
    from orchestrator import lab
    from orchestrator.drivers.netmiko import NetmikoDriver
    from orchestrator.drivers.power import LabPower
    from orchestrator.lab import keys, reach

    start = time.monotonic()
    power = LabPower()
    stopped = [h.name for h in inv.hosts.values() if power.state(h.name) == "stopped"]
    with ThreadPoolExecutor(max_workers=4) as pool:  # as `lab up` does: all at once starves the CPUs
        list(pool.map(power.power_on, stopped))
    net = NetmikoDriver(inv)
    try:
        work = [(seg.gateway, "isolate-segment", "reconnect-segment", seg.name) for seg in inv.segments.values()
                if seg.gateway and seg.name != inv.management_segment]
        work += [(link.device, "cut-link", "restore-link", link.name) for link in inv.links.values()]
        for device, action, undo, target in work:
            if net.is_in_force(device, action, target):
                net.apply(device, undo, target)
                if net.is_in_force(device, action, target):
                    raise RuntimeError(f"{action} of {target} is still in force on {device}")
    finally:
        net.close()
    ready = reach.wait_all({h.name: str(h.management_address) for h in inv.hosts.values()},
                           keys.client_key_path(lab.LAB_ROOT), keys.known_hosts_path(lab.LAB_ROOT), timeout_s)
    late = [r.name for r in ready if not r.ready]
    if late:
        raise RuntimeError(f"not back up after {timeout_s:.0f} s: {', '.join(late)}")
    return time.monotonic() - start


# ---- the product ------------------------------------------------------------------------------------


@dataclass
class ProductRun:
    label: str
    seconds: float | None  # time_to_containment_s or time_to_shutdown_s
    wall_s: float  # the whole command: start-up, load, plan, run, report
    max_rss_mb: float
    peak_tree_mb: float | None
    run_dir: Path | None
    ok: bool
    problem: str = ""
    breakdown: list[str] = field(default_factory=list)


def run_product(bin_dir: Path, inventory_path: Path, state_dir: Path, *, contain_only: bool,
                timeout_s: float, sample_tree: bool) -> ProductRun:
    argv = [cli(bin_dir), "shutdown", str(inventory_path), "--yes", "--json"]
    argv += ["--contain-only"] if contain_only else []
    env = {**os.environ, "ORCHESTRATOR_STATE_DIR": str(state_dir)}
    res = run_bounded(argv, timeout_s=timeout_s, env=env, sample_tree=sample_tree)
    label = "contain" if contain_only else "shutdown"
    result: dict[str, Any] = {}
    for line in res.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "result":
            result = event
    key = "time_to_containment_s" if contain_only else "time_to_shutdown_s"
    seconds = result.get(key)
    run_dir = state_dir / "runs" / str(result["run_id"]) if result.get("run_id") else None
    ok = res.returncode == 0 and isinstance(seconds, (int, float))
    problem = "" if ok else f"exit {res.returncode}, {key}={seconds}: {res.stderr.strip()[-600:]}"
    run = ProductRun(label, float(seconds) if isinstance(seconds, (int, float)) else None, res.seconds,
                     res.max_rss_mb, res.peak_tree_mb, run_dir, ok, problem)
    if run_dir is not None and (run_dir / "journal.jsonl").exists():
        run.breakdown = journal_breakdown(run_dir / "journal.jsonl")
    return run


def journal_breakdown(path: Path) -> list[str]:
    """Where a run's time went: per wave, its wall time and the step durations inside it."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    waves: list[dict[str, Any]] = [r for r in records if r["type"] == "wave-started"]
    ends = [r["mono"] for r in waves[1:]] + [records[-1]["mono"]]
    start = records[0]["mono"]
    step_wave: dict[str, int] = {}
    for r in records:
        if r["type"] == "step-started":
            step_wave[r["step_id"]] = r["wave"]
    lines = []
    for w, end in zip(waves, ends, strict=True):
        durations = [r["duration_s"] for r in records if r["type"] == "step-finished"
                     and step_wave.get(r["step_id"]) == w["wave"] and r.get("duration_s") is not None]
        in_wave = [r for r in records if w["mono"] <= r["mono"] <= end]
        sent = [r["mono"] for r in in_wave if r["type"] == "command-sent"]
        verified = [r["mono"] for r in in_wave if r["type"] == "verification"]
        parts = [f"wave {w['wave']} {w['phase']}: {len(w['steps'])} steps, {end - w['mono']:.2f} s "
                 f"(ends at {end - start:.2f} s)"]
        if durations:
            parts.append(f"step max {max(durations):.2f} s, median {statistics.median(durations):.2f} s")
        if sent:
            parts.append(f"first command at +{min(sent) - w['mono']:.2f} s")
        playbook = [r for r in in_wave if r["type"] == "ansible-event" and r.get("phase") in ("start", "end")]
        for r in playbook:
            if r["phase"] == "start":
                parts.append(f"ansible-runner started at +{r['mono'] - w['mono']:.2f} s")
            else:
                parts.append(f"ended at +{r['mono'] - w['mono']:.2f} s ({r.get('duration_s')} s)")
        tasks: dict[str, list[float]] = {}
        for r in in_wave:
            if r["type"] == "ansible-event" and r.get("task"):
                tasks.setdefault(str(r["task"]), []).append(r["mono"] - w["mono"])
        for task, monos in sorted(tasks.items(), key=lambda t: min(t[1])):
            parts.append(f"task '{task}' +{min(monos):.2f}..+{max(monos):.2f} s")
        if verified:
            parts.append(f"first verification at +{min(verified) - w['mono']:.2f} s, "
                         f"last at +{max(verified) - w['mono']:.2f} s")
        lines.append("; ".join(parts))
    for r in records:
        if r["type"] == "ansible-event" and r.get("phase") == "opened":
            lines.append(f"connections opened ahead: {len(r.get('hosts', []))} hosts "
                         f"({len(r.get('failed', {}))} not opened) in {r.get('seconds')} s, "
                         f"done at {r['mono'] - start:.2f} s")
    return lines


# ---- the benchmark ------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def run_lab(args: argparse.Namespace, out: Path, bin_dir: Path, figures: dict[str, list[float]],
            details: list[str], problems: list[str]) -> str:
    """The lab measurements; returns the host-count label ("100")."""
    if args.inventory:
        inventory_path = Path(args.inventory).resolve()
    else:
        inventory_path = out / f"lab-{args.hosts}.yml"
        inventory_path.write_text(generate(args.hosts, lab=True), encoding="utf-8")
    inv = load_inventory(inventory_path)
    n = str(len(inv.hosts))
    log(f"lab inventory {inventory_path}: {n} hosts, {len(inv.devices)} devices, {len(inv.segments)} segments")
    log("orchestrator lab down (whatever lab is up)")
    lab_cmd(bin_dir, "down", timeout_s=600)
    try:
        log("orchestrator lab up")
        up = lab_cmd(bin_dir, "up", str(inventory_path), timeout_s=1800)
        details.append(f"lab up: {up.seconds:.1f} s for {n} hosts")
        for r in range(args.repeat):
            tag = f"r{r + 1}"
            log(f"[{tag}] restore ({restore_lab(inv):.1f} s); the product, contain-only")
            contain = run_product(bin_dir, inventory_path, out / f"state-contain-{tag}", contain_only=True,
                                  timeout_s=args.timeout, sample_tree=args.memory_tree)
            _record_product(contain, "contain", n, figures, details, problems)
            log(f"[{tag}] restore ({restore_lab(inv):.1f} s); the product, shutdown")
            shutdown = run_product(bin_dir, inventory_path, out / f"state-shutdown-{tag}", contain_only=False,
                                   timeout_s=args.timeout, sample_tree=args.memory_tree)
            _record_product(shutdown, "shutdown", n, figures, details, problems)
            log(f"[{tag}] restore ({restore_lab(inv):.1f} s); the floor")
            fl = _bounded_call(lambda: run_floor(inv), args.timeout)
            if fl.contain_s is not None:
                figures.setdefault(f"floor-contain-{n}-hosts", []).append(fl.contain_s)
            if fl.shutdown_s is not None:
                figures.setdefault(f"floor-{n}-hosts", []).append(fl.shutdown_s)
            details += [f"floor {tag}: {w.label}: act {w.act_s:.2f} s + verify {w.verify_s:.2f} s, "
                        f"verified at {w.done_at_s:.2f} s" for w in fl.waves]
            problems += [f"floor {tag}: {f}" for f in fl.failures]
            log(f"[{tag}] restore ({restore_lab(inv):.1f} s); plain ansible-playbook")
            workdir = out / f"ansible-{tag}"
            ans = _bounded_call(functools.partial(run_ansible_baseline, inv, inventory_path, workdir,
                                                  bin_dir=bin_dir), args.timeout)
            if ans.contain_s is not None:
                figures.setdefault(f"ansible-contain-{n}-hosts", []).append(ans.contain_s)
            if ans.shutdown_s is not None:
                figures.setdefault(f"ansible-{n}-hosts", []).append(ans.shutdown_s)
            details += [f"ansible {tag}: {w.label}: act {w.act_s:.2f} s + verify {w.verify_s:.2f} s, "
                        f"verified at {w.done_at_s:.2f} s" for w in ans.waves]
            details += [f"ansible {tag} ran: {c}" for c in ans.commands]
            problems += [f"ansible {tag}: {f}" for f in ans.failures]
    finally:
        log("orchestrator lab down")
        try:
            lab_cmd(bin_dir, "down", timeout_s=600)
        except (RuntimeError, OSError) as exc:
            problems.append(f"lab down: {exc}")
    return n


T = TypeVar("T")


def _bounded_call(fn: Callable[[], T], timeout_s: float) -> T:
    """Run ``fn`` in a thread; give up waiting after ``timeout_s`` (its own timeouts end it later)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=timeout_s)
    finally:
        pool.shutdown(wait=False)


def _record_product(run: ProductRun, label: str, n: str, figures: dict[str, list[float]], details: list[str],
                    problems: list[str]) -> None:
    if run.seconds is not None:
        figures.setdefault(f"{label}-{n}-hosts", []).append(run.seconds)
    figures.setdefault(f"{label}-{n}-hosts-wall", []).append(run.wall_s)
    figures.setdefault("peak-rss-mb", []).append(run.max_rss_mb)
    if run.peak_tree_mb is not None:
        figures.setdefault("peak-tree-pss-mb", []).append(run.peak_tree_mb)
    details.append(f"product {label}: {run.seconds} s from go to verified, {run.wall_s:.2f} s for the whole "
                   f"command, max RSS {run.max_rss_mb:.0f} MB, run {run.run_dir}")
    details += [f"product {label} {line}" for line in run.breakdown]
    if not run.ok:
        problems.append(f"product {label}: {run.problem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100, help="hosts in the generated lab (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="measure R times and report medians")
    parser.add_argument("--skip-lab", action="store_true", help="only the planning benchmark")
    parser.add_argument("--inventory", help="bench on this lab inventory instead of a generated one")
    parser.add_argument("--plan-hosts", type=int, default=5000, help="hosts for the planning benchmark")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each measurement, seconds")
    parser.add_argument("--memory-tree", action="store_true",
                        help="also sample the product's whole process tree (PSS, twice a second)")
    parser.add_argument("--out", help="where inventories, run journals and logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "orchestrator").exists():
        bin_dir = REPO / ".venv" / "bin"
    figures: dict[str, list[float]] = {}
    details: list[str] = [f"output directory: {out}"]
    problems: list[str] = []

    log(f"planning a generated {args.plan_hosts}-host inventory")
    # In a process of its own: 5,000 hosts in this process would make every later fork (the product
    # runs) start with a large resident set, and wait4's ru_maxrss counts it.
    planned = run_bounded([sys.executable, str(HERE / "plan_bench.py"), "--hosts", str(args.plan_hosts),
                           "--repeat", str(max(3, args.repeat)), "--json"], timeout_s=args.timeout)
    if planned.returncode != 0:
        print(f"bench: plan_bench.py failed: {planned.stderr.strip()[-800:]}", file=sys.stderr)
        return 1
    plan = PlanFigures(**json.loads(planned.stdout))
    figures[f"plan-{args.plan_hosts}-hosts"] = [plan.worst_load_plan_s]
    figures[f"plan-only-{args.plan_hosts}-hosts"] = [plan.worst_plan_only_s]
    figures[f"plan-{args.plan_hosts}-hosts-cpu"] = [max(plan.load_plan_cpu_s.values())]
    for mode, secs in plan.load_plan_s.items():
        details.append(f"plan {mode}: load+plan {secs:.3f} s (cpu {plan.load_plan_cpu_s[mode]:.3f} s), plan alone "
                       f"{plan.plan_only_s[mode]:.3f} s (cpu {plan.plan_only_cpu_s[mode]:.3f} s), "
                       f"{plan.steps[mode]} steps")

    n = str(len(load_inventory(Path(args.inventory)).hosts)) if args.inventory else str(args.hosts)
    if not args.skip_lab:
        if os.geteuid() != 0:
            print("bench: the lab needs root (use --skip-lab for the planning benchmark only)", file=sys.stderr)
            return 2
        try:
            n = run_lab(args, out, bin_dir, figures, details, problems)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - report what was measured, and why not the rest
            problems.append(f"lab benchmark stopped: {type(exc).__name__}: {exc}")
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    details.append(f"the benchmark's own max RSS: {self_rss:.0f} MB (a forked child starts with it: "
                   "peak-rss-mb cannot be lower)")

    for line in details:
        print(f"detail: {line}")
    units = {"peak-rss-mb": "MB", "peak-tree-pss-mb": "MB"}
    order = [f"contain-{n}-hosts", f"shutdown-{n}-hosts", f"floor-{n}-hosts", f"ansible-{n}-hosts",
             f"plan-{args.plan_hosts}-hosts", "peak-rss-mb"]
    medians = {k: (max(v) if k.startswith("peak-") else median(v)) for k, v in figures.items()}
    for key in order + sorted(k for k in medians if k not in order):
        if key in medians:
            print(f"bench: {key} {fmt(medians[key])} {units.get(key, 's')}")
    shutdown, floor_s, ansible = (medians.get(f"shutdown-{n}-hosts"), medians.get(f"floor-{n}-hosts"),
                                  medians.get(f"ansible-{n}-hosts"))
    if shutdown and floor_s:
        print(f"bench: shutdown-vs-floor {shutdown / floor_s:.2f} x")
    if shutdown and ansible:
        print(f"bench: ansible-vs-product {ansible / shutdown:.2f} x")
    contain, a_contain = medians.get(f"contain-{n}-hosts"), medians.get(f"ansible-contain-{n}-hosts")
    f_contain = medians.get(f"floor-contain-{n}-hosts")
    if contain and f_contain:
        print(f"bench: contain-vs-floor {contain / f_contain:.2f} x")
    if contain and a_contain:
        print(f"bench: ansible-contain-vs-product {a_contain / contain:.2f} x")
    _goals(medians, n, args.plan_hosts)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def _goals(m: dict[str, float], n: str, plan_hosts: int) -> None:
    checks = [
        (f"contain-{n}-hosts", m.get(f"contain-{n}-hosts"), GOALS["contain"], "<"),
        ("shutdown-vs-floor", _ratio(m.get(f"shutdown-{n}-hosts"), m.get(f"floor-{n}-hosts")),
         GOALS["shutdown-vs-floor"], "<"),
        ("ansible-vs-product", _ratio(m.get(f"ansible-{n}-hosts"), m.get(f"shutdown-{n}-hosts")),
         GOALS["ansible-vs-product"], ">"),
        (f"plan-{plan_hosts}-hosts", m.get(f"plan-{plan_hosts}-hosts"), GOALS["plan"], "<"),
        ("peak-rss-mb", m.get("peak-rss-mb"), GOALS["peak-rss-mb"], "<"),
    ]
    for name, value, goal, way in checks:
        if value is None:
            continue
        met = value < goal if way == "<" else value >= goal
        print(f"goal: {name} {fmt(value)} {way} {goal:g}: {'met' if met else 'NOT met'}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


if __name__ == "__main__":
    sys.exit(main())
