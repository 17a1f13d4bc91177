"""Lab machines as systemd-nspawn containers: an overlay each, booted by a launcher in its own cgroup.

Per machine, under ``LAB_ROOT/machines/NAME/``: ``upper/`` and ``work/`` (the overlay's own layers:
its state survives power off and on), ``root/`` (the mounted overlay), ``launch.sh`` and
``console.log``. The launcher joins ``/sys/fs/cgroup/{systemd,unified}/orchestrator-lab/NAME`` before
it starts nspawn (without systemd on the host, nspawn nests its cgroups under its caller's), plugs
the container's veths into the lab bridges on every boot, and boots again when the container asks
for a reboot (nspawn exits 133). Power: graceful off is SIGRTMIN+4 to the container's PID 1; hard off
is ``cgroup.kill`` of the machine's cgroup; "running" means the cgroup holds a process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab import keys, statefile
from orchestrator.lab.image import DEVICE_USER
from orchestrator.lab.topology import MGMT_IF, Machine

CGROUP_NAME = "orchestrator-lab"
CGROUP_FS = Path("/sys/fs/cgroup")


# --------------------------------------------------------------------------------------------
# cgroups
# --------------------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """The hierarchies a machine's cgroup is made in: the named systemd one and cgroup v2."""
    if (CGROUP_FS / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_FS]
    return [p for p in (CGROUP_FS / "systemd", CGROUP_FS / "unified") if p.is_dir()]


def _v2_root() -> Path:
    if (CGROUP_FS / "cgroup.controllers").exists():
        return CGROUP_FS
    return CGROUP_FS / "unified"


def cgroup_dir(name: str, hierarchy: Path | None = None) -> Path:
    return (hierarchy or _v2_root()) / CGROUP_NAME / name


def pids(name: str) -> list[int]:
    """Every process in the machine's cgroup tree (launcher, nspawn, the container's processes)."""
    found: list[int] = []
    root = cgroup_dir(name)
    if not root.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            try:
                text = Path(dirpath, "cgroup.procs").read_text()
            except OSError:
                continue
            found.extend(int(p) for p in text.split())
    return found


def leader_pid(name: str) -> int | None:
    """The container's PID 1 as the host sees it, while it runs."""
    for pid in pids(name):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                fields = line.split()[1:]
                if len(fields) > 1 and fields[-1] == "1":
                    return pid
    return None


def is_running(name: str) -> bool:
    """Any process left in the machine's cgroup tree: cgroup v2 keeps that answer in one file
    (``populated``), so a verifier polling many machines does not walk every tree each time."""
    try:
        events = (cgroup_dir(name) / "cgroup.events").read_text()
    except OSError:
        return bool(pids(name))  # no cgroup.events (gone, or not cgroup v2): look at the processes
    return "populated 1" in events.splitlines()


def _remove_cgroup_tree(top: Path, keep_top: bool) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
        if keep_top and Path(dirpath) == top:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def kill(name: str, timeout: float = 10.0) -> bool:
    """Hard power off: kill every process of the machine. True when its cgroup is empty."""
    v2 = cgroup_dir(name)
    deadline = time.monotonic() + timeout
    while True:
        if not pids(name):
            break
        if (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (v2 / "cgroup.kill").write_text("1")
        else:  # kernels before 5.14: kill the pids we see, repeatedly
            for pid in pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    for h in cgroup_hierarchies():
        _remove_cgroup_tree(cgroup_dir(name, h), keep_top=True)
    shutil.rmtree(Path("/run/systemd/nspawn/propagate") / name, ignore_errors=True)
    return True


def request_poweroff(name: str) -> bool:
    """Graceful power off: SIGRTMIN+4 to the container's systemd. False if it does not run."""
    pid = leader_pid(name)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGRTMIN + 4)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# the machine's files
# --------------------------------------------------------------------------------------------


def machine_dir(lab_root: Path, name: str) -> Path:
    return lab_root / "machines" / name


