"""Figures for the power drivers against their emulators (not a test): per-call latencies and a
parallel power-off of a vcsim estate. Run: .venv/bin/python tests/power/measure.py [--vms 100 500]

Emulators on 127.0.0.1 over plain HTTP (allow_http) so that the figures are the drivers' and the
protocols', not TLS handshakes (sessions are reused anyway)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parents[1]))  # emulator_procs (tests/)
sys.path.insert(0, str(Path(__file__).parent))  # power_emulators
from power_emulators import BIN, PASSWORD, REPO, USER, free_port, stop, wait_port

from orchestrator.drivers.ipmi import IpmiLanPower
from orchestrator.drivers.power_controllers import GracefulRefusedError, PowerController
from orchestrator.drivers.redfish import RedfishPower
from orchestrator.drivers.vsphere import VSpherePower


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms (n={len(samples)})"


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def vcsim(binary: str, estate: dict[str, object], work: Path) -> tuple[subprocess.Popen[str], int, float]:
    path = work / f"estate-{len(estate['vms'])}.json"  # type: ignore[arg-type]
    path.write_text(json.dumps(estate))
    t = time.perf_counter()
    proc = subprocess.Popen([binary, "-estate", str(path), "-username", USER, "-password-env", "VCSIM_PASSWORD"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "VCSIM_PASSWORD": PASSWORD})
    assert proc.stdout is not None
    port = urlsplit(json.loads(proc.stdout.readline())["url"]).port
    assert port
    return proc, port, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    os.environ["POWER_TEST_PASSWORD"] = PASSWORD
    work = Path(tempfile.mkdtemp(prefix="power-measure-"))
    binary = subprocess.run(["bash", str(REPO / "scripts/build-vcsim.sh")], capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    common = {"username": USER, "password_env": "POWER_TEST_PASSWORD", "operation_timeout_s": 60.0}

    # vSphere: one VM cycled hard off / on; state reads
    proc, port, _ = vcsim(binary, {"hosts": ["esx1"], "vms": [{"name": "vm1", "host": "esx1", "tools": True}]}, work)
    try:
        with VSpherePower(PowerController(name="vc", type="vsphere", address="127.0.0.1", port=port, scheme="http",
                                          allow_http=True, **common)) as vs:
            vs.state("vm1")  # login and name cache
            print("vsphere state:   ", ms(timed(lambda: vs.state("vm1"), args.n)))
            offs, ons = [], []
            for _ in range(args.n):
                offs += timed(lambda: vs.power_off("vm1", graceful=False), 1)
                ons += timed(lambda: vs.power_on("vm1"), 1)
            print("vsphere hard off:", ms(offs))
            print("vsphere on:      ", ms(ons))
    finally:
        stop(proc)

    # Redfish: sushy-emulator, libvirt test driver
    port = free_port()
    conf = work / "sushy.conf"
    import bcrypt

    (work / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    conf.write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(work / 'htpasswd')!r}\n")
    proc2 = subprocess.Popen([str(BIN / "sushy-emulator"), "--config", str(conf), "-i", "127.0.0.1", "-p", str(port),
                              "--libvirt-uri", "test:///default"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc2)
        with RedfishPower(PowerController(name="rf", type="redfish", address="127.0.0.1", port=port, scheme="http",
                                          allow_http=True, **common)) as rf:
            rf.power_on("")
            print("redfish state:   ", ms(timed(lambda: rf.state(""), args.n)))
            offs, ons = [], []
            for _ in range(args.n):
                offs += timed(lambda: rf.power_off("", graceful=False), 1)
                ons += timed(lambda: rf.power_on(""), 1)
            print("redfish ForceOff:", ms(offs))
            print("redfish On:      ", ms(ons))
    finally:
        stop(proc2)

    # IPMI: virtualbmc over the libvirt test driver
    port = free_port()
    proc3 = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bmc_serve.py")), str(port), USER],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "BMC_PASSWORD": PASSWORD})
    try:
        assert proc3.stdout is not None
        proc3.stdout.readline()
        ip = IpmiLanPower(PowerController(name="bmc", type="ipmi", address="127.0.0.1", port=port,
                                          **common))
        ip.power_on("srv")
        print("ipmi state:      ", ms(timed(lambda: ip.state("srv"), args.n)))
        offs, ons = [], []
        for _ in range(args.n):
            offs += timed(lambda: ip.power_off("srv", graceful=False), 1)
            ons += timed(lambda: ip.power_on("srv"), 1)
        print("ipmi off:        ", ms(offs))
        print("ipmi on:         ", ms(ons))
    finally:
        if proc3.stdin:
            proc3.stdin.close()
        stop(proc3)

    # a vcsim estate: every VM off, graceful where Tools run (4 in 5), else refused and hard
    for count in args.vms:
        hosts = [f"esx{h}" for h in range(1, max(2, count // 25) + 1)]
        vms = [{"name": f"vm{i:04d}", "host": hosts[i % len(hosts)], "tools": i % 5 != 0} for i in range(count)]
        estate: dict[str, Any] = {"hosts": hosts, "vms": vms}
        proc, port, boot = vcsim(binary, estate, work)
        try:
            for workers in (1, 16):
                if workers == 16:  # power everything back on for the second round
                    again = VSpherePower(PowerController(name="vc", type="vsphere", address="127.0.0.1", port=port,
                                                         scheme="http", allow_http=True, **common))
                    with again, ThreadPoolExecutor(16) as pool:
                        list(pool.map(again.power_on, [v["name"] for v in estate["vms"]]))
                t = time.perf_counter()
                with VSpherePower(PowerController(name="vc", type="vsphere", address="127.0.0.1", port=port,
                                                  scheme="http", allow_http=True, **common)) as vs:

                    def off(name: str, vs: VSpherePower = vs) -> None:
                        try:
                            vs.power_off(name, graceful=True)
                        except GracefulRefusedError:
                            vs.power_off(name, graceful=False)

                    with ThreadPoolExecutor(workers) as pool:
                        list(pool.map(off, [v["name"] for v in estate["vms"]]))
                    assert all(vs.state(v["name"]) == "stopped" for v in estate["vms"])
                print(f"vcsim {count} VMs on {len(hosts)} hosts (started in {boot:.1f} s): all off with "
                      f"{workers} worker(s) in {time.perf_counter() - t:.2f} s")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
