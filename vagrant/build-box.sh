#!/usr/bin/env bash
# Build the lab's Vagrant box (libvirt, qcow2) from Debian packages only: no box is downloaded.
#
#   vagrant/build-box.sh OUTPUT.box [MIRROR]
#
# debootstrap (minbase plus what a lab machine runs: systemd, sshd, python3, nftables, frr, cron),
# a `vagrant` user with Vagrant's well-known public key and passwordless sudo, systemd-networkd with
# DHCP on Vagrant's own NIC (ClientIdentifier=mac: clones get distinct leases), an empty machine-id
# and no SSH host keys (both made on first boot; `orchestrator lab up --provider vagrant` then pins
# per-VM host keys). Debian's cloud kernel (few modules: it boots faster under emulation), one MBR
# partition with extlinux, compressed to qcow2, packed as a box.
#
# The box's cache name is a hash of this file (orchestrator.lab.vm.box_recipe_hash): editing the
# recipe here is what makes the next `lab up` rebuild it. Needs root, debootstrap, qemu-utils,
# extlinux, fdisk, e2fsprogs and the vagrant package (for its public key). About 3-4 minutes.
set -euo pipefail
umask 022  # a root filesystem: whatever the caller's umask, /etc stays readable by the services' own users

OUT=${1:?usage: build-box.sh OUTPUT.box [MIRROR]}
MIRROR=${2:-${ORCHESTRATOR_LAB_MIRROR:-http://deb.debian.org/debian}}
SUITE=bookworm
SIZE_GB=4
PACKAGES=systemd-sysv,dbus,libpam-systemd,udev,kmod,linux-image-cloud-amd64,openssh-server,sudo,python3,iproute2,netbase,iputils-ping,procps,nftables,frr,cron

[ "$(id -u)" = 0 ] || { echo "build-box.sh: needs root (debootstrap, loop devices, mount)" >&2; exit 2; }
for cmd in debootstrap qemu-img extlinux sfdisk mkfs.ext4 losetup; do
  command -v "$cmd" >/dev/null || { echo "build-box.sh: $cmd is missing (apt-get install debootstrap qemu-utils extlinux fdisk e2fsprogs)" >&2; exit 2; }
done
VAGRANT_PUB=""
for f in /usr/share/vagrant/keys/vagrant.pub /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
  if [ -f "$f" ]; then VAGRANT_PUB=$f; break; fi
done
[ -n "$VAGRANT_PUB" ] || { echo "build-box.sh: vagrant's keys/vagrant.pub not found (apt-get install vagrant)" >&2; exit 2; }
MBR=/usr/lib/EXTLINUX/mbr.bin
[ -f "$MBR" ] || MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR" ] || { echo "build-box.sh: extlinux's mbr.bin not found (apt-get install extlinux syslinux-common)" >&2; exit 2; }

WORK=$(mktemp -d "$(dirname "$OUT")/.box-build.XXXXXX")
PLOOP=""
cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && umount "$WORK/mnt"
  mountpoint -q "$WORK/rootfs/proc" 2>/dev/null && umount "$WORK/rootfs/proc"
  [ -n "$PLOOP" ] && losetup -d "$PLOOP" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
R=$WORK/rootfs
t0=$(date +%s)
phase() { echo "build-box: $1 ($(( $(date +%s) - t0 )) s)"; }

phase debootstrap
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$R" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2; echo "build-box.sh: debootstrap from $MIRROR failed" >&2; exit 1; }

phase configure
echo lab > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lab\n' > "$R/etc/hosts"
printf '/dev/vda1 / ext4 defaults,noatime 0 1\n' > "$R/etc/fstab"
mkdir -p "$R/home/vagrant/.ssh"
cp "$VAGRANT_PUB" "$R/home/vagrant/.ssh/authorized_keys"
cat > "$R/etc/systemd/network/90-vagrant.network" <<'EOF'
# Vagrant's own NIC (predictable name en*): DHCP on its isolated management network. The lab's
# interfaces are renamed by the provisioner (mgmt0, eth0, ...) and configured by their own files.
[Match]
Name=en*

[Link]
RequiredForOnline=no

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
UseDNS=no
UseRoutes=no
EOF
cat > "$R/etc/systemd/system/lab-ssh-hostkey.service" <<'EOF'
[Unit]
Description=Make this clone's own SSH host key on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$R/etc/ssh/sshd_config.d" "$R/etc/systemd/journald.conf.d" "$R/etc/initramfs-tools"
cat > "$R/etc/ssh/sshd_config.d/10-lab.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n' > "$R/etc/systemd/journald.conf.d/10-lab.conf"
cat > "$R/usr/local/bin/vtysh-shell" <<'EOF'
#!/bin/sh
# Login shell of the network operator user: an IOS-like CLI, FRR's vtysh.
if [ "${1:-}" = "-c" ]; then shift; exec /usr/bin/vtysh -c "$*"; fi
exec /usr/bin/vtysh
EOF
chmod 0755 "$R/usr/local/bin/vtysh-shell"
sed -i 's/^MODULES=.*/MODULES=list/' "$R/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' > "$R/etc/initramfs-tools/modules"
mount -t proc proc "$R/proc"
chroot "$R" /bin/sh -eu > "$WORK/configure.log" 2>&1 <<'EOF'
export DEBIAN_FRONTEND=noninteractive
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
systemctl enable systemd-networkd.service lab-ssh-hostkey.service
systemctl mask systemd-networkd-wait-online.service getty@tty1.service
systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer
systemctl disable frr.service nftables.service || true
useradd --create-home --shell /bin/bash --groups sudo vagrant
chown -R vagrant:vagrant /home/vagrant/.ssh
chmod 700 /home/vagrant/.ssh
chmod 600 /home/vagrant/.ssh/authorized_keys
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
passwd --lock root
echo /usr/local/bin/vtysh-shell >> /etc/shells
useradd --create-home --gid frr --groups frrvty --shell /usr/local/bin/vtysh-shell netops
passwd --lock netops
rm -f /etc/ssh/ssh_host_*
update-initramfs -u -k all
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
EOF
umount "$R/proc"
KVER=$(basename "$(ls "$R"/boot/vmlinuz-* | sort -V | tail -n 1)" | sed 's/^vmlinuz-//')

phase disk
IMG=$WORK/box.raw
truncate -s "${SIZE_GB}G" "$IMG"
echo 'start=2048, type=83, bootable' | sfdisk -q "$IMG"
# No udev here, so no /dev/loopNp1: map the partition with an offset loop device instead.
START=$((2048 * 512))
PLOOP=$(losetup -f --show -o "$START" --sizelimit $(( $(stat -c %s "$IMG") - START )) "$IMG")
mkfs.ext4 -q -F -L root -O ^64bit,^metadata_csum -d "$R" "$PLOOP"
mkdir -p "$WORK/mnt"
mount "$PLOOP" "$WORK/mnt"
mkdir -p "$WORK/mnt/boot/extlinux"
extlinux --install "$WORK/mnt/boot/extlinux" > /dev/null 2>&1
# no_timer_check: under software emulation on a loaded host the kernel's IO-APIC timer check can
# time out and panic ("IO-APIC + timer doesn't work!"); panic=5: any boot panic restarts the VM
# (vagrant keeps waiting for its address) instead of leaving it dead until vagrant's boot timeout.
cat > "$WORK/mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT linux
TIMEOUT 1
SERIAL 0 115200
LABEL linux
  LINUX /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND root=/dev/vda1 rw console=ttyS0,115200 quiet mitigations=off no_timer_check panic=5
EOF
umount "$WORK/mnt"
losetup -d "$PLOOP"
PLOOP=""
dd if="$MBR" of="$IMG" bs=440 count=1 conv=notrunc status=none

phase qcow2
mkdir -p "$WORK/box"
qemu-img convert -c -O qcow2 "$IMG" "$WORK/box/box.img"
rm -f "$IMG"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$SIZE_GB" > "$WORK/box/metadata.json"
cat > "$WORK/box/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
tar -C "$WORK/box" -cf "$OUT.tmp" metadata.json Vagrantfile box.img
mv "$OUT.tmp" "$OUT"
phase "done: $OUT ($(du -h "$OUT" | cut -f1))"
