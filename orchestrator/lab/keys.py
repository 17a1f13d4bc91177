"""The lab's SSH keys: one client key, one host key per machine, and the known_hosts that pins them.

Keys live under ``LAB_ROOT/ssh/`` and survive ``lab down``, so a machine keeps its host key across a
down/up of the same lab. Key contents are never returned, logged or put in errors.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator import storage
from orchestrator.lab.topology import Topology

CLIENT_KEY = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
HOSTKEYS = "hostkeys"
HOST_KEY_FILE = "ssh_host_ed25519_key"


def _write_private(path: Path, key: Ed25519PrivateKey, comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    storage.atomic_write(path, private)  # 0600
    storage.atomic_write(path.with_name(path.name + ".pub"), public + f" {comment}\n".encode())


def ensure_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair at ``path`` (+ ``.pub``), created once."""
    if not (path.exists() and path.with_name(path.name + ".pub").exists()):
        _write_private(path, Ed25519PrivateKey.generate(), comment)
    return path


def public_key(path: Path) -> str:
    """The public half (``ssh-ed25519 AAAA...``) of a key made by :func:`ensure_key`."""
    parts = path.with_name(path.name + ".pub").read_text().split()
    return f"{parts[0]} {parts[1]}"


def ssh_dir(lab_root: Path) -> Path:
    return lab_root / "ssh"


def client_key_path(lab_root: Path) -> Path:
    return ssh_dir(lab_root) / CLIENT_KEY


def known_hosts_path(lab_root: Path) -> Path:
    return ssh_dir(lab_root) / KNOWN_HOSTS


def host_key_path(lab_root: Path, machine: str) -> Path:
    return ssh_dir(lab_root) / HOSTKEYS / machine / HOST_KEY_FILE


def ensure_keys(lab_root: Path, topo: Topology) -> None:
    """Client key, every machine's host key, and a known_hosts listing each by management address."""
    ssh_dir(lab_root).mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_key(client_key_path(lab_root), "orchestrator-lab")
    lines = []
    for m in topo.machines:
        key = ensure_key(host_key_path(lab_root, m.name), f"root@{m.name}")
        lines.append(f"{m.management_address} {public_key(key)}\n")
    storage.atomic_write(known_hosts_path(lab_root), "".join(lines))
