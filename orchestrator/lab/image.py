"""The lab's machine image: one Debian rootfs made with debootstrap, cached outside the repo.

The image is named after a hash of its recipe (suite, mirror, packages, configuration script), so it
is rebuilt only when the recipe changes. Every lab machine boots an overlay over it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab import statefile

CACHE_ENV = "ORCHESTRATOR_LAB_CACHE"
MIRROR_ENV = "ORCHESTRATOR_LAB_MIRROR"
DEFAULT_CACHE = Path("/var/cache/orchestrator-lab")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"

PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "sudo",
    "nftables",
    "iputils-ping",
    "procps",
    "cron",
    "frr",
)

# The user a network device's operators log in as on an FRR router: its login shell is vtysh
# (/usr/local/bin/vtysh-shell, made by CONFIGURE_SCRIPT).
DEVICE_USER = "netops"

# Runs inside the new rootfs (chroot). Everything machine-specific (hostname, machine-id, host keys,
# addresses, authorized keys) is written later into each machine's own overlay.
CONFIGURE_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
rm -f /etc/hostname
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
systemctl enable systemd-networkd.service >/dev/null 2>&1
systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
systemctl disable frr.service >/dev/null 2>&1 || true
systemctl disable nftables.service >/dev/null 2>&1 || true
systemctl mask console-getty.service getty@tty1.service >/dev/null 2>&1 || true
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/ssh/sshd_config.d /etc/systemd/journald.conf.d
cat > /etc/ssh/sshd_config.d/10-lab.conf <<'EOC'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOC
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n' > /etc/systemd/journald.conf.d/10-lab.conf
cat > /usr/local/bin/vtysh-shell <<'EOC'
#!/bin/sh
# Login shell of the network operator user: an IOS-like CLI, FRR's vtysh.
if [ "${1:-}" = "-c" ]; then shift; exec /usr/bin/vtysh -c "$*"; fi
exec /usr/bin/vtysh
EOC
chmod 0755 /usr/local/bin/vtysh-shell
echo /usr/local/bin/vtysh-shell >> /etc/shells
useradd --create-home --gid frr --groups frrvty --shell /usr/local/bin/vtysh-shell netops
passwd --lock netops >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""

RECIPE_VERSION = "1"


@dataclass(frozen=True)
class Image:
    path: Path
    recipe_hash: str
    built: bool  # built by this call (False: taken from the cache)
    seconds: float


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def mirror() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


def recipe_hash() -> str:
    text = "\n".join([RECIPE_VERSION, SUITE, mirror(), ",".join(PACKAGES), CONFIGURE_SCRIPT])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_path() -> Path:
    return cache_dir() / f"image-{recipe_hash()}"


def _run(argv: list[str], *, target: str, hint: str, log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise LabError(
            f"{argv[0]} exited {result.returncode} (log: {log})",
            target=target,
            hint=hint,
        )


def ensure_image() -> Image:
    """Return the cached image for the current recipe, building it first if needed (~60-90 s)."""
    final = image_path()
    started = time.monotonic()
    with statefile.locked(cache_dir() / "build.lock"):
        if (final / ".complete").exists():
            return Image(final, recipe_hash(), built=False, seconds=0.0)
        tmp = final.with_name(final.name + ".building")
        if tmp.exists():
            shutil.rmtree(tmp)
        log = final.with_name(final.name + ".log")
        log.write_bytes(b"")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(tmp),
                mirror(),
            ],
            target="lab image",
            hint=f"check that the Debian mirror {mirror()} is reachable (set {MIRROR_ENV} to use another)",
            log=log,
        )
        _run(
            ["chroot", str(tmp), "/bin/sh", "-c", CONFIGURE_SCRIPT],
            target="lab image",
            hint="the image's configuration script failed; see the log",
            log=log,
        )
        (tmp / ".complete").write_text(recipe_hash() + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune_old_images(keep=final)
    return Image(final, recipe_hash(), built=True, seconds=time.monotonic() - started)


def _prune_old_images(keep: Path) -> None:
    """Old images are removed once no mounted overlay uses them."""
    mounts = Path("/proc/self/mounts").read_text()
    for old in keep.parent.glob("image-*"):
        if old == keep or not old.is_dir() or str(old) in mounts:
            continue
        shutil.rmtree(old, ignore_errors=True)
