"""The netmiko driver against fake sessions: what is sent, how refusals and failures surface."""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paramiko
import pytest
from netmiko.exceptions import (
    ConfigInvalidException,
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)

from orchestrator.drivers import devices
from orchestrator.drivers import netmiko as driver_mod
from orchestrator.drivers.netmiko import (
    CommandOutcome,
    CommandRejectedError,
    ConnectionParams,
    NetmikoDriver,
    linux_batch,
    parse_interface_names,
)
from orchestrator.errors import (
    AuthFailedError,
    DriverError,
    DriverTimeoutError,
    UnknownDriverError,
    UnreachableError,
)
from orchestrator.model import (
    Action,
    Credential,
    Device,
    Inventory,
    Link,
    LinkKind,
    Segment,
    Site,
)

SECRET = "correct-horse-battery-staple"
FRR_BRIEF = """\
Interface       Status  VRF             Addresses
---------       ------  ---             ---------
eth0            up      default         10.99.1.1/16
lo              up      default
vlan120         up      default         10.10.2.1/24
vlan130         up      default         10.10.3.1/24
"""


class FakeSession:
    """Answers like a device: a linux shell (exit status markers) or an IOS-like CLI."""

    def __init__(self, platform: str, params: ConnectionParams) -> None:
        self.platform = platform
        self.params = params
        self.sent: list[str] = []
        self.config_sets: list[tuple[list[str], str]] = []
        self.fail_rc: dict[str, int] = {}  # substring of a shell line -> exit status
        self.show_outputs: dict[str, str] = {"show interface brief": FRR_BRIEF}
        self.config_error: Exception | None = None
        self.command_error: Exception | None = None
        self.alive = True
        self.disconnected = False
        self.commits = 0

    def send_command(
        self,
        command_string: str,
        expect_string: str | None = None,
        read_timeout: float = 10.0,
        cmd_verify: bool = True,
    ) -> Any:
        assert read_timeout == self.params.timeout_s
        if self.command_error is not None:
            raise self.command_error
        self.sent.append(command_string)
        if self.platform == "linux":
            line = command_string.removesuffix("; echo __orchestrator_rc=$?")
            if " || echo " in line:  # `A || echo X; B || echo Y`: echo for each failing part
                echoed = [part.split(" || echo ", 1)[1] for part in line.split("; ")
                          if any(k in part.split(" || echo ", 1)[0] for k in self.fail_rc)]
                return f"{command_string}\n" + "".join(e + "\n" for e in echoed) + "__orchestrator_rc=0\n"
            rc = next((v for k, v in self.fail_rc.items() if k in line), 0)
            body = "Error: Could not process rule: No such file or directory\n" if rc else "ok\n"
            return f"{command_string}\n{body}__orchestrator_rc={rc}\n"
        return self.show_outputs.get(command_string, f"output of {command_string}\n")

    def send_config_set(
        self,
        config_commands: Sequence[str] | None = None,
        exit_config_mode: bool = True,
        read_timeout: float | None = None,
        error_pattern: str = "",
    ) -> str:
        assert config_commands is not None
        self.config_sets.append((list(config_commands), error_pattern))
        if self.config_error is not None:
            raise self.config_error
        return "configure terminal\n" + "\n".join(config_commands) + "\nend\n"

    def commit(self) -> str:
        self.commits += 1
        return "commit complete\n"

    def exit_config_mode(self) -> str:
        return "exit\n"

    def is_alive(self) -> bool:
        return self.alive

    def disconnect(self) -> None:
        self.disconnected = True


class Connector:
    def __init__(self) -> None:
        self.opened: list[FakeSession] = []
        self.error: Exception | None = None
        self.setup: Callable[[FakeSession], None] = lambda s: None

    def __call__(self, params: ConnectionParams) -> FakeSession:
        if self.error is not None:
            raise self.error
        session = FakeSession(params.device_type, params)
        self.setup(session)
        self.opened.append(session)
        return session

    @property
    def last(self) -> FakeSession:
        return self.opened[-1]


