"""The VM tier's BMCs: real Redfish and IPMI endpoints in front of the VM lab's libvirt domains.

- Redfish: sushy-tools' ``sushy-emulator`` with its libvirt driver on ``qemu:///system`` (the lab's
  libvirtd), HTTPS with a test CA and basic auth, allowed to see only the one domain it fronts.
- IPMI: virtualbmc's BMC (``vm_bmc_serve.py``) for another domain.

Both listen on 127.0.0.1 only, at the ports inventories/vm-lab.yml names for its ``power_controllers:``
(checked free first: a port in use fails the tier, it never talks to someone else's BMC). The password
(random per session) goes into the file the inventory's credential references (0600, removed at the
end), the CA into its ``ca_file``. Each process is started here, its PID written to ``VM_LAB_ROOT/run/NAME.pid`` (so
scripts/vagrant-tier.sh's trap can stop it if pytest dies), and stopped by that PID. Not a test module.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator_procs import stop, wait_port

from orchestrator import storage
from orchestrator.drivers.power_controllers import PowerController, controller_from_inventory
from orchestrator.lab import vm
from orchestrator.lab.vagrant import domain_name
from orchestrator.model import Inventory

BIN = Path(sys.executable).parent
LIBVIRT_URI = "qemu:///system"
REDFISH = "vm-bmc-redfish"  # the inventory's controllers and the hosts behind them
IPMI = "vm-bmc-ipmi"


@dataclass(frozen=True)
class VmBmcs:
    redfish: PowerController  # as the product reads them from the inventory
    ipmi: PowerController
    redfish_host: str
    ipmi_host: str
    pids: dict[str, int]


def pid_file(name: str) -> Path:
    return vm.vm_lab_root() / "run" / f"{name}.pid"


def hosts_on(inventory: Inventory, controller: str) -> list[str]:
    return sorted(h.name for h in inventory.hosts.values()
                  if h.power_target is not None and h.power_target.controller == controller)


def _port_free(port: int, kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"127.0.0.1:{port} ({'udp' if kind == socket.SOCK_DGRAM else 'tcp'}) is in use "
                               f"({exc.strerror}): inventories/vm-lab.yml's BMC needs it; free it") from None


def _write_private(path: Path, data: bytes) -> None:
    storage.private_mkdir(path.parent)
    storage.atomic_write(path, data)  # 0600


def _tls(ca_file: Path, directory: Path) -> tuple[Path, Path]:
    """A test CA (into the inventory's ca_file) and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public: Any, ca: bool) -> Any:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VM tier BMC test CA")]))
             .public_key(public).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True).add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        else:
            b = (b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                 critical=False)
                 .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                critical=False))
        return b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_file.write_bytes(cert("VM tier BMC test CA", ca_key.public_key(), ca=True).public_bytes(pem))
    server_cert, server_key = directory / "server.pem", directory / "server.key"
    server_cert.write_bytes(cert("127.0.0.1", key.public_key(), ca=False).public_bytes(pem))
    _write_private(server_key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return server_cert, server_key


def _domain_uuid(machine: str) -> str:
    out = subprocess.run(["virsh", "-c", LIBVIRT_URI, "domuuid", domain_name(machine)], capture_output=True,
                         text=True, check=True, timeout=30)
    return out.stdout.strip()


def _stop(proc: subprocess.Popen[Any], name: str) -> None:
    stop(proc)  # by PID: only the process started here
    pid_file(name).unlink(missing_ok=True)


def _started(stack: ExitStack, name: str, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[Any]:
    out = stack.enter_context(log.open("w"))
    proc = subprocess.Popen(argv, stdout=kw.pop("stdout", out), stderr=out, start_new_session=True, **kw)
    stack.callback(_stop, proc, name)
    pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc


def _start_redfish(stack: ExitStack, c: PowerController, machine: str, password: str, work: Path) -> int:
    import bcrypt

    assert c.ca_file, "the inventory's Redfish BMC has a ca_file"
    cert, key = _tls(Path(c.ca_file), work)
    htpasswd = work / "htpasswd"
    _write_private(htpasswd, f"{c.username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                   .encode())
    conf = work / "emulator.conf"
    # the emulator sees only the domain it fronts (by its UUID, as Redfish names it)
    conf.write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
                    f"SUSHY_EMULATOR_ALLOWED_INSTANCES = [{_domain_uuid(machine)!r}]\n")
    proc = _started(stack, REDFISH, [
        str(BIN / "sushy-emulator"), "--config", str(conf), "-i", "127.0.0.1", "-p", str(c.effective_port),
        "--libvirt-uri", LIBVIRT_URI, "--ssl-certificate", str(cert), "--ssl-key", str(key)],
        work / "sushy-emulator.log", stdin=subprocess.DEVNULL)
    wait_port(c.effective_port, proc)
    return proc.pid


def _start_ipmi(stack: ExitStack, c: PowerController, machine: str, password: str, work: Path) -> int:
    proc = _started(stack, IPMI, [
        sys.executable, str(Path(__file__).with_name("vm_bmc_serve.py")), str(c.effective_port), c.username,
        domain_name(machine), LIBVIRT_URI], work / "vbmc.log", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "BMC_PASSWORD": password})
    assert proc.stdout is not None
    stack.callback(proc.stdout.close)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the virtual BMC did not start (exit {proc.poll()}; log {work / 'vbmc.log'})")
    return proc.pid


@contextmanager
def vm_bmcs(inventory: Inventory, work: Path) -> Iterator[VmBmcs]:
    """Both BMCs of inventories/vm-lab.yml, up for the ``with`` block, then stopped by PID."""
    spec = inventory.power_controllers
    redfish = controller_from_inventory(spec[REDFISH], inventory.credentials[spec[REDFISH].credentials])
    ipmi = controller_from_inventory(spec[IPMI], inventory.credentials[spec[IPMI].credentials])
    (redfish_host,), (ipmi_host,) = hosts_on(inventory, REDFISH), hosts_on(inventory, IPMI)
    assert redfish.address == ipmi.address == "127.0.0.1", "the VM tier's BMCs listen on loopback only"
    _port_free(redfish.effective_port, socket.SOCK_STREAM)
    _port_free(ipmi.effective_port, socket.SOCK_DGRAM)
    password = secrets.token_urlsafe(12)  # 16 characters: an IPMI 2.0 password has at most 20 bytes
    assert redfish.password_file == ipmi.password_file and redfish.password_file
    _write_private(Path(redfish.password_file), password.encode())
    with ExitStack() as stack:
        stack.callback(Path(redfish.password_file).unlink, missing_ok=True)  # last: after the BMCs stopped
        pids = {REDFISH: _start_redfish(stack, redfish, redfish_host, password, work),
                IPMI: _start_ipmi(stack, ipmi, ipmi_host, password, work)}
        yield VmBmcs(redfish, ipmi, redfish_host, ipmi_host, pids)
