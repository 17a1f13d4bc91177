"""The VM tier's IPMI BMC: virtualbmc's server in front of one VM lab domain (libvirt qemu:///system).

Run as ``python vm_bmc_serve.py PORT USERNAME DOMAIN LIBVIRT_URI`` with the password in
``BMC_PASSWORD``; listens on 127.0.0.1 only and prints "ready" once it does. Started and stopped (by
PID) by tests/vagrant/vm_bmcs.py. virtualbmc's own daemon (vbmcd) is not used: it keeps its
configuration in the home directory and forks a child per BMC, which could not be stopped by one PID.
"""

from __future__ import annotations

import os
import sys

from virtualbmc.vbmc import VirtualBMC


def main() -> None:
    port, username, domain, uri = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    bmc = VirtualBMC(username=username, password=os.environ["BMC_PASSWORD"], port=port, address="127.0.0.1",
                     domain_name=domain, libvirt_uri=uri)
    print("ready", flush=True)
    bmc.listen()


if __name__ == "__main__":
    main()
