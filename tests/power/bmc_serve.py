"""A virtual BMC for the power tests: virtualbmc's IPMI server in front of libvirt's test driver.

Run as ``python bmc_serve.py PORT USERNAME`` with the password in ``BMC_PASSWORD``. libvirt's
``test:///default`` keeps its domains only while a connection to it is open in the process, and
virtualbmc opens one per request (so vbmcd's per-domain children lose every change): this process
holds one open for its whole life, so the domain ``test`` keeps the power state IPMI gives it.
Prints "ready" once listening. Each line "state" on stdin is answered on stdout with libvirt's own
view of the domain ("running", "shutoff", ...): the tests' judge, independent of IPMI.
"""

from __future__ import annotations

import os
import sys
import threading

import libvirt
from virtualbmc.vbmc import VirtualBMC

STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
          libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
          libvirt.VIR_DOMAIN_CRASHED: "crashed"}


def answer(held: libvirt.virConnect) -> None:
    for line in sys.stdin:
        if line.strip() == "state":
            state = held.lookupByName("test").state()[0]
            print(STATES.get(state, f"other-{state}"), flush=True)
    os._exit(0)  # stdin closed: the test is gone


def main() -> None:
    port, username = int(sys.argv[1]), sys.argv[2]
    held = libvirt.open("test:///default")
    bmc = VirtualBMC(username=username, password=os.environ["BMC_PASSWORD"], port=port, address="127.0.0.1",
                     domain_name="test", libvirt_uri="test:///default")
    threading.Thread(target=answer, args=(held,), daemon=True).start()
    print("ready", flush=True)
    bmc.listen()


if __name__ == "__main__":
    main()
