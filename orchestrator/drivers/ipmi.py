"""IPMI-over-LAN (RMCP+, "lanplus") power with ipmitool: one BMC per server.

ipmitool rather than pyghmi: it is the client BMC vendors test against and negotiates the cipher
suite the BMC offers (``Get Channel Cipher Suites``). pyghmi 1.6.19 proposes SHA-256 and takes the
BMC's acceptance for granted: against a BMC that answers with cipher suite 3 (SHA-1; virtualbmc,
many older BMCs) its login dies in RAKP 2 with a ``struct.error``. The password goes to ipmitool in its
environment (``-E``, ``IPMI_PASSWORD``), never on its command line; every argument is a separate argv
item (no shell).

- ``state(host)``: ``chassis power status`` (``off`` is stopped).
- ``power_off(host, graceful=True)``: ``chassis power soft`` (the ACPI power button); returns once the
  BMC took it: whoever verifies waits for "stopped". The BMC cannot say whether the OS will obey.
- ``power_off(host, graceful=False)``: ``chassis power off``, then waits (bounded) for off.
- ``power_on(host)``: ``chassis power on``, then waits (bounded) for on.
The target names the server in errors and evidence only: the controller is that server's BMC.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time

from orchestrator.drivers.base import PowerState
from orchestrator.drivers.power_controllers import CONTROLLER_POLL_INTERVAL_S, PowerController, scrub
from orchestrator.errors import AuthFailedError, DriverError, DriverTimeoutError, UnreachableError

POLL_S = 0.2
RETRIES = 2  # ipmitool's own retries of a lost UDP packet (-R)
AUTH_SIGNS = ("hmac is invalid", "unauthorized name", "invalid user", "insufficient privilege",
              "invalid role", "password", "no response from rakp 1")  # a BMC that ignores an unknown user
UNREACHABLE_SIGNS = ("get auth capabilities error", "no response", "unable to establish", "connection refused")


class IpmiLanPower:
    """Power for the server behind one IPMI BMC."""
    poll_interval_s = CONTROLLER_POLL_INTERVAL_S

    def __init__(self, controller: PowerController, ipmitool: str | None = None) -> None:
        if controller.type != "ipmi":
            raise DriverError(f"a {controller.type} controller given to the IPMI driver", target=controller.name)
        self.controller = controller
        self._ipmitool = ipmitool
        self._evidence: dict[str, dict[str, object]] = {}

    def close(self) -> None:
        """Nothing stays open: every ipmitool call opens and closes its own RMCP+ session."""

    def __enter__(self) -> IpmiLanPower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evidence(self, target: str) -> dict[str, object]:
        return dict(self._evidence.get(target, {}))

    def _run(self, target: str, *args: str) -> str:
        c = self.controller
        tool = self._ipmitool or shutil.which("ipmitool")
        if tool is None:
            raise DriverError("ipmitool is not installed", target=c.name, hint="apt-get install ipmitool (make setup)")
        password = c.password()
        per_try = max(1, math.ceil(c.connect_timeout_s / (RETRIES + 1)))
        argv = [tool, "-v", "-I", "lanplus", "-H", c.address, "-p", str(c.effective_port), "-U", c.username,
                "-E", "-N", str(per_try), "-R", str(RETRIES), *args]
        env = {**os.environ, "IPMI_PASSWORD": password}
        where = f"{c.address}:{c.effective_port}"
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=per_try * (RETRIES + 1) * 4 + 10, check=False)
        except subprocess.TimeoutExpired:
            raise UnreachableError(f"ipmitool got no answer from the BMC at {where} in time", target=c.name,
                                   hint="check the address, port (623) and that IPMI over LAN is enabled") from None
        except OSError as exc:
            raise DriverError(f"cannot run ipmitool: {exc.strerror}", target=c.name,
                              hint="reinstall ipmitool") from None
        if done.returncode == 0:
            return done.stdout
        lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines()
                 if ln.strip() and not ln.startswith("Loading IANA")]
        text = scrub("; ".join(lines)[-400:] or f"exit status {done.returncode}", password)
        low = text.lower()
        if any(s in low for s in AUTH_SIGNS):
            raise AuthFailedError(f"the BMC at {where} refused the login of user {c.username!r}: {text}",
                                  target=c.name, hint="check the BMC user, its privilege (operator or higher) and "
                                  "the password its reference holds")
        if any(s in low for s in UNREACHABLE_SIGNS):
            raise UnreachableError(f"the BMC at {where} does not answer: {text}", target=c.name,
                                   hint="check the address, port (623) and that IPMI over LAN is enabled")
        raise DriverError(f"ipmitool {' '.join(args)} failed on the BMC {c.name}: {text}", target=target,
                          hint="see the BMC's event log (ipmitool sel list)")

    def _power(self, target: str) -> str:
        out = self._run(target, "chassis", "power", "status")
        for line in out.splitlines():
            if line.startswith("Chassis Power is "):
                value = line.removeprefix("Chassis Power is ").strip()
                if value in ("on", "off"):
                    return value
        raise DriverError(f"the BMC reports no power state ({scrub(out.strip()[:100])!r})", target=target,
                          hint="see the BMC")

    def state(self, target: str) -> PowerState:
        return "stopped" if self._power(target) == "off" else "running"

    def _control(self, target: str, request: str, wait_for: str | None) -> None:
        before = self._power(target)
        if before == (wait_for or "off"):
            self._evidence[target] = {"power_state": before, "result": f"already {before}"}
            return
        started = time.monotonic()
        self._run(target, "chassis", "power", request)
        evidence: dict[str, object] = {"chassis_control": request, "power_state_before": before}
        if wait_for is None:
            self._evidence[target] = {**evidence, "result": "requested"}
            return
        deadline = started + self.controller.operation_timeout_s
        while (now := self._power(target)) != wait_for:
            if time.monotonic() > deadline:
                self._evidence[target] = {**evidence, "power_state": now}
                raise DriverTimeoutError(f"power is still {now} {self.controller.operation_timeout_s:.0f} s after "
                                         f"chassis power {request}", target=target, hint="see the BMC's event log")
            time.sleep(POLL_S)
        self._evidence[target] = {**evidence, "power_state": now, "seconds": round(time.monotonic() - started, 3)}

    def power_off(self, target: str, graceful: bool) -> None:
        self._control(target, "soft" if graceful else "off", None if graceful else "off")

    def power_on(self, target: str) -> None:
        self._control(target, "on", "on")
