"""The alternative a user has today: the same playbooks run by plain `ansible-playbook`, one wave after
another, with Ansible's default settings.

No tuning: ANSIBLE_* variables are removed from the environment, no ansible.cfg is read (the working
directory is an empty temporary one, HOME a fresh one, so ~/.ansible.cfg and ~/.ansible/cp are
pristine), so forks are 5, pipelining is off, the linear strategy runs. Host keys stay checked through
the exported inventory's ssh arguments (StrictHostKeyChecking=yes against the lab's known_hosts).

From "go" to "verified":

1. containment: `ansible-playbook playbooks/network-isolate.yml -e inventory_file=INVENTORY`, limited
   to what it can drive with ansible-core alone: links and segments on linux devices. Devices of
   platform cisco_ios go through ansible.netcommon's network_cli, a collection this install does not
   have; for the lab's FRR router the baseline sends the same rendered lines with an ad-hoc
   `ansible -m shell` as root (`vtysh -c 'configure terminal' -c 'interface X' -c 'shutdown'`, after a
   `show running-config` backup), which is what a user without the collection would do;
2. then the floor's verification (bench/floor.py: peers no longer reach inside, segments no longer
   ping across their gateways);
3. each stop wave of the shutdown plan: `ansible-playbook -i HOSTS playbooks/stop-host.yml --limit
   h1,h2,...` (HOSTS from `orchestrator inventory ansible INVENTORY`), then the floor's verification
   (SSH closed and the lab power driver says stopped) before the next wave. The power-off timer is
   set to POWEROFF_DELAY_S (5 s, not the playbook's 200 ms: see there why).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from floor import LabSsh, Timing, Verifier, device_command

from orchestrator.model import Action, Inventory, Mode, Phase, Plan, Step
from orchestrator.planner import build_plan

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
# With Ansible's defaults (no pipelining, no ServerAliveInterval) a short power-off timer (the
# playbook's default is 200 ms; this was seen with 1 s) can fire before Ansible has read the task's
# result: the SSH session then hangs on a machine that is gone (seen: a wave stuck for over 10
# minutes). A user of the fallback learns to give it time; 5 s is what the baseline uses.
POWEROFF_DELAY_S = 5


@dataclass
class BaselineResult:
    contain_s: float | None = None
    shutdown_s: float | None = None
    waves: list[Timing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def plain_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["HOME"] = str(home)
    env.pop("ORCHESTRATOR_STATE_DIR", None)
    return env


def _device_inventory(inventory: Inventory, steps_by_device: dict[str, list[Step]], path: Path) -> list[str]:
    """An Ansible inventory of the devices ansible-core cannot drive with network-isolate.yml, each
    with the one command (backup, then the rendered change) it gets. Returns their names."""
    hosts: dict[str, object] = {}
    for device, steps in sorted(steps_by_device.items()):
        dev = inventory.devices[device]
        if dev.platform == "linux":
            continue
        cred = inventory.credentials[dev.credentials]
        backup = f"vtysh -c 'show running-config' > /root/bench-backup-{device}.cfg"
        command = device_command(inventory, device, steps)
        hosts[device] = {
            "ansible_host": str(dev.address),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": cred.key_file,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={cred.known_hosts} -o StrictHostKeyChecking=yes "
                                       "-o IdentitiesOnly=yes",
            "bench_command": f"{backup} && {command}",
        }
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=1), encoding="utf-8")
    return sorted(hosts)


def run_ansible_baseline(inventory: Inventory, inventory_path: Path, workdir: Path, *, bin_dir: Path,
                         plan: Plan | None = None, stop_timeout_s: float = 120.0,
                         command_timeout_s: float = 240.0, poweroff_delay_s: int = POWEROFF_DELAY_S) -> BaselineResult:
    plan = plan or build_plan(inventory, Mode.SHUTDOWN)
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = plain_env(home)
    result = BaselineResult()

    # Before "go": what a user prepares once (the exported inventory).
    hosts_file = workdir / "hosts.yml"
    export = subprocess.run([str(bin_dir / "orchestrator"), "inventory", "ansible", str(inventory_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    if export.returncode != 0:
        result.failures.append(f"inventory export failed: {export.stderr.strip()[:300]}")
        return result
    hosts_file.write_text(export.stdout, encoding="utf-8")
    contain_steps = [s for w in plan.waves if w.phase is Phase.CONTAIN for s in w.steps
                     if s.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT)]
    by_device: dict[str, list[Step]] = {}
    for s in contain_steps:
        assert s.device is not None
        by_device.setdefault(s.device, []).append(s)
    linux_segments = sorted(s.target for s in contain_steps if s.action is Action.ISOLATE_SEGMENT
                            and s.device is not None and inventory.devices[s.device].platform == "linux")
    linux_links = sorted(s.target for s in contain_steps if s.action is Action.CUT_LINK
                         and s.device is not None and inventory.devices[s.device].platform == "linux")
    devices_file = workdir / "devices.json"
    other_devices = _device_inventory(inventory, by_device, devices_file)
    extra = workdir / "isolate-vars.json"
    extra.write_text(json.dumps({"inventory_file": str(inventory_path.resolve()), "only_segments": linux_segments,
                                 "only_links": linux_links,
                                 "network_backup_dir": str(workdir / "network-backups")}), encoding="utf-8")
    ssh = LabSsh()
    verifier = Verifier(inventory, ssh)

    def ansible(argv: list[str]) -> bool:
        result.commands.append(shlex.join(argv))
        log = workdir / f"ansible-{len(result.commands):02d}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=command_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its forks and ssh clients too: the whole session
                proc.wait()
                result.failures.append(f"timed out after {command_timeout_s:.0f} s: {shlex.join(argv)} (see {log})")
                return False
        if rc != 0:
            result.failures.append(f"exit {rc}: {shlex.join(argv)} (see {log})")
        return rc == 0

    go = time.monotonic()
    try:
        t0 = time.monotonic()
        ansible([str(bin_dir / "ansible-playbook"), str(PLAYBOOKS / "network-isolate.yml"), "-e", f"@{extra}"])
        if other_devices:
            ansible([str(bin_dir / "ansible"), "all", "-i", str(devices_file), "-m", "ansible.builtin.shell",
                     "-a", "umask 077; {{ bench_command }}"])  # `-a '{...'` would be read as JSON
        t1 = time.monotonic()
        links = [s.target for s in contain_steps if s.action is Action.CUT_LINK]
        segments = [s.target for s in contain_steps if s.action is Action.ISOLATE_SEGMENT]
        result.failures += verifier.contained(links, segments)
        done = time.monotonic()
        result.contain_s = round(done - go, 3)
        result.waves.append(Timing(f"containment ({len(contain_steps)} steps)", round(t1 - t0, 3),
                                   round(done - t1, 3), result.contain_s))
        for wave in plan.waves:
            if wave.phase is not Phase.SHUTDOWN:
                continue
            hosts = [inventory.hosts[s.target] for s in wave.steps]
            t0 = time.monotonic()
            ansible([str(bin_dir / "ansible-playbook"), "-i", str(hosts_file), str(PLAYBOOKS / "stop-host.yml"),
                     "--limit", ",".join(h.name for h in hosts),
                     "-e", f"stop_host_poweroff_delay_ms={poweroff_delay_s * 1000}"])
            t1 = time.monotonic()
            result.failures += [f"{n}: still on after {stop_timeout_s:.0f} s"
                                for n in verifier.wait_off(hosts, stop_timeout_s)]
            done = time.monotonic()
            result.shutdown_s = round(done - go, 3)
            result.waves.append(Timing(f"stop-host wave {wave.index} ({len(hosts)} hosts)", round(t1 - t0, 3),
                                       round(done - t1, 3), result.shutdown_s))
    finally:
        ssh.close()
        _exit_control_masters(home / ".ansible" / "cp", env)
    return result


def _exit_control_masters(cp_dir: Path, env: dict[str, str]) -> None:
    """Ansible's default ControlPersist masters outlive the run: end them (ours, by socket)."""
    if not cp_dir.is_dir():
        return
    for sock in cp_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"], env=env,
                       capture_output=True, timeout=10, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import tempfile

    from orchestrator.inventory import load_inventory

    parser = argparse.ArgumentParser(description="Plain ansible-playbook, wave by wave, on a running lab.")
    parser.add_argument("inventory")
    args = parser.parse_args(argv)
    path = Path(args.inventory)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ansible-"))
    res = run_ansible_baseline(load_inventory(path), path, workdir, bin_dir=Path(sys.executable).parent)
    for w in res.waves:
        print(f"{w.label}: act {w.act_s:.2f} s, verify {w.verify_s:.2f} s, verified at {w.done_at_s:.2f} s")
    print(f"contain {res.contain_s} s, shutdown {res.shutdown_s} s (logs in {workdir})")
    for f in res.failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