def make_inventory(tmp_path: Path, password_env: str | None = None) -> Inventory:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    addr = ipaddress.IPv4Address
    net = ipaddress.IPv4Network
    return Inventory(
        path=str(tmp_path / "inventory.yml"),
        sha256="0" * 64,
        site=Site("test"),
        management_segment="mgmt",
        campuses={},
        segments={
            "mgmt": Segment("mgmt", net("10.99.0.0/16"), "management"),
            "ant-servers": Segment(
                "ant-servers", net("10.10.2.0/24"), "servers", gateway="ant-core", interface="vlan120"
            ),
            "ant-ghost": Segment("ant-ghost", net("10.10.9.0/24"), "servers", gateway="ant-core", interface="vlan199"),
            "deu-servers": Segment(
                "deu-servers", net("10.20.2.0/24"), "servers", gateway="deu-core", interface="vlan220"
            ),
            "deu-clinical": Segment(
                "deu-clinical", net("10.20.3.0/24"), "clinical", gateway="deu-core", interface="vlan230"
            ),
        },
        devices={
            "ant-core": Device("ant-core", "cisco_ios", addr("10.99.1.1"), "core", "netops"),
            "deu-core": Device("deu-core", "linux", addr("10.99.1.3"), "core", "lab"),
            "ant-fw": Device("ant-fw", "linux", addr("10.99.1.2"), "firewall", "lab"),
            "srx": Device("srx", "juniper_junos", addr("10.99.1.9"), "firewall", "lab", vars={"ssh_port": 2222}),
        },
        links={
            "vendor-registration": Link(
                "vendor-registration", LinkKind.VENDOR, "ant-fw", net("10.200.0.0/24"), interface="vendor0"
            ),
            "srx-wan": Link("srx-wan", LinkKind.WAN, "srx", net("10.201.0.0/24"), interface="ge-0/0/1"),
        },
        hosts={},
        islands={},
        credentials={
            "lab": Credential("lab", "root", key_file=str(key), known_hosts=str(known)),
            "netops": Credential("netops", "netops", key_file="id_ed25519", password_env=password_env),
        },
    )


@pytest.fixture
def connector() -> Connector:
    return Connector()


@pytest.fixture
def driver(tmp_path: Path, connector: Connector) -> NetmikoDriver:
    return NetmikoDriver(make_inventory(tmp_path), timeout_s=7.0, connect=connector)


# -- linux ---------------------------------------------------------------------------------------


def test_linux_isolate_sends_the_rendered_lines_with_exit_status_checks(
    driver: NetmikoDriver, connector: Connector
) -> None:
    outcome = driver.apply("deu-core", Action.ISOLATE_SEGMENT, "deu-servers")
    inventory = driver._inventory
    expected = devices.render(
        "linux",
        "isolate-segment",
        device=inventory.devices["deu-core"],
        segment=inventory.segments["deu-servers"],
    )
    assert outcome == CommandOutcome("deu-core", tuple(expected), outcome.output)
    sent = connector.last.sent
    assert sent[0] == ("ip -br link show dev vlan220 >/dev/null 2>&1 || echo __missing=vlan220; "
                       "echo __orchestrator_rc=$?")
    assert sent[1:] == [f"{linux_batch(expected)}; echo __orchestrator_rc=$?"]
    assert sent[1].startswith("(set -e; nft add table inet orchestrator; nft 'add chain")
    assert "__orchestrator_rc" not in outcome.output


def test_linux_rejected_line_raises_with_evidence_and_drops_the_session(
    driver: NetmikoDriver, connector: Connector
) -> None:
    connector.setup = lambda s: s.fail_rc.update({"add rule inet orchestrator input": 1})
    with pytest.raises(CommandRejectedError) as err:
        driver.apply("ant-fw", Action.CUT_LINK, "vendor-registration")
    assert "add rule inet orchestrator input" in err.value.command
    assert "exit status 1" in err.value.output
    assert "No such file or directory" in str(err.value)
    assert err.value.target == "ant-fw"
    assert connector.last.disconnected
    connector.setup = lambda s: None
    driver.running_config("ant-fw")
    assert len(connector.opened) == 2  # a fresh session, the failed one is never reused


def test_linux_missing_interface_is_refused_before_any_rule(driver: NetmikoDriver, connector: Connector) -> None:
    connector.setup = lambda s: s.fail_rc.update({"ip -br link show dev vlan220": 1})
    with pytest.raises(DriverError, match="interface vlan220 does not exist on deu-core"):
        driver.apply("deu-core", Action.ISOLATE_SEGMENT, "deu-servers")
    assert len(connector.last.sent) == 1


def test_linux_undo_does_not_need_the_interface(driver: NetmikoDriver, connector: Connector) -> None:
    outcome = driver.apply("deu-core", Action.RECONNECT_SEGMENT, "deu-servers")
    assert not any("ip -br link" in line for line in connector.last.sent)
    assert len(outcome.commands) == 2


