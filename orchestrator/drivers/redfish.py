"""Redfish power (iDRAC, iLO, XClarity, OpenBMC...) over HTTPS with ``requests``.

Plain HTTPS against the DMTF Redfish schema rather than a client library: power needs four resources
(the service root, the Sessions collection, a ComputerSystem and its Reset action), ``requests`` gives
the TLS verification, timeouts and connection reuse, and the replies are JSON. (``sushy`` would bring
OpenStack's oslo/stevedore stack for the same four calls; DMTF's ``redfish`` library has no typed
errors to map.)

- ``state(system)``: the system's ``PowerState`` (``Off`` is stopped; On, PoweringOn/Off are not).
- ``power_off(system, graceful=True)``: ``ResetType`` ``GracefulShutdown`` (ACPI) if the system
  advertises it, else ``GracefulRefusedError`` and nothing is sent; returns once the BMC took it.
- ``power_off(system, graceful=False)``: ``ForceOff``; ``power_on``: ``On`` (else ``ForceOn``). Both
  wait (bounded) until ``PowerState`` says so; a 202 task monitor is followed.
Reset types are chosen from ``ResetType@Redfish.AllowableValues`` (or the action's ``ActionInfo``).

A target is a ``Systems`` member id (``"1"``, ``"System.Embedded.1"``); an empty target means the
only system of a single-system BMC. Log in: a session through the service root's ``Links.Sessions``
(``X-Auth-Token``, deleted by ``close()``) where the service has one, else HTTP basic auth.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from orchestrator.drivers.base import PowerState
from orchestrator.drivers.power_controllers import (
    CONTROLLER_POLL_INTERVAL_S,
    GracefulRefusedError,
    PowerController,
    scrub,
)
from orchestrator.errors import AuthFailedError, DriverError, DriverTimeoutError, UnreachableError

POLL_S = 0.1
RESET_ACTION = "#ComputerSystem.Reset"


class RedfishPower:
    """Power for the systems behind one Redfish service (one BMC, or a chassis manager)."""
    poll_interval_s = CONTROLLER_POLL_INTERVAL_S

    def __init__(self, controller: PowerController) -> None:
        if controller.type != "redfish":
            raise DriverError(f"a {controller.type} controller given to the Redfish driver", target=controller.name)
        self.controller = controller
        self._lock = threading.Lock()
        self._http: Any = None
        self._secret = ""
        self._session_uri: str | None = None
        self._systems: dict[str, str] | None = None  # member id -> @odata.id
        self._evidence: dict[str, dict[str, object]] = {}

    # ---- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, target: str, *, json: object = None,
                 ok: tuple[int, ...] = (200,), http: Any = None) -> Any:
        import requests

        c = self.controller
        url = path if path.startswith(("http://", "https://")) else c.endpoint + path
        try:
            response = (http or self._session()).request(method, url, json=json, allow_redirects=False,
                                                         verify=c.verify(),
                                                         timeout=(c.connect_timeout_s, c.operation_timeout_s))
        except requests.exceptions.SSLError as exc:
            why = "TLS certificate not trusted" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "TLS failed"
            raise DriverError(f"{c.endpoint}: {why}: {self._reason(exc)}", target=c.name,
                              hint="set ca_file to the CA that signed the BMC's certificate (or check the address)"
                              ) from None
        except requests.exceptions.Timeout:
            raise DriverTimeoutError(f"{c.endpoint} did not answer {method} {path} in time", target=target,
                                     hint="check the BMC (a busy BMC may need a longer operation timeout)") from None
        except requests.exceptions.RequestException as exc:
            raise UnreachableError(f"{c.endpoint} cannot be reached: {self._reason(exc)}", target=c.name,
                                   hint="check the address, port and the route to the BMC") from None
        if response.status_code == 401:
            raise AuthFailedError(f"{c.endpoint} refused the login of user {c.username!r} (HTTP 401)", target=c.name,
                                  hint="check the controller's username and the password its reference holds")
        if response.status_code not in ok:
            raise DriverError(f"{method} {path}: HTTP {response.status_code}: {self._error_text(response)}",
                              target=target, hint="see the BMC's log; check the user's role (power control)")
        return response

    def _reason(self, exc: BaseException) -> str:
        # requests nests urllib3's reason; its innermost text is the useful one
        inner: BaseException = exc
        while inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        reason = getattr(inner, "reason", None)
        return scrub(str(reason or inner), self._secret)[:300]

    def _error_text(self, response: Any) -> str:
        try:
            err = response.json().get("error", {})
            infos = [i.get("Message", "") for i in err.get("@Message.ExtendedInfo", []) if isinstance(i, dict)]
            text = "; ".join(m for m in [err.get("message", ""), *infos] if m)
        except (ValueError, AttributeError):
            text = response.text[:200]
        return scrub(text or response.reason or "no detail", self._secret)

    def _session(self) -> Any:
        with self._lock:
            if self._http is None:
                self._http = self._login()
            return self._http

    def _login(self) -> Any:
        import requests

        c = self.controller
        password = c.password()
        self._secret = password
        http = requests.Session()
        # the controller's own TLS settings only: no CA bundle, proxy or .netrc from the environment
        # (REQUESTS_CA_BUNDLE would otherwise replace the controller's ca_file)
        http.trust_env = False
        http.verify = c.verify()
        http.headers.update({"Accept": "application/json", "OData-Version": "4.0"})
        try:
            root = self._request("GET", "/redfish/v1", c.name, http=http).json()
            sessions = (root.get("Links") or {}).get("Sessions", {}).get("@odata.id")
            if sessions:
                r = self._request("POST", sessions, c.name, json={"UserName": c.username, "Password": password},
                                  ok=(200, 201, 202, 204, 404, 405, 501), http=http)
                token = r.headers.get("X-Auth-Token")
                if r.status_code in (200, 201, 202, 204) and token:
                    http.headers["X-Auth-Token"] = token
                    self._session_uri = r.headers.get("Location")
                    return http
            http.auth = requests.auth.HTTPBasicAuth(c.username.encode(), password.encode())  # no sessions: basic, UTF-8
            self._request("GET", root.get("Systems", {}).get("@odata.id", "/redfish/v1/Systems"), c.name, http=http)
            return http
        except BaseException:
            http.close()
            raise

    def close(self) -> None:
        """Delete the session (if one was opened) and drop the connections."""
        with self._lock:
            http, self._http = self._http, None
            uri, self._session_uri = self._session_uri, None
        if http is None:
            return
        if uri:
            # a session the BMC already dropped, or a BMC gone: it expires on its own
            with contextlib.suppress(DriverError):
                self._request("DELETE", uri, self.controller.name, ok=(200, 202, 204, 404), http=http)
        http.close()

    def __enter__(self) -> RedfishPower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- systems -------------------------------------------------------------------------------

    def _system_uri(self, target: str) -> str:
        for fresh in (False, True):
            if fresh or self._systems is None:
                members = self._request("GET", "/redfish/v1/Systems", target).json().get("Members", [])
                uris = [m["@odata.id"] for m in members if isinstance(m, dict) and "@odata.id" in m]
                self._systems = {u.rstrip("/").rsplit("/", 1)[-1]: u for u in uris}
            if not target and len(self._systems) == 1:
                return next(iter(self._systems.values()))
            if target in self._systems:
                return self._systems[target]
        known = ", ".join(sorted(self._systems or {})) or "none"
        raise DriverError(f"{self.controller.name} has no system {target!r} (its systems: {known})",
                          target=target or self.controller.name, hint="set the host's power: system to one of them")

    def _system(self, target: str) -> tuple[str, dict[str, Any]]:
        uri = self._system_uri(target)
        return uri, self._request("GET", uri, target).json()

    def _reset_types(self, system: dict[str, Any], target: str) -> tuple[str, list[str] | None]:
        action = (system.get("Actions") or {}).get(RESET_ACTION)
        if not isinstance(action, dict) or "target" not in action:
            raise DriverError("the system offers no ComputerSystem.Reset action", target=target,
                              hint="this BMC cannot power the system: use another controller or power: manual")
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if allowed is None and action.get("@Redfish.ActionInfo"):
            info = self._request("GET", action["@Redfish.ActionInfo"], target).json()
            for p in info.get("Parameters", []):
                if p.get("Name") == "ResetType":
                    allowed = p.get("AllowableValues")
        return action["target"], list(allowed) if isinstance(allowed, list) else None

    def _reset(self, target: str, wanted: list[str], graceful: bool) -> tuple[str, dict[str, object]]:
        uri, system = self._system(target)
        action, allowed = self._reset_types(system, target)
        choice = next((w for w in wanted if allowed is None or w in allowed), None)
        evidence: dict[str, object] = {"system": uri, "power_state": system.get("PowerState"),
                                       "allowed": allowed}
        if choice is None:
            self._evidence[target] = {**evidence, "result": "refused"}
            error = GracefulRefusedError if graceful else DriverError
            raise error(f"the system does not offer {' or '.join(wanted)} (it offers {', '.join(allowed or [])})",
                        target=target, hint="a hard power off follows" if graceful else "power it by hand")
        started = time.monotonic()
        r = self._request("POST", action, target, json={"ResetType": choice}, ok=(200, 202, 204))
        if r.status_code == 202 and r.headers.get("Location"):
            self._await_task(r.headers["Location"], target)
        evidence.update({"reset_type": choice, "http_status": r.status_code,
                         "seconds": round(time.monotonic() - started, 3)})
        return uri, evidence

    def _await_task(self, monitor: str, target: str) -> None:
        deadline = time.monotonic() + self.controller.operation_timeout_s
        while self._request("GET", monitor, target, ok=(200, 201, 202, 204)).status_code == 202:
            if time.monotonic() > deadline:
                raise DriverTimeoutError(f"the BMC's task {monitor} did not finish in time", target=target,
                                         hint="see the BMC's task list")
            time.sleep(POLL_S)

    def _await_state(self, uri: str, target: str, wanted: str, evidence: dict[str, object]) -> None:
        started = time.monotonic()
        deadline = started + self.controller.operation_timeout_s
        while True:
            state = self._request("GET", uri, target).json().get("PowerState")
            if state == wanted:
                self._evidence[target] = {**evidence, "power_state": state,
                                          "seconds": round(time.monotonic() - started + float(
                                              str(evidence.get("seconds", 0))), 3)}
                return
            if time.monotonic() > deadline:
                self._evidence[target] = {**evidence, "power_state": state}
                raise DriverTimeoutError(f"PowerState is still {state} {self.controller.operation_timeout_s:.0f} s "
                                         f"after {evidence.get('reset_type')}", target=target,
                                         hint="see the BMC's log")
            time.sleep(POLL_S)

    # ---- the power-driver interface ------------------------------------------------------------

    def evidence(self, target: str) -> dict[str, object]:
        return dict(self._evidence.get(target, {}))

    def state(self, target: str) -> PowerState:
        _, system = self._system(target)
        power = system.get("PowerState")
        if not isinstance(power, str):
            raise DriverError("the system reports no PowerState", target=target, hint="see the BMC")
        return "stopped" if power == "Off" else "running"

    def power_off(self, target: str, graceful: bool) -> None:
        _, system = self._system(target)
        if system.get("PowerState") == "Off":
            self._evidence[target] = {"power_state": "Off", "result": "already off"}
            return
        if graceful:
            _, evidence = self._reset(target, ["GracefulShutdown"], graceful=True)
            self._evidence[target] = evidence
            return
        uri, evidence = self._reset(target, ["ForceOff"], graceful=False)
        self._await_state(uri, target, "Off", evidence)

    def power_on(self, target: str) -> None:
        _, system = self._system(target)
        if system.get("PowerState") == "On":
            self._evidence[target] = {"power_state": "On", "result": "already on"}
            return
        uri, evidence = self._reset(target, ["On", "ForceOn"], graceful=False)
        self._await_state(uri, target, "On", evidence)
