"""`make bench`: how fast the product contains, shuts down and restores a campus, against its floors.

In one run, on one lab (a generated two-campus inventory of --hosts hosts built with `orchestrator lab
up`, or --inventory), baselines captured once, then --repeat interleaved rounds (default 3), each
measurement from "go" to "verified" on a restored lab, the load average logged at each start:

1. the product, `orchestrator shutdown --contain-only` (time_to_containment_s), then the containment
   floor (bench/floor.py, contain-only);
2. the product, `orchestrator shutdown` (time_to_shutdown_s), then `orchestrator restore --approve
   all` on the lab it left (the "restored" milestone);
3. the unpadded wave floor (bench/floor.py), then the restore floor (bench/restore_floor.py);
4. the dependency-driven floor (bench/floor.py, dag=True);
5. round 1 only: plain `ansible-playbook` (bench/ansible_baseline.py), information only.

Also the planning of a generated 5,000-host inventory (bench/plan_bench.py) and the controller's peak
memory: the largest resident set of the orchestrator's process tree (its own wait4 rusage). With
--scale N, the same rounds on a second lab of N hosts at the same depth (`make bench-scale`).

Output, one figure a line (medians over the rounds), their spread, the ratios and the goals:

    bench: contain-100-hosts 3.2 s
    range: contain-100-hosts 3.1-3.4 s (3 values)
    ...
    bench: shutdown-vs-floor 1.2 x
    goal: shutdown-vs-floor 1.2 <= 1.25: met

Lines starting with `detail:` say where the product's time goes (from its run journal). The lab is
always brought down at the end. Exit 0 when every measurement ran and verified, 1 otherwise.

    .venv/bin/python bench/run.py [--hosts 100] [--repeat 3] [--scale 300] [--no-restore] [--no-ansible]
                                  [--skip-lab] [--inventory PATH]
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
from floor import FloorResult, run_floor  # noqa: E402
from generate_inventory import generate  # noqa: E402
from plan_bench import PlanFigures  # noqa: E402
from restore_floor import run_restore_floor  # noqa: E402

from orchestrator.config import Settings  # noqa: E402
from orchestrator.inventory import load_inventory  # noqa: E402
from orchestrator.model import Action, Inventory  # noqa: E402

GOALS = {  # issue 17 (medians inside one run): for the benchmark's report, never as timed tests
    "shutdown-vs-floor": 1.25,  # x the unpadded wave floor
    "shutdown-vs-dag-floor": 1.5,  # x the dependency-driven floor
    "contain-vs-floor": 1.25,  # x
    "restore-vs-floor": 1.5,  # x
    "scale": 1.3,  # x: shutdown at --scale hosts against the 100-host figure, same depth
    "plan": 1.0,  # s, 5,000 hosts
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
        work = [(seg.gateway, Action.ISOLATE_SEGMENT, Action.RECONNECT_SEGMENT, seg.name)
                for seg in inv.segments.values() if seg.gateway and seg.name != inv.management_segment]
        work += [(link.device, Action.CUT_LINK, Action.RESTORE_LINK, link.name) for link in inv.links.values()]
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
    contained_s: float | None = None  # a full shutdown's time_to_containment_s


def run_product(bin_dir: Path, inventory_path: Path, state_dir: Path, *, label: str,
                timeout_s: float, sample_tree: bool) -> ProductRun:
    """``label``: contain (shutdown --contain-only), shutdown, or restore (--approve all; its time is
    the run's "restored" milestone)."""
    if label == "restore":
        argv = [cli(bin_dir), "restore", str(inventory_path), "--approve", "all", "--json"]
    else:
        argv = [cli(bin_dir), "shutdown", str(inventory_path), "--yes", "--json"]
        argv += ["--contain-only"] if label == "contain" else []
    env = {**os.environ, "ORCHESTRATOR_STATE_DIR": str(state_dir)}
    res = run_bounded(argv, timeout_s=timeout_s, env=env, sample_tree=sample_tree)
    contain_only = label == "contain"
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
    if label == "restore":
        key = "restored milestone"
        seconds = _milestone(run_dir, "restored") if run_dir is not None else None
    ok = res.returncode == 0 and isinstance(seconds, (int, float))
    problem = "" if ok else f"exit {res.returncode}, {key}={seconds}: {res.stderr.strip()[-600:]}"
    run = ProductRun(label, float(seconds) if isinstance(seconds, (int, float)) else None, res.seconds,
                     res.max_rss_mb, res.peak_tree_mb, run_dir, ok, problem)
    if run_dir is not None and (run_dir / "journal.jsonl").exists():
        run.breakdown = journal_breakdown(run_dir / "journal.jsonl")
    contained = result.get("time_to_containment_s")
    if label == "shutdown" and isinstance(contained, (int, float)):
        run.contained_s = float(contained)
    return run


def _milestone(run_dir: Path, name: str) -> float | None:
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("type") == "milestone" and record.get("name") == name:
            return float(record["elapsed_s"])
    return None


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


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


class Lab:
    """One round's measurements on the running lab, each started on a restored lab, its load average
    logged; figures, details and problems collected."""

    def __init__(self, args: argparse.Namespace, out: Path, bin_dir: Path, inv: Inventory, inventory_path: Path,
                 figures: dict[str, list[float]], details: list[str], problems: list[str]) -> None:
        self.args, self.out, self.bin_dir, self.inv, self.inventory_path = args, out, bin_dir, inv, inventory_path
        self.n = str(len(inv.hosts))
        self.figures, self.details, self.problems = figures, details, problems
        self.restore_state = out / "state-restore"  # the baselines, captured once, and the restore runs

    def start(self, tag: str, what: str, *, restore_first: bool = True) -> None:
        took = f"restore {restore_lab(self.inv):.1f} s; " if restore_first else ""
        load = load_line()
        log(f"[{tag}] {took}{what} ({load})")
        self.details.append(f"{load} at the start of {tag} {what}")

    def product(self, tag: str, label: str) -> None:
        state = self.restore_state if label == "restore" else self.out / f"state-{label}-{tag}"
        run = run_product(self.bin_dir, self.inventory_path, state, label=label, timeout_s=self.args.timeout,
                          sample_tree=self.args.memory_tree)
        _record_product(run, label, self.n, self.figures, self.details, self.problems)

    def floor(self, tag: str, name: str, fn: Callable[[], FloorResult], *, contain: bool = False) -> None:
        fl = _bounded_call(fn, self.args.timeout)
        value = fl.contain_s if contain else fl.shutdown_s
        if value is not None and fl.ok:
            self.figures.setdefault(f"{name}-{self.n}-hosts", []).append(value)
        self.details.extend(f"{name} {tag}: {w.label}: {w.act_s:.2f} s, done at {w.done_at_s:.2f} s"
                            for w in fl.waves)
        self.problems.extend(f"{name} {tag}: {f}" for f in fl.failures)

    def ansible(self, tag: str) -> None:
        ans = _bounded_call(functools.partial(run_ansible_baseline, self.inv, self.inventory_path,
                                              self.out / f"ansible-{tag}", bin_dir=self.bin_dir), self.args.timeout)
        if ans.contain_s is not None:
            self.figures.setdefault(f"ansible-contain-{self.n}-hosts", []).append(ans.contain_s)
        if ans.shutdown_s is not None:
            self.figures.setdefault(f"ansible-{self.n}-hosts", []).append(ans.shutdown_s)
        self.details.extend(f"ansible {tag}: {w.label}: act {w.act_s:.2f} s + verify {w.verify_s:.2f} s, "
                            f"verified at {w.done_at_s:.2f} s" for w in ans.waves)
        self.details.extend(f"ansible {tag} ran: {c}" for c in ans.commands)
        self.problems.extend(f"ansible {tag}: {f}" for f in ans.failures)

    def round(self, r: int) -> None:
        """Interleaved: the product, then its floor, on the same lab, one after the other."""
        tag = f"r{r + 1}"
        inv = self.inv
        settings = Settings(state_dir=self.restore_state, state_dir_source="cli")
        self.start(tag, "the product, contain-only")
        self.product(tag, "contain")
        self.start(tag, "the floor, contain-only")
        self.floor(tag, "contain-floor", lambda: run_floor(inv, contain_only=True), contain=True)
        self.start(tag, "the product, shutdown")
        self.product(tag, "shutdown")
        if not self.args.no_restore:
            self.start(tag, "the product, restore --approve all", restore_first=False)
            self.product(tag, "restore")
        self.start(tag, "the wave floor, shutdown")
        self.floor(tag, "floor", lambda: run_floor(inv))
        if not self.args.no_restore:
            self.start(tag, "the restore floor", restore_first=False)
            self.floor(tag, "restore-floor", lambda: run_restore_floor(inv, settings))
        self.start(tag, "the dependency-driven floor, shutdown")
        self.floor(tag, "dag-floor", lambda: run_floor(inv, dag=True))
        if r == 0 and not self.args.no_ansible:
            self.start(tag, "plain ansible-playbook (information only)")
            self.ansible(tag)


CAPTURE_FORKS = (32, 8, 4)  # hosts captured at once: the first attempt, then each retry of the failed


def capture_baselines(bin_dir: Path, inventory_path: Path, state_dir: Path, timeout_s: float,
                      details: list[str]) -> None:
    """Every host's integrity baseline, once, before the rounds (`orchestrator baseline capture`);
    the hosts whose capture failed (a busy host's systemctl times out: right after `lab up` the 100
    machines are still settling, and each capture also verifies every package) are tried again, alone
    with the others that did and fewer at once (``CAPTURE_FORKS``)."""
    log(f"baselines, once, for every restore (orchestrator baseline capture; {load_line()})")
    env = {**os.environ, "ORCHESTRATOR_STATE_DIR": str(state_dir)}
    scope: list[str] = []
    for attempt, forks in enumerate(CAPTURE_FORKS, start=1):
        cap = run_bounded([cli(bin_dir), "--forks", str(forks), "baseline", "capture", str(inventory_path), "--json",
                           *scope], timeout_s=timeout_s, env=env)
        try:
            doc = json.loads(cap.stdout)
            failed = {n: h.get("detail") for n, h in doc["hosts"].items() if not h.get("ok")}
        except (ValueError, IndexError, KeyError, AttributeError):
            failed = {"?": (cap.stderr or cap.stdout).strip()[-600:]}
        details.append(f"baseline capture {attempt} ({forks} at a time): {cap.seconds:.1f} s, exit {cap.returncode}, "
                       f"{len(failed)} failed")
        if cap.returncode == 0 and not failed:
            return
        if "?" in failed or attempt == len(CAPTURE_FORKS):
            raise RuntimeError(f"baseline capture exited {cap.returncode}: {failed}")
        scope = [arg for name in sorted(failed) for arg in ("--host", name)]


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
        log(f"orchestrator lab up ({load_line()})")
        up = lab_cmd(bin_dir, "up", str(inventory_path), timeout_s=1800)
        details.append(f"lab up: {up.seconds:.1f} s for {n} hosts")
        lab = Lab(args, out, bin_dir, inv, inventory_path, figures, details, problems)
        if not args.no_restore:
            capture_baselines(bin_dir, inventory_path, lab.restore_state, args.timeout, details)
        for r in range(args.repeat):
            lab.round(r)
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
    if run.contained_s is not None:  # containment inside the full shutdown, beside the stops' preparation
        figures.setdefault(f"contain-in-shutdown-{n}-hosts", []).append(run.contained_s)
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds (product, floor, product, floor, ...); medians (default 3)")
    parser.add_argument("--scale", type=int, default=0, metavar="HOSTS",
                        help="then the same rounds on a second lab of HOSTS hosts, same depth (make bench-scale)")
    parser.add_argument("--no-restore", action="store_true", help="leave out restore and the restore floor")
    parser.add_argument("--no-ansible", action="store_true",
                        help="leave out plain ansible-playbook (information only; round 1 only by default)")
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
            if args.scale:
                scaled = argparse.Namespace(**{**vars(args), "hosts": args.scale, "inventory": None})
                run_lab(scaled, out, bin_dir, figures, details, problems)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - report what was measured, and why not the rest
            problems.append(f"lab benchmark stopped: {type(exc).__name__}: {exc}")
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    details.append(f"the benchmark's own max RSS: {self_rss:.0f} MB (a forked child starts with it: "
                   "peak-rss-mb cannot be lower)")

    for line in details:
        print(f"detail: {line}")
    _report(figures, n, args)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def _report(figures: dict[str, list[float]], n: str, args: argparse.Namespace) -> None:
    """``bench: NAME VALUE UNIT`` (medians; peaks for memory), then ``range:`` lines (min-max over the
    rounds), the ratios, and ``goal:`` lines."""
    units = {"peak-rss-mb": "MB", "peak-tree-pss-mb": "MB"}
    plan_key = f"plan-{args.plan_hosts}-hosts"
    order = [f"contain-{n}-hosts", f"contain-floor-{n}-hosts", f"shutdown-{n}-hosts", f"floor-{n}-hosts",
             f"dag-floor-{n}-hosts", f"restore-{n}-hosts", f"restore-floor-{n}-hosts", f"ansible-{n}-hosts",
             plan_key, "peak-rss-mb"]
    medians = {k: (max(v) if k.startswith("peak-") else median(v)) for k, v in figures.items()}
    for key in order + sorted(k for k in medians if k not in order):
        if key in medians:
            print(f"bench: {key} {fmt(medians[key])} {units.get(key, 's')}")
    for key in order + sorted(k for k in figures if k not in order):
        values = figures.get(key, [])
        if len(values) > 1:
            print(f"range: {key} {fmt(min(values))}-{fmt(max(values))} {units.get(key, 's')} ({len(values)} values)")
    m = medians
    ratios = {
        "shutdown-vs-floor": _ratio(m.get(f"shutdown-{n}-hosts"), m.get(f"floor-{n}-hosts")),
        "shutdown-vs-dag-floor": _ratio(m.get(f"shutdown-{n}-hosts"), m.get(f"dag-floor-{n}-hosts")),
        "contain-vs-floor": _ratio(m.get(f"contain-{n}-hosts"), m.get(f"contain-floor-{n}-hosts")),
        "restore-vs-floor": _ratio(m.get(f"restore-{n}-hosts"), m.get(f"restore-floor-{n}-hosts")),
        "ansible-vs-product": _ratio(m.get(f"ansible-{n}-hosts"), m.get(f"shutdown-{n}-hosts")),
        "ansible-contain-vs-product": _ratio(m.get(f"ansible-contain-{n}-hosts"), m.get(f"contain-{n}-hosts")),
    }
    if args.scale:
        ratios[f"scale-{args.scale}-vs-{n}"] = _ratio(m.get(f"shutdown-{args.scale}-hosts"),
                                                      m.get(f"shutdown-{n}-hosts"))
    for name, value in ratios.items():
        if value is not None:
            print(f"bench: {name} {value:.2f} x")
    checks = [
        ("shutdown-vs-floor", ratios["shutdown-vs-floor"], GOALS["shutdown-vs-floor"]),
        ("shutdown-vs-dag-floor", ratios["shutdown-vs-dag-floor"], GOALS["shutdown-vs-dag-floor"]),
        ("contain-vs-floor", ratios["contain-vs-floor"], GOALS["contain-vs-floor"]),
        ("restore-vs-floor", ratios["restore-vs-floor"], GOALS["restore-vs-floor"]),
        (f"scale-{args.scale}-vs-{n}", ratios.get(f"scale-{args.scale}-vs-{n}"), GOALS["scale"]),
        (plan_key, m.get(plan_key), GOALS["plan"]),
        ("peak-rss-mb", m.get("peak-rss-mb"), GOALS["peak-rss-mb"]),
    ]
    for name, value, goal in checks:
        if value is not None:
            print(f"goal: {name} {fmt(value)} <= {goal:g}: {'met' if value <= goal else 'NOT met'}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


if __name__ == "__main__":
    sys.exit(main())
