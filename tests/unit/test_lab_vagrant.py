"""vagrant/Vagrantfile and the nspawn lab describe the same machines, addresses and routes.

Vagrant itself is not needed: the Vagrantfile is evaluated by plain ``ruby`` against a recording
stand-in for the ``Vagrant.configure`` DSL, and what it defined is compared with
``orchestrator.lab.topology`` (what ``lab up`` builds).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import write_lab_copy

from orchestrator.inventory import load_inventory
from orchestrator.lab import keys
from orchestrator.lab.machines import network_files
from orchestrator.lab.topology import topology
from orchestrator.lab.vagrant import network_name

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"

RECORDER = r"""
require "json"
class Rec
  attr_reader :calls
  def initialize; @calls = []; end
  def method_missing(name, *args, **kw, &blk)
    @calls << [name.to_s, args.map(&:to_s), kw.transform_keys(&:to_s)]
    if block_given?
      sub = Rec.new
      blk.call(sub)
      @calls << ["block:" + name.to_s, args.map(&:to_s), sub.calls]
    end
    name.to_s.end_with?("=") ? args[0] : self
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  def self.configure(_v)
    cfg = Rec.new
    yield cfg
    $configs << cfg.calls
  end
end
$configs = []
load ARGV[0]
puts JSON.generate($configs)
"""


def _ruby_machines(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.fail("ruby is needed to evaluate vagrant/Vagrantfile (apt-get install ruby; `make setup`)")
    result = subprocess.run(
        [ruby, "-e", RECORDER, str(VAGRANTFILE)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=VAGRANTFILE.parent,
    )
    assert result.returncode == 0, result.stderr
    configs = json.loads(result.stdout)
    machines: dict[str, dict[str, Any]] = {}
    for call in configs[0]:
        if call[0] == "block:define":
            name = call[1][0]
            nets, scripts, uploads = [], [], []
            for sub in call[2]:
                if sub[0] == "network" and sub[1] == ["private_network"]:
                    nets.append(sub[2])
                if sub[0] == "provision" and sub[2].get("type") == "shell":
                    scripts.append(sub[2]["inline"])
                if sub[0] == "provision" and sub[2].get("type") == "file":
                    uploads.append(sub[2])
            machines[name] = {"networks": nets, "provision": scripts, "uploads": uploads}
    return machines


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **os.environ,
        "ORCHESTRATOR_PYTHON": sys.executable,
        "ORCHESTRATOR_LAB_INVENTORY": str(REPO / "inventories" / "lab.yml"),
        # the Vagrantfile makes the lab's SSH keys there: never the real VM lab's
        "ORCHESTRATOR_VM_LAB_ROOT": str(tmp_path_factory.mktemp("vm-lab-root")),
    }


def test_vagrantfile_defines_the_nspawn_labs_machines(env: dict[str, str]) -> None:
    topo = topology(load_inventory(REPO / "inventories" / "lab.yml"))
    vms = _ruby_machines(env)
    assert set(vms) == {m.name for m in topo.machines}
    for m in topo.machines:
        nets = vms[m.name]["networks"]
        have = {(n["libvirt__network_name"], n["ip"], n["netmask"]) for n in nets}
        want = {(network_name(topo.site, i.network), str(i.address.ip), str(i.address.netmask)) for i in m.interfaces}
        assert have == want, m.name
        for n in nets:
            assert n["libvirt__dhcp_enabled"] is False and n["auto_config"] is False
        mgmt = [n for n in nets if "libvirt__host_ip" in n]
        assert [n["ip"] for n in mgmt] == [str(m.management_address)]
        assert mgmt[0]["libvirt__host_ip"] == str(topo.management_gateway.ip)
        assert mgmt[0]["libvirt__forward_mode"] == "none", "management: isolated, no NAT"
        for n in nets:
            if n is not mgmt[0]:
                assert n["libvirt__forward_mode"] == "veryisolated", "data networks: no host address at all"
        # the provisioner writes the very networkd files the nspawn lab writes (addresses and routes)
        script = vms[m.name]["provision"][0]
        for name, text in network_files(m, frr_routes=m.frr).items():
            assert (
                f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > /etc/systemd/network/{name}" in script
            )


def test_every_vm_gets_its_own_pinned_host_key_and_roots_authorized_key(env: dict[str, str]) -> None:
    vms = _ruby_machines(env)
    root = Path(env["ORCHESTRATOR_VM_LAB_ROOT"])
    client_pub = keys.public_key(keys.client_key_path(root))
    pinned = {line.split()[0]: line.split()[2] for line in keys.known_hosts_path(root).read_text().splitlines()}
    topo = topology(load_inventory(REPO / "inventories" / "lab.yml"))
    for m in topo.machines:
        (upload,) = vms[m.name]["uploads"]
        host_key = Path(upload["source"])
        assert host_key == keys.host_key_path(root, m.name)
        assert keys.public_key(host_key).split()[1] == pinned[str(m.management_address)]
        script = vms[m.name]["provision"][0]
        assert f"install -m 0600 {upload['destination']} /etc/ssh/ssh_host_ed25519_key" in script
        assert base64.b64encode(f"{client_pub} orchestrator-lab\n".encode()).decode() in script
        assert "PRIVATE KEY" not in script and host_key.read_text().splitlines()[1] not in script
    assert len(set(pinned.values())) == len(topo.machines)


def test_vagrantfile_follows_another_inventory(env: dict[str, str], tmp_path: Path) -> None:
    text = (REPO / "inventories" / "lab.yml").read_text().replace("10.99.21.51", "10.99.21.77")
    other = write_lab_copy(tmp_path / "other.yml", text)
    vms = _ruby_machines({**env, "ORCHESTRATOR_LAB_INVENTORY": str(other)})
    assert "10.99.21.77" in {n["ip"] for n in vms["deu-ws2"]["networks"]}