def test_is_in_force_reads_the_ruleset(driver: NetmikoDriver, connector: Connector) -> None:
    ruleset = 'iifname "vlan220" drop comment "orchestrator:isolate-segment:deu-servers"'

    def setup(s: FakeSession) -> None:
        original = s.send_command

        def send(command_string: str, *args: Any, **kwargs: Any) -> Any:
            out = original(command_string, *args, **kwargs)
            return out.replace("ok\n", ruleset + "\n") if command_string.startswith("nft list ruleset") else out

        s.send_command = send  # type: ignore[method-assign]

    connector.setup = setup
    assert driver.is_in_force("deu-core", Action.ISOLATE_SEGMENT, "deu-servers")
    assert not driver.is_in_force("deu-core", Action.RECONNECT_SEGMENT, "deu-servers")


def test_backup_config_joins_several_commands(driver: NetmikoDriver) -> None:
    text = driver.backup_config("deu-core")
    assert text.startswith("### nft list ruleset\n")
    assert "### ip route\n" in text


def test_restore_config_drops_the_table(driver: NetmikoDriver, connector: Connector) -> None:
    outcome = driver.restore_config("deu-core", "backup")
    assert outcome.commands == (
        "if nft list table inet orchestrator >/dev/null 2>&1; then nft delete table inet orchestrator; fi",
    )


# -- cisco_ios (FRR in the lab) ------------------------------------------------------------------


def test_cisco_ios_checks_the_interface_then_sends_config_with_an_error_pattern(
    driver: NetmikoDriver, connector: Connector
) -> None:
    outcome = driver.apply("ant-core", Action.ISOLATE_SEGMENT, "ant-servers")
    session = connector.last
    assert session.sent == ["show interface brief"]
    assert session.config_sets == [(["interface vlan120", "shutdown"], driver_mod.ERROR_PATTERNS["cisco_ios"])]
    assert outcome.commands == ("interface vlan120", "shutdown")
    assert re.search(driver_mod.ERROR_PATTERNS["cisco_ios"], "% Unknown command: shutdownx", re.M)
    assert re.search(driver_mod.ERROR_PATTERNS["cisco_ios"], "% Invalid input detected at '^' marker.", re.M)


def test_cisco_ios_nonexistent_interface_fails_clearly(driver: NetmikoDriver, connector: Connector) -> None:
    with pytest.raises(DriverError) as err:
        driver.apply("ant-core", Action.ISOLATE_SEGMENT, "ant-ghost")
    assert "interface vlan199 does not exist on ant-core" in str(err.value)
    assert "vlan120" in (err.value.hint or "")
    assert connector.last.config_sets == []


def test_cisco_ios_falls_back_to_show_ip_interface_brief_on_real_ios(
    driver: NetmikoDriver, connector: Connector
) -> None:
    def setup(s: FakeSession) -> None:
        s.show_outputs["show interface brief"] = "                  ^\n% Invalid input detected at '^' marker.\n"
        s.show_outputs["show ip interface brief"] = (
            "Interface              IP-Address      OK? Method Status                Protocol\n"
            "vlan120                10.10.2.1       YES manual up                    up\n"
        )

    connector.setup = setup
    driver.apply("ant-core", Action.ISOLATE_SEGMENT, "ant-servers")
    assert connector.last.sent == ["show interface brief", "show ip interface brief"]


def test_cisco_ios_rejected_command_raises_command_rejected(driver: NetmikoDriver, connector: Connector) -> None:
    connector.setup = lambda s: setattr(
        s, "config_error", ConfigInvalidException("Invalid input detected at command: shutdwn, matched error: %")
    )
    with pytest.raises(CommandRejectedError) as err:
        driver.apply("ant-core", Action.ISOLATE_SEGMENT, "ant-servers")
    assert err.value.command == "shutdwn"
    assert err.value.output == "%"
    assert connector.last.disconnected


def test_rejected_show_command_raises(driver: NetmikoDriver, connector: Connector) -> None:
    connector.setup = lambda s: s.show_outputs.update({"show running-config": "% Unknown command: show running"})
    with pytest.raises(CommandRejectedError, match="Unknown command"):
        driver.running_config("ant-core")


def test_junos_commits_and_uses_the_device_port(driver: NetmikoDriver, connector: Connector) -> None:
    driver.apply("srx", Action.CUT_LINK, "srx-wan")
    assert connector.last.commits == 1
    assert connector.last.params.port == 2222


# -- targets, sessions, errors -------------------------------------------------------------------


