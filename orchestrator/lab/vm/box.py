"""The box the VMs boot: built once per recipe (``vagrant/build-box.sh``), cached as
``CACHE/vagrant-box-HASH.box``, added to Vagrant and uploaded by vagrant-libvirt into the lab's
libvirt pool (once per box); and forgotten again on request (the first-time path, for CI)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab import statefile
from orchestrator.lab.image import cache_dir, mirror
from orchestrator.lab.vagrant import domain_name
from orchestrator.lab.vm import libvirt
from orchestrator.lab.vm.host import BOX_NAME, POOL, SYSTEM_UMASK, run, state, tail, vagrant_dir, virsh, vm_lab_root


@dataclass(frozen=True)
class Box:
    path: Path
    recipe_hash: str
    built: bool  # built by this call (False: from the cache)
    seconds: float


def box_recipe_hash() -> str:
    """A hash of the box recipe (the build script) and the mirror it installs from."""
    recipe = (vagrant_dir() / "build-box.sh").read_bytes()
    return hashlib.sha256(recipe + b"\n" + mirror().encode()).hexdigest()[:16]


def box_path() -> Path:
    return cache_dir() / f"vagrant-box-{box_recipe_hash()}.box"


def _box_lock() -> Path:
    return cache_dir() / "vagrant-box.lock"


def ensure_box() -> Box:
    """The cached box for the current recipe, built first when missing (about 3-4 minutes)."""
    started = time.monotonic()
    final = box_path()
    with statefile.locked(_box_lock()):
        if final.exists():
            return Box(final, box_recipe_hash(), built=False, seconds=0.0)
        log = final.with_suffix(".log")
        with log.open("wb") as out:
            result = subprocess.run(
                ["bash", str(vagrant_dir() / "build-box.sh"), str(final), mirror()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                umask=SYSTEM_UMASK,
            )
        if result.returncode != 0 or not final.exists():
            raise LabError(
                f"building the box failed (exit {result.returncode}; log: {log})",
                target="vagrant box",
                hint="build-box.sh needs root, debootstrap, qemu-utils, extlinux and a reachable Debian mirror",
            )
        for old in cache_dir().glob("vagrant-box-*.box"):
            if old != final:
                old.unlink(missing_ok=True)
    return Box(final, box_recipe_hash(), built=True, seconds=time.monotonic() - started)


def _box_volume_prefix() -> str:
    return BOX_NAME.replace("/", "-VAGRANTSLASH-")


def box_volume_in_pool() -> bool:
    """Whether vagrant-libvirt has uploaded a box's image into the pool (else ``vagrant up`` does)."""
    return any(line.split() and line.split()[0].startswith(_box_volume_prefix())
               for line in virsh("vol-list", POOL).stdout.splitlines())


def ensure_box_added(box: Box, env: Mapping[str, str], machines: list[str]) -> None:
    """``vagrant box add`` the box unless this recipe's box is already there. A replaced box also
    drops the image vagrant-libvirt uploaded into the pool (it would otherwise reuse the old one).
    While VMs of the lab exist (their disks are overlays of the old image) the old box stays."""
    marker = Path(env["VAGRANT_HOME"]) / "orchestrator-box"
    if marker.exists() and marker.read_text().strip() == box.recipe_hash:
        return
    if marker.exists() and any(virsh("dominfo", domain_name(m)).returncode == 0 for m in machines):
        return
    for volume in virsh("vol-list", POOL).stdout.split("\n"):
        fields = volume.split()
        if fields and fields[0].startswith(_box_volume_prefix()):
            virsh("vol-delete", fields[0], "--pool", POOL)
    result = run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box.path)], timeout=600, env=env)
    if result.returncode != 0:
        raise LabError(
            f"`vagrant box add` failed: {tail(result.stdout + result.stderr)}",
            target="vagrant box",
            hint=f"remove {box.path} to rebuild it",
        )
    marker.write_text(box.recipe_hash + "\n")


def forget_box(*, built_box: bool = True) -> list[str]:
    """Forget every cached trace of the box so that the next ``lab up`` takes the first-time path
    (CI machines are not fresh; the README's users are): the volumes of the lab's libvirt pool (the
    box's image, uploaded once per box), Vagrant's copy (its home under the VM lab root) and, with
    ``built_box``, the built box itself. Refused while a VM lab is up. Returns what was removed."""
    root = vm_lab_root()
    lab = state()
    with lab.locked():
        if lab.path.exists():
            raise LabError("a VM lab is up", target="vm lab",
                           hint="run `orchestrator lab down --provider vagrant` first")
        removed = _forget_pool_volumes()
        if (root / "vagrant.d").exists():
            shutil.rmtree(root / "vagrant.d")
            removed.append(str(root / "vagrant.d"))
    if built_box:
        with statefile.locked(_box_lock()):
            for box in sorted(cache_dir().glob("vagrant-box-*.box")):
                box.unlink()
                removed.append(str(box))
    return removed


def _forget_pool_volumes() -> list[str]:
    removed: list[str] = []
    if libvirt.libvirt_answers() and virsh("pool-info", POOL).returncode == 0:
        virsh("pool-refresh", POOL)
        for line in virsh("vol-list", POOL).stdout.splitlines():
            fields = line.split()
            if fields and virsh("vol-delete", fields[0], "--pool", POOL).returncode == 0:
                removed.append(f"pool volume {fields[0]}")
    pool = vm_lab_root() / "pool"
    for volume in sorted(pool.glob("*")) if pool.is_dir() else []:
        volume.unlink()  # libvirt not running: its pool is read afresh when it starts
        removed.append(f"pool volume {volume.name}")
    return removed
