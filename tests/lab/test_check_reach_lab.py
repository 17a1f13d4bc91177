"""``orchestrator inventory check-reach`` against the nspawn lab: the whole lab passes; then, in a copy of
the inventory whose credentials point at a copy of the lab's known_hosts with one host's key changed, and
with one device moved to a lab address nothing answers on, the table names exactly those two (and the
segments that device's interfaces could not be checked for) and the exit status is 1.

The lab's own known_hosts and inventory are never modified (the copies live in the test's tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import LAB_YML, orch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from orchestrator import lab
from orchestrator.lab import keys

WRONG_KEY_HOST = "ant-pacs1"  # management address 10.99.11.20
WRONG_KEY_ADDRESS = "10.99.11.20"
SILENT_DEVICE = "deu-core"
UNUSED = "10.99.1.250"  # on the lab's management bridge, and no machine has it


def test_the_whole_lab_is_reachable(lab_up_status: lab.LabStatus) -> None:
    done = orch(None, "inventory", "check-reach", LAB_YML, "--json", timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 0, [c for c in report["checks"] if not c["ok"]]
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"device", "link", "segment", "host"}
    assert report["checked"] == 3 + 2 + 5 + 15
    prompts = {c["target"]: c["detail"] for c in report["checks"] if c["kind"] == "device"}
    assert prompts["ant-core"].startswith("prompt ant-core")  # FRR's vtysh prompt, as the platform shows it


def test_a_changed_host_key_and_a_silent_device_are_named(lab_up_status: lab.LabStatus, tmp_path: Path) -> None:
    real = keys.known_hosts_path(lab.LAB_ROOT)
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    lines = real.read_text().splitlines()
    changed = [f"{WRONG_KEY_ADDRESS} {other}" if line.split()[0] == WRONG_KEY_ADDRESS else line for line in lines]
    assert changed != lines
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(changed) + "\n")
    text = LAB_YML.read_text().replace(f"known_hosts: {real}", f"known_hosts: {known}")
    assert text.count(str(known)) == 2
    text = text.replace("address: 10.99.1.3, role: core", f"address: {UNUSED}, role: core")
    text = text.replace("[health/", f"[{LAB_YML.parent / 'health'}/")  # the copy lives elsewhere
    assert UNUSED in text
    inventory = tmp_path / "lab-copy.yml"
    inventory.write_text(text)

    done = orch(None, "inventory", "check-reach", inventory, "--json", "--timeout", "3", timeout=300)
    assert done.returncode == 1, done.stderr
    failed = {(c["kind"], c["target"]): c["detail"] for c in json.loads(done.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {("host", WRONG_KEY_HOST), ("device", SILENT_DEVICE),
                           ("segment", "deu-servers"), ("segment", "deu-clinical")}, failed
    assert "host key" in failed[("host", WRONG_KEY_HOST)].lower()
    assert "unreachable" in failed[("device", SILENT_DEVICE)] or "timeout" in failed[("device", SILENT_DEVICE)]
    assert failed[("segment", "deu-servers")] == f"not checked: {SILENT_DEVICE} did not answer"
    assert real.read_text().splitlines() == lines  # the lab's own file is untouched

    human = orch(None, "inventory", "check-reach", inventory, "--timeout", "3", timeout=300)
    assert human.returncode == 1
    assert WRONG_KEY_HOST in human.stdout and SILENT_DEVICE in human.stdout
    assert "what would fail (4 of 25 checks)" in human.stdout
