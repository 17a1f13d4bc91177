"""Figures (not a test): a whole vcsim estate shut down in order THROUGH THE PRODUCT.

    .venv/bin/python tests/power/measure_estate.py [--vms 100 500] [--per-hypervisor 25]

For each size: vcsim (vcsim/main.go) with that many VMs on ``VMS / per-hypervisor`` ESXi hosts and one
datastore; half the VMs ``os: windows`` (stopped through vCenter only), one in ten without VMware Tools
(escalated to a hard power off); every hypervisor ``power: {controller: vc, host: ESXI, bmc: ...}``
with its own virtual BMC (virtualbmc, IPMI, tests/power/bmc_serve.py), and the storage host behind
sushy-emulator (Redfish). The inventory is generated, then ``orchestrator shutdown INVENTORY --yes``
runs as an operator would run it (its one network device cannot be logged into: containment fails
at once, which the figures leave out). Reported from the run's journal (monotonic clock): the
shutdown phase from the first stop to the last stop verified, per layer (VMs, hypervisors, storage);
and checked: every stop verified, each hypervisor started only after its VMs were verified off,
storage after every hypervisor; judged again by the script's own pyvmomi session (VMs poweredOff,
hosts in maintenance mode) and libvirt's view of each BMC's domain.

vCenter and the BMCs are reached over plain HTTP / RMCP+ on 127.0.0.1 (allow_http), as in
tests/power/measure.py: the figures are the product's and the protocols', not TLS handshakes."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parents[1]))  # emulator_procs (tests/)
sys.path.insert(0, str(Path(__file__).parent))  # power_emulators
from power_emulators import BIN, PASSWORD, REPO, USER, free_port, stop, wait_port

from orchestrator.journal import read_journal


def estate(vms: int, per_hypervisor: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    hypervisors = [f"esx{i + 1:02d}" for i in range(max(1, -(-vms // per_hypervisor)))]
    spec = [{"name": f"VM-{i:04d}", "host": hypervisors[i // per_hypervisor], "tools": i % 10 != 9,
             "host_name": f"vm-{i:04d}", "windows": i % 2 == 1} for i in range(vms)]
    return {"hosts": hypervisors, "datastores": ["san1-ds"],
            "vms": [{"name": v["name"], "host": v["host"], "tools": v["tools"]} for v in spec]}, spec


def inventory(vc_port: int, bmc_ports: dict[str, int], redfish_port: int, vms: list[dict[str, Any]]) -> str:
    lines = [
        "version: 1", "site: {name: measure-estate}", "management: {segment: mgmt}", "campuses: {antwerp: {}}",
        "segments:", "  mgmt: {subnet: 127.99.0.0/16, zone: management}",
        "  servers: {campus: antwerp, subnet: 127.10.0.0/16, zone: servers, gateway: core}",
        "devices:", "  core: {campus: antwerp, platform: linux, address: 127.99.252.2, role: core, credentials: ssh}",
        "power_controllers:",
        f"  vc: {{type: vsphere, address: 'http://127.0.0.1:{vc_port}', allow_http: true, credentials: power}}",
        f"  bmc-san1: {{type: redfish, address: 'http://127.0.0.1:{redfish_port}', allow_http: true,"
        " credentials: power}",
    ]
    lines += [f"  bmc-{h}: {{type: ipmi, address: 127.0.0.1, port: {p}, credentials: power}}"
              for h, p in bmc_ports.items()]
    lines += ["hosts:",
              "  san1: {segment: servers, address: 127.10.250.1, management_address: 127.99.250.1, kind: storage,"
              " power: {controller: bmc-san1}, credentials: ssh}"]
    for i, h in enumerate(bmc_ports):
        lines.append(f"  {h}: {{segment: servers, address: 127.10.251.{i + 1}, management_address: 127.99.251.{i + 1},"
                     f" kind: hypervisor, stored_on: san1, power: {{controller: vc, host: {h}, bmc: bmc-{h}}},"
                     " credentials: ssh}")
    for i, v in enumerate(vms):
        a, b = divmod(i, 250)
        os_key = " os: windows," if v["windows"] else ""
        lines.append(f"  {v['host_name']}: {{segment: servers, address: 127.10.{a}.{b + 1}, management_address: "
                     f"127.99.{a}.{b + 1},{os_key} power: {{controller: vc, vm: {v['name']}}}, runs_on: {v['host']},"
                     " stored_on: san1, credentials: ssh}")
    lines += ["credentials:", "  ssh: {username: root, key_file: keys/none}",
              f"  power: {{username: {USER}, password_env: POWER_TEST_PASSWORD}}"]
    return "\n".join(lines) + "\n"


def judge(port: int) -> tuple[dict[str, int], dict[str, bool]]:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    si = SmartConnect(protocol="http", host="127.0.0.1", port=port, user=USER, pwd=PASSWORD,  # type: ignore[no-untyped-call]
                      sslContext=ssl.create_default_context())
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine, vim.HostSystem], True)
        states: dict[str, int] = {}
        maintenance: dict[str, bool] = {}
        for o in view.view:
            if isinstance(o, vim.VirtualMachine):
                states[str(o.runtime.powerState)] = states.get(str(o.runtime.powerState), 0) + 1
            else:
                maintenance[o.name] = bool(o.runtime.inMaintenanceMode)
        view.Destroy()
        return states, maintenance
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]


def layers(recs: list[dict[str, Any]], spec: list[dict[str, Any]], hypervisors: list[str]) -> dict[str, Any]:
    started = {r["step_id"]: r for r in recs if r["type"] == "step-started" and r["step_id"].startswith("stop-host:")}
    finished = {r["step_id"]: r for r in recs if r["type"] == "step-finished" and r["step_id"].startswith("stop-host:")}
    vm_ids = [f"stop-host:{v['host_name']}" for v in spec]
    hv_ids = [f"stop-host:{h}" for h in hypervisors]
    t0 = min(r["mono"] for r in started.values())

    def span(ids: list[str]) -> str:
        return (f"{min(started[i]['mono'] for i in ids) - t0:.1f}-"
                f"{max(finished[i]['mono'] for i in ids) - t0:.1f} s")

    order_ok = all(finished[f"stop-host:{v['host_name']}"]["seq"] < started[f"stop-host:{v['host']}"]["seq"]
                   for v in spec)
    order_ok = order_ok and all(finished[h]["seq"] < started["stop-host:san1"]["seq"] for h in hv_ids)
    statuses: dict[str, int] = {}
    for r in finished.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    escalations: dict[str, int] = {}
    for i in vm_ids:
        how = str(finished[i]["evidence"].get("after", {}).get("escalation", "?"))
        escalations[how] = escalations.get(how, 0) + 1
    return {"shutdown_phase_s": round(max(r["mono"] for r in finished.values()) - t0, 1),
            "vm_layer": span(vm_ids), "hypervisor_layer": span(hv_ids), "storage_layer": span(["stop-host:san1"]),
            "order_ok": order_ok, "statuses": statuses, "vm_escalations": escalations}


def measure(vms: int, per_hypervisor: int, binary: str, work: Path) -> dict[str, Any]:
    description, spec = estate(vms, per_hypervisor)
    (work / "estate.json").write_text(json.dumps(description))
    procs: list[subprocess.Popen[Any]] = []
    env = {**os.environ, "VCSIM_PASSWORD": PASSWORD, "BMC_PASSWORD": PASSWORD, "POWER_TEST_PASSWORD": PASSWORD}
    try:
        vc = subprocess.Popen([binary, "-estate", str(work / "estate.json"), "-username", USER, "-password-env",
                               "VCSIM_PASSWORD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        procs.append(vc)
        assert vc.stdout is not None
        vc_port = urlsplit(json.loads(vc.stdout.readline())["url"]).port
        assert vc_port
        bmc_ports: dict[str, int] = {}
        bmcs: dict[str, subprocess.Popen[str]] = {}
        for h in description["hosts"]:
            port = free_port()
            p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bmc_serve.py")), str(port), USER],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 env=env)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            bmc_ports[h], bmcs[h] = port, p
        rf_port = free_port()
        import bcrypt

        (work / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
        (work / "sushy.conf").write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(work / 'htpasswd')!r}\n")
        rf = subprocess.Popen([str(BIN / "sushy-emulator"), "--config", str(work / "sushy.conf"), "-i", "127.0.0.1",
                               "-p", str(rf_port), "--libvirt-uri", "test:///default"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(rf)
        wait_port(rf_port, rf)
        inv = work / f"estate-{vms}.yml"
        inv.write_text(inventory(vc_port, bmc_ports, rf_port, spec))
        inv.chmod(0o600)
        state = work / f"state-{vms}"
        t = time.monotonic()
        done = subprocess.run([str(REPO / ".venv/bin/orchestrator"), "shutdown", str(inv), "--yes"], env={
            **env, "ORCHESTRATOR_STATE_DIR": str(state)}, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=3600, check=False)
        wall = time.monotonic() - t
        if not (state / "runs").is_dir():
            raise SystemExit(f"the shutdown did not run (exit {done.returncode}): {done.stderr[-3000:]}")
        (run_dir,) = (state / "runs").iterdir()
        recs = read_journal(run_dir / "journal.jsonl")
        figures = {"vms": vms, "hypervisors": len(description["hosts"]), "wall_s": round(wall, 1),
                   "exit": done.returncode, **layers(recs, spec, description["hosts"])}
        states, maintenance = judge(vc_port)
        figures["judge_vms"] = states
        figures["judge_hosts_in_maintenance"] = sum(maintenance.values())
        bmc_states: dict[str, int] = {}
        for p in bmcs.values():
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("state\n")
            p.stdin.flush()
            s = p.stdout.readline().strip()
            bmc_states[s] = bmc_states.get(s, 0) + 1
        figures["judge_bmcs"] = bmc_states
        return figures
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            stop(p)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--per-hypervisor", type=int, default=25)
    args = parser.parse_args()
    binary = subprocess.run(["bash", str(REPO / "scripts/build-vcsim.sh")], capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    for vms in args.vms:
        work = Path(tempfile.mkdtemp(prefix=f"measure-estate-{vms}-"))
        print(json.dumps(measure(vms, args.per_hypervisor, binary, work)), flush=True)


if __name__ == "__main__":
    main()