def _write(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def _image_ids(image: Path, user: str, group: str) -> tuple[int, int]:
    uid = gid = None
    for line in (image / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            uid = int(parts[2])
    for line in (image / "etc/group").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == group:
            gid = int(parts[2])
    if uid is None or gid is None:
        raise LabError(
            f"the lab image has no user {user} or group {group}",
            target="lab image",
            hint="rebuild the image (remove the image cache directory)",
        )
    return uid, gid


def network_files(m: Machine, frr_routes: bool) -> dict[str, str]:
    files: dict[str, str] = {}
    for n, iface in enumerate(m.interfaces):
        lines = [
            "[Match]",
            f"Name={iface.name}",
            "",
            "[Link]",
            "RequiredForOnline=no",
            "",
            "[Network]",
            f"Address={iface.address}",
            "LinkLocalAddressing=no",
            "IPv6AcceptRA=no",
            "ConfigureWithoutCarrier=yes",
            "",
        ]
        if not frr_routes:
            for route in iface.routes:
                lines += ["[Route]", f"Destination={route.destination}", f"Gateway={route.via}", ""]
        files[f"{10 + n}-{iface.name}.network"] = "\n".join(lines)
    return files


def frr_config(m: Machine) -> str:
    lines = [
        "frr defaults traditional",
        f"hostname {m.name}",
        "log syslog informational",
        "service integrated-vtysh-config",
        "!",
    ]
    for iface in m.interfaces:
        if iface.management:
            continue
        lines += [f"interface {iface.name}", f" description {iface.network}", "!"]
    for route in m.routes:
        lines.append(f"ip route {route.destination} {route.via}")
    lines += ["!", "line vty", "!", ""]
    return "\n".join(lines)


GUARD_NFT = """#!/usr/sbin/nft -f
# The lab's own guard (not the isolation driver's `orchestrator` table): the management interface
# is never a path between networks.
table inet labguard
delete table inet labguard
table inet labguard {
    chain forward {
        type filter hook forward priority -10; policy accept;
        iifname "%(mgmt)s" drop
        oifname "%(mgmt)s" drop
    }
}
"""


def stub_unit(name: str, port: int) -> str:
    return (
        "[Unit]\n"
        f"Description=Lab stand-in for {name} (HTTP on port {port})\n"
        "After=network.target\n\n"
        "[Service]\n"
        f"ExecStart=/usr/bin/python3 -m http.server {port} --directory /srv/{name}\n"
        "Restart=on-failure\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def prepare(lab_root: Path, image: Path, m: Machine) -> None:
    """Write the machine's own files into its overlay's upper layer, once."""
    d = machine_dir(lab_root, m.name)
    upper = d / "upper"
    if (d / ".prepared").exists():
        return
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    _write(upper / "etc/hostname", m.name + "\n")
    _write(upper / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {m.name}\n")
    _write(upper / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    for fname, text in network_files(m, frr_routes=m.frr).items():
        _write(upper / "etc/systemd/network" / fname, text)
    sysctl = [
        "net.ipv6.conf.all.disable_ipv6 = 1",
        "net.ipv6.conf.default.disable_ipv6 = 1",
        f"net.ipv4.ip_forward = {1 if m.forwarding else 0}",
        "",
    ]
    _write(upper / "etc/sysctl.d/90-lab.conf", "\n".join(sysctl))
    hostkey = keys.host_key_path(lab_root, m.name)
    _write(upper / "etc/ssh" / hostkey.name, hostkey.read_text(), 0o600)
    _write(upper / "etc/ssh" / (hostkey.name + ".pub"), hostkey.with_name(hostkey.name + ".pub").read_text())
    client_pub = keys.public_key(keys.client_key_path(lab_root)) + " orchestrator-lab\n"
    (upper / "root/.ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(upper / "root/.ssh/authorized_keys", client_pub, 0o600)
    wants = "etc/systemd/system/multi-user.target.wants"
    if m.kind == "device":
        _write(upper / "etc/nftables.conf", GUARD_NFT % {"mgmt": MGMT_IF}, 0o755)
        _link(
            upper / "etc/systemd/system/sysinit.target.wants/nftables.service", "/lib/systemd/system/nftables.service"
        )
        _write(
            upper / "etc/systemd/networkd.conf.d/10-lab.conf",
            "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
        )
    if m.frr:
        uid, gid = _image_ids(image, DEVICE_USER, "frr")
        _write(upper / "etc/frr/frr.conf", frr_config(m), 0o640, (uid, gid))
        _link(upper / wants / "frr.service", "/lib/systemd/system/frr.service")
    if m.device_user is not None:
        if m.device_user != DEVICE_USER or not m.frr:
            raise LabError(
                f"the lab can log in as {m.device_user!r} only as root or as {DEVICE_USER!r} on an FRR router",
                target=m.name,
                hint=f"use a credential with username root, or {DEVICE_USER} for a non-linux platform",
            )
        uid, gid = _image_ids(image, DEVICE_USER, "frr")
        home = upper / "home" / DEVICE_USER
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        os.chown(home, uid, gid)
        os.chown(home / ".ssh", uid, gid)
        os.chmod(home / ".ssh", 0o700)
        _write(home / ".ssh/authorized_keys", client_pub, 0o600, (uid, gid))
    for svc, port in m.stub_services.items():
        _write(upper / "etc/systemd/system" / f"{svc}.service", stub_unit(svc, port))
        _link(upper / wants / f"{svc}.service", f"/etc/systemd/system/{svc}.service")
        _write(upper / "srv" / svc / "index.html", f"{svc} on {m.name}: ok\n")
    (d / ".prepared").write_text("")


def is_mounted(path: Path) -> bool:
    target = str(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] == target:
            return True
    return False


def mount(lab_root: Path, image: Path, name: str) -> None:
    d = machine_dir(lab_root, name)
    if is_mounted(d / "root"):
        return
    opts = f"lowerdir={image},upperdir={d / 'upper'},workdir={d / 'work'}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(d / "root")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise LabError(
            f"cannot mount its overlay: {result.stderr.strip()}",
            target=name,
            hint="the lab needs root and overlayfs; run `orchestrator lab down` to clean up",
        )


def unmount(lab_root: Path, name: str) -> bool:
    root = machine_dir(lab_root, name) / "root"
    if not is_mounted(root):
        return True
    if subprocess.run(["umount", str(root)], capture_output=True, check=False).returncode == 0:
        return True
    return subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False).returncode == 0


def launcher_script(lab_root: Path, m: Machine) -> str:
    d = machine_dir(lab_root, m.name)
    cgroups = " ".join(str(cgroup_dir(m.name, h)) for h in cgroup_hierarchies())
    veths = " ".join(f"--network-veth-extra={i.host_name}:{i.name}" for i in m.interfaces)
    machine_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{m.name}.orchestrator-lab").hex
    attach = []
    for i in m.interfaces:
        attach.append(f"attach {i.host_name} {i.bridge} {'on' if i.management else 'off'}")
    return f"""#!/bin/sh
# Launcher of lab machine {m.name}, written by orchestrator.lab. Boots it; boots it again on reboot.
for cg in {cgroups}; do echo $$ > "$cg/cgroup.procs" || exit 1; done
attach() {{  # HOST_END BRIDGE ISOLATED
    n=0
    while [ ! -e "/sys/class/net/$1" ]; do
        n=$((n + 1)); [ $n -gt 600 ] && return 1
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6" 2>/dev/null
    ip link set "$1" master "$2" && bridge link set dev "$1" isolated "$3" && ip link set "$1" up
}}
while :; do
    rm -rf /run/systemd/nspawn/propagate/{m.name}
    # host ends left over from a container that was killed (the kernel removes them asynchronously)
    for end in {" ".join(i.host_name for i in m.interfaces)}; do
        [ -e "/sys/class/net/$end" ] && ip link del "$end" 2>/dev/null
    done
    systemd-nspawn -D {d / "root"} -M {m.name} --uuid={machine_uuid} -b --register=no --keep-unit \\
        --private-network {veths} \\
        --console=read-only --link-journal=no --resolv-conf=off --timezone=off \\
        >> {d / "console.log"} 2>&1 < /dev/null &
    pid=$!
    {"; ".join(attach)}
    wait $pid
    rc=$?
    echo $rc > {d / "exitcode"}
    [ $rc = 133 ] || break
done
"""


def start(lab_root: Path, image: Path, m: Machine) -> None:
    """Write the machine's launcher and boot it (its overlay as it was)."""
    if is_running(m.name):
        return
    _write(machine_dir(lab_root, m.name) / "veths", "".join(i.host_name + "\n" for i in m.interfaces))
    _write(machine_dir(lab_root, m.name) / "launch.sh", launcher_script(lab_root, m), 0o755)
    relaunch(lab_root, image, m.name)


def relaunch(lab_root: Path, image: Path, name: str, timeout: float = 10.0) -> None:
    """Boot a machine again with the launcher written at lab up. Returns once the launcher runs.

    Serialised per machine: two callers (lab up, a power driver) never start it twice.
    """
    d = machine_dir(lab_root, name)
    script = d / "launch.sh"
    if not script.exists():
        raise LabError("the machine has no launcher", target=name, hint="run `orchestrator lab up` first")
    with statefile.locked(d / "power.lock"):
        if is_running(name):
            return
        remove_veths(lab_root, name)
        mount(lab_root, image, name)
        for h in cgroup_hierarchies():
            cg = cgroup_dir(name, h)
            _remove_cgroup_tree(cg, keep_top=True)
            cg.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["setsid", "-f", "/bin/sh", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise LabError("its launcher did not start", target=name, hint=f"see {d / 'console.log'}")
        deadline = time.monotonic() + timeout
        while not is_running(name):  # the launcher has joined the machine's cgroup
            if time.monotonic() > deadline:
                raise LabError(
                    "its launcher did not join the machine's cgroup", target=name, hint=f"see {d / 'console.log'}"
                )
            time.sleep(0.01)


def remove_veths(lab_root: Path, name: str, timeout: float = 5.0) -> list[str]:
    """Delete the root-namespace ends of a stopped machine's veths; the names of those that stay."""
    listing = machine_dir(lab_root, name) / "veths"
    ends = listing.read_text().split() if listing.exists() else []
    deadline = time.monotonic() + timeout
    while True:
        present = [e for e in ends if Path("/sys/class/net", e).exists()]
        for end in present:
            subprocess.run(["ip", "link", "del", end], capture_output=True, check=False)
        present = [e for e in ends if Path("/sys/class/net", e).exists()]
        if not present or time.monotonic() > deadline:
            return present
        time.sleep(0.05)


def remove(lab_root: Path, name: str) -> list[str]:
    """Power off hard and remove every trace of the machine. Returns what could not be removed."""
    left: list[str] = []
    if not kill(name):
        left.append(f"processes of {name}")
    left += [f"link {end}" for end in remove_veths(lab_root, name)]
    if not unmount(lab_root, name):
        left.append(f"mount {machine_dir(lab_root, name) / 'root'}")
    for h in cgroup_hierarchies():
        cg = cgroup_dir(name, h)
        _remove_cgroup_tree(cg, keep_top=False)
        if cg.exists():
            left.append(f"cgroup {cg}")
    if not left:
        shutil.rmtree(machine_dir(lab_root, name), ignore_errors=True)
    return left


def remove_cgroup_parents() -> None:
    for h in cgroup_hierarchies():
        with contextlib.suppress(OSError):
            os.rmdir(h / CGROUP_NAME)


def known_machines(lab_root: Path) -> list[str]:
    """Machines with traces on this host: directories, cgroups (for cleaning up without state)."""
    names: set[str] = set()
    mdir = lab_root / "machines"
    if mdir.is_dir():
        names.update(p.name for p in mdir.iterdir() if p.is_dir())
    for h in cgroup_hierarchies():
        top = h / CGROUP_NAME
        if top.is_dir():
            names.update(p.name for p in top.iterdir() if p.is_dir())
    return sorted(names)