def test_targets_must_belong_to_the_device(driver: NetmikoDriver) -> None:
    with pytest.raises(DriverError, match="gateway deu-core, not ant-core"):
        driver.apply("ant-core", Action.ISOLATE_SEGMENT, "deu-servers")
    with pytest.raises(DriverError, match="is on ant-fw, not deu-core"):
        driver.apply("deu-core", Action.CUT_LINK, "vendor-registration")
    with pytest.raises(DriverError, match="no device 'nope'"):
        driver.apply("nope", Action.CUT_LINK, "vendor-registration")
    with pytest.raises(UnknownDriverError, match="stop-host"):
        driver.apply("deu-core", Action.STOP_HOST, "x")


def test_sessions_are_pooled_per_device_and_replaced_when_dead(driver: NetmikoDriver, connector: Connector) -> None:
    driver.running_config("deu-core")
    driver.running_config("deu-core")
    assert len(connector.opened) == 1
    driver.running_config("ant-fw")
    assert len(connector.opened) == 2
    connector.opened[0].alive = False
    driver.running_config("deu-core")
    assert len(connector.opened) == 3 and connector.opened[0].disconnected
    driver.close()
    assert all(s.disconnected for s in connector.opened)


def test_calls_for_one_device_take_turns(driver: NetmikoDriver, connector: Connector) -> None:
    errors: list[BaseException] = []
    in_use = threading.Lock()
    overlaps: list[str] = []

    def detect_overlap(session: FakeSession) -> None:
        send = session.send_command

        def guarded(command_string: str, **kwargs: Any) -> Any:
            if not in_use.acquire(blocking=False):  # another thread is inside a call on this device
                overlaps.append(command_string)
                return send(command_string, **kwargs)
            try:
                time.sleep(0.005)  # hold the session long enough for an unlocked caller to collide
                return send(command_string, **kwargs)
            finally:
                in_use.release()

        session.send_command = guarded  # type: ignore[method-assign,assignment]

    connector.setup = detect_overlap

    def work() -> None:
        try:
            for _ in range(5):
                driver.running_config("deu-core")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not overlaps, f"{len(overlaps)} calls overlapped on one device session"
    assert sum(len(s.sent) for s in connector.opened) == 20


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (NetmikoTimeoutException("TCP connection to device failed."), UnreachableError),
        (NetmikoAuthenticationException("Authentication to device failed."), AuthFailedError),
        (paramiko.SSHException("Server '10.99.1.3' not found in known_hosts"), AuthFailedError),
        (
            NetmikoTimeoutException(
                "\nA paramiko SSHException occurred during connection creation:\n\n"
                "Server '[10.99.1.3]:22' not found in known_hosts\n"
            ),
            AuthFailedError,
        ),
        (ConnectionRefusedError(111, "Connection refused"), UnreachableError),
    ],
)
def test_connect_failures_are_mapped(
    driver: NetmikoDriver, connector: Connector, exc: Exception, error: type[DriverError]
) -> None:
    connector.error = exc
    with pytest.raises(error) as err:
        driver.running_config("deu-core")
    assert err.value.target == "deu-core"
    assert err.value.hint


def test_read_timeout_is_a_driver_timeout(driver: NetmikoDriver, connector: Connector) -> None:
    connector.setup = lambda s: setattr(s, "command_error", ReadTimeout("Pattern not detected"))
    with pytest.raises(DriverTimeoutError, match=r"no answer from 10\.99\.1\.3"):
        driver.running_config("deu-core")


def test_password_from_env_never_shows(tmp_path: Path, connector: Connector, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "id_ed25519").write_text("x")
    driver = NetmikoDriver(make_inventory(tmp_path, password_env="NETOPS_PW"), connect=connector)
    with pytest.raises(AuthFailedError, match="NETOPS_PW is not set"):
        driver.running_config("ant-core")
    monkeypatch.setenv("NETOPS_PW", SECRET)
    connector.error = NetmikoAuthenticationException(f"Authentication to device failed: {SECRET}?")
    with pytest.raises(AuthFailedError) as err:
        driver.running_config("ant-core")
    assert SECRET not in str(err.value)
    connector.error = None
    driver.running_config("ant-core")
    params = connector.last.params
    assert params.password == SECRET
    assert params.key_file == str(tmp_path / "id_ed25519")  # relative to the inventory's directory
    assert SECRET not in repr(params)


def test_missing_known_hosts_is_refused_before_connecting(tmp_path: Path, connector: Connector) -> None:
    inventory = make_inventory(tmp_path)
    (tmp_path / "known_hosts").unlink()
    with pytest.raises(AuthFailedError, match="host key cannot be checked"):
        NetmikoDriver(inventory, connect=connector).running_config("deu-core")
    assert connector.opened == []


