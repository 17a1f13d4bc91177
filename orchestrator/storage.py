"""Private storage: everything the product writes is readable by its owner only.

Device config backups hold secrets, baselines have held a cron line with a password, the run's
inventory copy, plan, lock, journal and reports say what the hospital runs and where. So:

* :func:`private_umask` sets a 077 umask once, at the CLI entry (files 0600, directories 0700);
* every writer here also passes explicit modes (``os.open(..., 0o600)``, ``mkdir(mode=0o700)``),
  so the product is private when used as a library too, whatever the caller's umask;
* :func:`ensure_private_dir` creates the state directory 0700 and *tightens* an existing one that
  is wider (with a note for the caller to show): the directory is the product's own, a wider mode
  is always a mistake (an earlier version, a careless ``mkdir``), and refusing would stop a
  shutdown at 06:32 over something the tool can fix safely. A directory owned by someone else is
  refused: it is not ours to tighten, and someone else could swap its files;
* :func:`atomic_write` is the one way to replace a file: a temporary file 0600 in the same
  directory, written, fsynced, renamed into place, and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from orchestrator.errors import UsageError

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_umask() -> int:
    """Set the process umask to 077 (called once at the CLI entry). Returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> str | None:
    """Create ``path`` (and missing parents) 0700, or tighten it to 0700 if it is wider.

    Returns a sentence describing what was tightened (for the caller to show), or None. Refuses
    (UsageError) a directory owned by another user, or a path that is not a directory.
    """
    path = Path(path)
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise UsageError(f"cannot create the directory: {exc.strerror or exc}", target=str(path),
                         hint="check the path and its parent's permissions (--state-dir)") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError("not a directory (a symlink or a file is in the way)", target=str(path),
                         hint="use a real directory for the state (--state-dir)")
    if st.st_uid != os.geteuid():
        raise UsageError(f"the directory belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})",
                         target=str(path),
                         hint="run as the user that owns it, or use a state directory of your own (--state-dir)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, DIR_MODE)
        except OSError as exc:
            raise UsageError(f"the directory is open to others (mode {mode:o}) and cannot be made private: "
                             f"{exc.strerror or exc}", target=str(path), hint=f"chmod 700 {path}") from exc
        return f"{path} was mode {mode:o} (open to others); tightened to 700"
    return None


def private_mkdir(path: Path) -> None:
    """``mkdir -p`` with every directory it creates 0700 (existing ones are left alone)."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask; make it exact


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _durable_temp(path: Path, data: bytes | str, mode: int) -> Path:
    """``data`` in a new temporary file beside ``path``, ``mode`` exactly, fsynced; the caller renames it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    private_mkdir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exact, whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write(path: Path, data: bytes | str, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably: readers see the old or the new file,
    never a part; after return it survives a power loss. The file is ``mode`` (0600)."""
    path = Path(path)
    tmp = _durable_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes | str, *, mode: int = FILE_MODE) -> None:
    """Create ``path`` with ``data``, durably; refuses (FileExistsError) if it exists: never overwrites."""
    path = Path(path)
    tmp = _durable_temp(path, data, mode)
    try:
        os.link(tmp, path)  # atomic and refuses an existing file
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


KEY_BYTES = 32


def load_key(path: Path, *, create: bool) -> bytes | None:
    """The controller's secret key (32 random bytes, 0600, in a 0700 directory), or None when it does
    not exist and ``create`` is false. Refuses (UsageError) a key readable by others or too short."""
    path = Path(path)
    if not path.exists():
        if not create:
            return None
        private_mkdir(path.parent)
        os.chmod(path.parent, DIR_MODE)
        with contextlib.suppress(FileExistsError):  # another thread or process made it first
            write_new(path, os.urandom(KEY_BYTES))
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UsageError(f"the controller key {path} is readable by others (mode {mode:o})", target=str(path),
                         hint=f"chmod 600 {path}; if others may have read it, make a new key and recapture baselines")
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise UsageError(f"the controller key {path} is too short ({len(key)} bytes)", target=str(path),
                         hint="restore the key from the controller's backup")
    return key


def derive_key(master: bytes, purpose: str) -> bytes:
    """A key for one purpose (journal chain, ...) from the controller key: HMAC-SHA256(master, purpose).
    A MAC made for one purpose can never be replayed as one for another."""
    import hashlib
    import hmac

    return hmac.new(master, purpose.encode("utf-8"), hashlib.sha256).digest()
