"""The power tier: the out-of-band power drivers against real implementations of their protocols.

Nothing here is a mock: vSphere is govmomi's vcsim (vcsim/main.go, built offline by
scripts/build-vcsim.sh), Redfish is sushy-tools' emulator over libvirt's test driver, IPMI is
virtualbmc's server over libvirt's test driver (tests/power/bmc_serve.py). Each runs on 127.0.0.1 on
a free port, is started by the fixture and stopped by its PID. Nothing skips: a missing emulator fails.

Fixtures:
- ``tls``: a test CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
- ``vcsim``: ``vcsim(estate, tls=False) -> Endpoint`` (one simulator per call, stopped at the end).
- ``vsphere_judge``: ``vsphere_judge(endpoint)`` -> a pyvmomi ServiceInstance of the test's own.
- ``redfish_bmc``: an Endpoint for sushy-emulator with basic auth over HTTPS (module scope).
- ``ipmi_bmc``: an IpmiBmc (endpoint + ``libvirt_state()``, the domain's state seen by libvirt).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from power_emulators import BIN, PASSWORD, REPO, USER, Endpoint, IpmiBmc, Tls, free_port, stop, wait_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.power)


@pytest.fixture(autouse=True)
def controller_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drivers read the password through a reference: this environment variable."""
    monkeypatch.setenv("POWER_TEST_PASSWORD", PASSWORD)


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                        critical=False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("power test CA", ca_key, "power test CA", ca_key, ca=True)
    other = _cert("some other CA", other_key, "some other CA", other_key, ca=True)
    server = _cert("127.0.0.1", server_key, "power test CA", ca_key, ca=False)
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "other-ca.pem").write_bytes(other.public_bytes(pem))
    (d / "server.pem").write_bytes(server.public_bytes(pem))
    (d / "server.key").write_bytes(server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    (d / "server.key").chmod(0o600)
    return Tls(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")


# ---- vSphere: vcsim ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    done = subprocess.run(["bash", str(REPO / "scripts" / "build-vcsim.sh")], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-vcsim.sh failed (make setup installs golang-go and "
                           f"golang-github-vmware-govmomi-dev): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def vcsim(vcsim_binary: Path, tls: Tls, tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    procs: list[subprocess.Popen[str]] = []

    def start(estate: dict[str, Any], use_tls: bool = False) -> Endpoint:
        path = tmp_path / f"estate-{len(procs)}.json"
        path.write_text(json.dumps(estate))
        argv = [str(vcsim_binary), "-estate", str(path), "-username", USER, "-password-env", "VCSIM_PASSWORD"]
        if use_tls:
            argv += ["-tls-cert", str(tls.cert_file), "-tls-key", str(tls.key_file)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "VCSIM_PASSWORD": PASSWORD}, stdin=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"vcsim did not start: {proc.stderr.read() if proc.stderr else ''}")
        url = urlsplit(json.loads(line)["url"])
        assert url.hostname and url.port
        return Endpoint(url.hostname, url.port, url.scheme)

    yield start
    for proc in procs:
        stop(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def vsphere_judge(tls: Tls) -> Iterator[Callable[[Endpoint], Any]]:
    """The test's own pyvmomi session: what vcsim says, independent of the driver under test."""
    import ssl

    from pyVim.connect import Disconnect, SmartConnect

    sessions: list[Any] = []

    def connect(ep: Endpoint) -> Any:
        context = ssl.create_default_context(cafile=str(tls.ca_file)) if ep.scheme == "https" else None
        si = SmartConnect(protocol=ep.scheme, host=ep.host, port=ep.port, user=USER, pwd=PASSWORD,  # type: ignore[no-untyped-call]
                          sslContext=context)
        sessions.append(si)
        return si

    yield connect
    for si in sessions:
        Disconnect(si)  # type: ignore[no-untyped-call]


# ---- Redfish: sushy-emulator -------------------------------------------------------------------

@pytest.fixture(scope="module")
def redfish_bmc(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    import bcrypt

    d = tmp_path_factory.mktemp("sushy")
    (d / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    (d / "emulator.conf").write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n")
    port = free_port()
    log = (d / "emulator.log").open("w")
    proc = subprocess.Popen([str(BIN / "sushy-emulator"), "--config", str(d / "emulator.conf"), "-i", "127.0.0.1",
                             "-p", str(port), "--libvirt-uri", "test:///default",
                             "--ssl-certificate", str(tls.cert_file), "--ssl-key", str(tls.key_file)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield Endpoint("127.0.0.1", port, "https")
    finally:
        stop(proc)
        log.close()


# ---- IPMI: virtualbmc --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ipmi_bmc() -> Iterator[IpmiBmc]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bmc_serve.py")), str(port), USER],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "BMC_PASSWORD": PASSWORD})
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the virtual BMC did not start")
        yield IpmiBmc(Endpoint("127.0.0.1", port, "udp"), proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()