def test_open_session_is_strict_and_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}
    import netmiko

    monkeypatch.setattr(netmiko, "ConnectHandler", lambda **kw: captured.update(kw) or object())
    params = ConnectionParams(
        device="d",
        device_type="cisco_ios",
        host="10.99.1.1",
        port=22,
        username="netops",
        timeout_s=9.0,
        key_file="/k",
        known_hosts="/kh",
        password=SECRET,
    )
    driver_mod.open_session(params)
    assert captured["ssh_strict"] is True
    assert captured["system_host_keys"] is False
    assert captured["alt_host_keys"] is True and captured["alt_key_file"] == "/kh"
    assert captured["use_keys"] is True and captured["key_file"] == "/k"
    assert captured["allow_agent"] is False
    assert captured["session_log"] is None
    assert captured["conn_timeout"] == captured["auth_timeout"] == 9.0
    assert captured["password"] == SECRET


def test_parse_interface_names() -> None:
    assert parse_interface_names(FRR_BRIEF) == ["eth0", "lo", "vlan120", "vlan130"]


def test_several_changes_to_one_device_go_in_one_round_trip(driver: NetmikoDriver, connector: Connector) -> None:
    inventory = driver._inventory
    segments = sorted(s.name for s in inventory.segments.values() if s.gateway == "deu-core")
    outcome = driver.apply_many("deu-core", [(Action.ISOLATE_SEGMENT, s) for s in segments])
    rendered = [line for s in segments for line in devices.render(
        "linux", "isolate-segment", device=inventory.devices["deu-core"], segment=inventory.segments[s])]
    expected = list(dict.fromkeys(rendered))  # the table and chains are ensured once, not per segment
    assert len(expected) < len(rendered) and outcome.commands == tuple(expected)
    sent = connector.last.sent
    assert len(sent) == 2  # one interface check for all, one batch for all
    assert sent[1] == f"{linux_batch(expected)}; echo __orchestrator_rc=$?"


def test_one_missing_interface_stops_the_whole_batch_before_anything_is_sent(
    driver: NetmikoDriver, connector: Connector
) -> None:
    segments = sorted(s.name for s in driver._inventory.segments.values() if s.gateway == "deu-core")
    connector.setup = lambda s: s.fail_rc.update({"ip -br link show dev vlan220": 1})
    with pytest.raises(DriverError, match="interface vlan220 does not exist on deu-core"):
        driver.apply_many("deu-core", [(Action.ISOLATE_SEGMENT, s) for s in segments])
    assert len(connector.last.sent) == 1


def test_in_force_map_reads_the_running_config_once(driver: NetmikoDriver, connector: Connector) -> None:
    connector.setup = lambda s: s.show_outputs.update(
        {"show running-config": "interface vlan120\n shutdown\n!\ninterface vlan199\n no shutdown\n!\n"})
    answers = driver.in_force_map("ant-core", [(Action.ISOLATE_SEGMENT, "ant-servers"),
                                               (Action.ISOLATE_SEGMENT, "ant-ghost")])
    assert answers == {(Action.ISOLATE_SEGMENT, "ant-servers"): True, (Action.ISOLATE_SEGMENT, "ant-ghost"): False}
    assert len(connector.last.sent) == 1


def test_a_batch_on_a_cli_device_is_one_configuration_session(driver: NetmikoDriver, connector: Connector) -> None:
    driver.apply_many("ant-core", [(Action.ISOLATE_SEGMENT, "ant-servers"), (Action.ISOLATE_SEGMENT, "ant-servers")])
    assert len(connector.last.config_sets) == 1
    assert connector.last.config_sets[0][0] == ["interface vlan120", "shutdown"] * 2


def test_a_pre_check_may_use_the_config_last_read_but_never_after_a_change(
    driver: NetmikoDriver, connector: Connector
) -> None:
    driver.backup_config("ant-core")  # reads `show running-config`: remembered
    reads = len(connector.last.sent)
    driver.in_force_map("ant-core", [(Action.ISOLATE_SEGMENT, "ant-servers")], fresh=False)
    assert len(connector.last.sent) == reads  # answered from the backup's read
    driver.apply("ant-core", Action.ISOLATE_SEGMENT, "ant-servers")
    driver.in_force_map("ant-core", [(Action.ISOLATE_SEGMENT, "ant-servers")], fresh=False)
    assert connector.last.sent[-1] == "show running-config"  # a change was sent: read again
    reads = len(connector.last.sent)
    driver.in_force_map("ant-core", [(Action.ISOLATE_SEGMENT, "ant-servers")])
    assert len(connector.last.sent) == reads + 1  # fresh (the default) always reads
