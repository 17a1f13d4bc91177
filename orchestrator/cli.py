"""The command line: parse, call the API, render for humans or as JSON, map errors to exit codes.

The only module that prints or exits. Exit codes (DESIGN.md §5): 0 done and verified; 1 ran but
something failed verification or was left undone; 2 bad input; 3 refused by a safety interlock.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator import __version__
from orchestrator.config import Settings
from orchestrator.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERLOCK,
    EXIT_OK,
    InventoryError,
    OrchestratorError,
)
from orchestrator.model import Inventory, Mode, Plan, Scope, Step
from orchestrator.storage import atomic_write

if TYPE_CHECKING:
    from rich.status import Status

    from orchestrator.drivers.ssh import SshDriver
    from orchestrator.executor import ApprovalPolicy, RunOptions, RunResult
    from orchestrator.health.check import HealthCheck
    from orchestrator.lab import LabStatus
    from orchestrator.onboarding.draft import Draft
    from orchestrator.power_status import PowerStatus
    from orchestrator.readiness import Readiness

console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else 160)

F = TypeVar("F", bound=Callable[..., object])  # a click command function, decorated
T = TypeVar("T")

DEFAULT_LAB_INVENTORY = "inventories/lab.yml"
STATUS_COLOURS = {"verified": "green", "failed": "red", "skipped": "yellow", "unproven": "magenta",
                  "completed": "green", "interrupted": "yellow"}


def lit(value: object) -> str:
    """A value shown as itself inside rich markup: inventory strings, device replies, host output and
    error messages are never interpreted as markup (a ``[/b]`` from a hostile host is text)."""
    return escape(str(value))


class Exit(Exception):  # noqa: N818 - carries an exit status up to main()
    def __init__(self, code: int) -> None:
        self.code = code


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def settings_from(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj or {}
    return Settings.resolve(obj.get("state_dir"), obj.get("forks"))


def load(path: str, strict: bool = False) -> Inventory:
    from orchestrator.inventory import validate_file

    result = validate_file(path, strict=strict)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/] {lit(warning.render())}", soft_wrap=True)
    return result.inventory


def scope_options(func: F) -> F:
    func = click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only this host (repeatable).")(func)
    func = click.option("--segment", "segments", multiple=True, metavar="SEGMENT",
                        help="Only this segment and its hosts (repeatable).")(func)
    func = click.option("--campus", "campuses", multiple=True, metavar="CAMPUS",
                        help="Only this campus (repeatable).")(func)
    return func


def make_scope(campuses: Sequence[str], segments: Sequence[str], hosts: Sequence[str]) -> Scope:
    return Scope(campuses=tuple(sorted(set(campuses))), segments=tuple(sorted(set(segments))),
                 hosts=tuple(sorted(set(hosts))))


# --------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="orchestrator")
@click.option("--state-dir", metavar="DIR", help="Where runs, baselines and the lock live "
              "(default ./.orchestrator, or $ORCHESTRATOR_STATE_DIR).")
@click.option("--forks", type=click.IntRange(1, 512), default=None, help="Parallel steps per wave (default 32).")
@click.pass_context
def cli(ctx: click.Context, state_dir: str | None, forks: int | None) -> None:
    """Contain, shut down and restore a hospital campus network, verified step by step.

    Emergency: `orchestrator shutdown INVENTORY` (or `--contain-only`). Rehearsal: `orchestrator drill`.
    """
    ctx.obj = {"state_dir": state_dir, "forks": forks}


@cli.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate(inventory: str, strict: bool, as_json: bool) -> None:
    """Check an inventory; report every problem with file, line, key and a fix."""
    from orchestrator.inventory import validate_file

    try:
        result = validate_file(inventory, strict=strict)
    except InventoryError as exc:
        if as_json:
            emit_json({"valid": False, "problems": [p.as_dict() for p in exc.problems]})
            raise Exit(EXIT_BAD_INPUT) from None
        raise
    inv = result.inventory
    if as_json:
        emit_json({"valid": True, "inventory": inventory, "sha256": inv.sha256,
                   "problems": [p.as_dict() for p in result.warnings],
                   "counts": {"campuses": len(inv.campuses), "segments": len(inv.segments),
                              "devices": len(inv.devices), "links": len(inv.links), "hosts": len(inv.hosts),
                              "islands": len(inv.islands)}})
        return
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/] {lit(warning.render())}", soft_wrap=True)
    console.print(f"[green]valid[/] {lit(inventory)}: {len(inv.campuses)} campuses, {len(inv.segments)} segments, "
                  f"{len(inv.devices)} devices, {len(inv.links)} links, {len(inv.hosts)} hosts, "
                  f"{len(inv.islands)} islands; {len(inv.keep_reasons())} hosts keep running")


@cli.group("inventory")
def inventory_group() -> None:
    """The inventory format and exports."""


@inventory_group.command("schema")
def inventory_schema_cmd() -> None:
    """Print the inventory's JSON Schema (for editors)."""
    from orchestrator.inventory import inventory_schema

    emit_json(inventory_schema())


@inventory_group.command("ansible")
@click.argument("inventory", type=click.Path(dir_okay=False))
def inventory_ansible_cmd(inventory: str) -> None:
    """Export an Ansible inventory for the manual fallback playbooks (JSON, read by Ansible's YAML
    inventory plugin; every inventory string marked unsafe, so Ansible never templates it)."""
    from orchestrator.drivers.ansible_inventory import dumps, to_ansible_inventory

    click.echo(dumps(to_ansible_inventory(load(inventory))), nl=False)


# ---- from the estate to an inventory (orchestrator/onboarding) --------------------------------

def base_options(func: F) -> F:
    func = click.option("--segments", "segments_file", type=click.Path(dir_okay=False, exists=True),
                        help="A YAML file with segments: (and site:, management:, credentials: if it has them).")(func)
    func = click.option("--into", type=click.Path(dir_okay=False, exists=True), metavar="INVENTORY",
                        help="Merge into this inventory (or skeleton): its segments place the addresses; "
                        "comments and hand-written keys are kept.")(func)
    func = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                        help="Where the draft is written (0600; may be the --into file itself).")(func)
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")(func)


@inventory_group.group("import")
def inventory_import_group() -> None:
    """Draft an inventory from what the hospital already has (vCenter, a CMDB export)."""


@inventory_import_group.command("vsphere")
@click.option("--controller", "url", required=True, metavar="URL", help="https://vcenter.example.org[:port]")
@click.option("--credentials", "credential", required=True, metavar="NAME",
              help="The credential (under credentials: of --into / --segments) that logs in: username and "
              "password_env or password_file, by reference.")
@click.option("--map", "mapping_file", type=click.Path(dir_okay=False, exists=True),
              help="Mapping file: defaults (credentials), folders / attributes -> campus, role, tier; datastores.")
@click.option("--controller-name", metavar="NAME", help="Its name under power_controllers: (default: vcenter).")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True),
              help="The CA that signed vCenter's certificate (default: the system's CAs; always verified).")
@click.option("--allow-http", is_flag=True, help="Allow http:// (a lab simulator only).")
@base_options
def inventory_import_vsphere_cmd(url: str, credential: str, mapping_file: str | None, controller_name: str | None,
                                 ca_file: str | None, allow_http: bool, output: str, into: str | None,
                                 segments_file: str | None, as_json: bool) -> None:
    """Every VM and hypervisor vCenter knows, as a draft inventory. What cannot be decided (no address,
    an address in no segment, an unknown OS) is listed and written as commented TODO(import) entries."""
    from orchestrator.onboarding.sources import import_vsphere

    draft = import_vsphere(url, credential, output, into=into, segments=segments_file, mapping_file=mapping_file,
                           controller_name=controller_name, ca_file=ca_file, allow_http=allow_http)
    render_draft(draft, output, as_json)


@inventory_import_group.command("csv")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--map", "mapping_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Mapping file: columns: {name: TITLE, address: TITLE, ...}, separator, defaults.")
@base_options
def inventory_import_csv_cmd(file: str, mapping_file: str, output: str, into: str | None,
                             segments_file: str | None, as_json: bool) -> None:
    """A CMDB / spreadsheet export as a draft inventory. Every wrong cell is reported at once (row and
    column) and nothing is written."""
    from orchestrator.onboarding.sources import import_csv

    render_draft(import_csv(file, mapping_file, output, into=into, segments=segments_file), output, as_json)


def render_draft(draft: Draft, output: str, as_json: bool) -> None:
    if as_json:
        emit_json({"output": output, **draft.as_dict()})
        return
    console.print(f"[green]written[/] {lit(output)}: {len(draft.added)} hosts added, {len(draft.updated)} updated, "
                  f"{len(draft.undecided)} undecided", soft_wrap=True)
    for name, keys in sorted(draft.updated.items()):
        console.print(f"updated {lit(name)}: {lit(', '.join(keys))}", soft_wrap=True)
    for name in draft.gone:
        console.print(f"[yellow]gone from the estate[/] {lit(name)} (still in the inventory: remove it by hand)",
                      soft_wrap=True)
    for skipped in draft.skipped:
        console.print(f"skipped {lit(skipped)}", soft_wrap=True)
    if draft.undecided:
        console.print(f"[yellow]undecided[/] ({len(draft.undecided)}): written commented out under "
                      "'# TODO(import)' in hosts:; fill them in, uncomment, then `orchestrator validate`:")
        for r in draft.undecided:
            console.print(f"  {lit(r.name)} ({lit(r.source)}): {lit('; '.join(r.todos))}", soft_wrap=True)


@inventory_group.command("diff")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@click.option("--against", required=True, type=click.Choice(["vsphere", "csv"]))
@click.option("--controller", metavar="NAME", help="vsphere: which power_controllers entry (default: the only one).")
@click.option("--file", "csv_file", type=click.Path(dir_okay=False, exists=True), help="csv: the export.")
@click.option("--map", "mapping_file", type=click.Path(dir_okay=False, exists=True), help="The mapping file.")
@click.option("--json", "as_json", is_flag=True)
def inventory_diff_cmd(inventory_path: str, against: str, controller: str | None, csv_file: str | None,
                       mapping_file: str | None, as_json: bool) -> None:
    """Read-only: hosts in the estate but not in the inventory (a shutdown would forget them), hosts gone,
    changed addresses, OS or hypervisor. Exit 1 when anything would change what a shutdown does."""
    from orchestrator.onboarding.sources import diff_csv, diff_vsphere

    inventory = load(inventory_path)
    found = (diff_vsphere(inventory, controller, mapping_file) if against == "vsphere"
             else diff_csv(inventory, csv_file, mapping_file))
    if as_json:
        emit_json(found.as_dict())
    else:
        for r in found.missing:
            console.print(f"[red]missing[/] {lit(r.name)} ({lit(r.source)}, {lit(r.fields.get('address'))}): in the "
                          "estate, not in the inventory: a shutdown would forget it", soft_wrap=True)
        for name in found.gone:
            console.print(f"[yellow]gone[/] {lit(name)}: in the inventory, no longer in the estate", soft_wrap=True)
        for c in found.changed:
            console.print(f"[yellow]changed[/] {lit(c.host)} {lit(c.key)}: inventory {lit(c.inventory)}, "
                          f"estate {lit(c.estate)}", soft_wrap=True)
        if not found.would_change_shutdown:
            console.print(f"[green]no drift[/] against {lit(found.source)}")
    raise Exit(EXIT_FAILED if found.would_change_shutdown else EXIT_OK)


@inventory_group.command("check-reach")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@scope_options
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.5, 60), default=5.0, show_default=True,
              help="Seconds per connection.")
@click.option("--parallel", type=click.IntRange(1, 128), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def inventory_check_reach_cmd(inventory_path: str, campuses: tuple[str, ...], segments: tuple[str, ...],
                              hosts: tuple[str, ...], timeout_s: float, parallel: int, as_json: bool) -> None:
    """Read-only preflight: devices answer with their pinned key and prompt and have the links' and
    segments' interfaces; hosts answer SSH with their pinned key (windows: their power controller).
    Exit 1 when anything would fail."""
    from orchestrator.onboarding.reach_check import check_reach

    report = check_reach(load(inventory_path), make_scope(campuses, segments, hosts), timeout_s=timeout_s,
                         parallel=parallel)
    if as_json:
        emit_json(report.as_dict())
    else:
        table = Table(title=Text(f"what would fail ({len(report.failed)} of {len(report.checks)} checks)"))
        for column in ("kind", "target", "check", "detail"):
            table.add_column(column)
        for c in report.failed:
            table.add_row(Text(c.kind), Text(c.target), Text(c.check), Text(c.detail, style="red"))
        if report.failed:
            console.print(table)
        else:
            console.print(f"[green]all {len(report.checks)} checks pass[/]")
    raise Exit(EXIT_FAILED if report.failed else EXIT_OK)


@cli.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--mode", type=click.Choice([m.value for m in Mode]), required=True)
@scope_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan document (DESIGN §4).")
@click.option("-o", "output", type=click.Path(dir_okay=False), help="Write the plan document to FILE.")
@click.pass_context
def plan(ctx: click.Context, inventory: str, mode: str, campuses: tuple[str, ...], segments: tuple[str, ...],
         hosts: tuple[str, ...], as_json: bool, output: str | None) -> None:
    """Build the ordered plan for contain, shutdown or restore (nothing is touched). A restore plan also
    says, per host, what will prove it clean and which hosts will stay isolated unless someone attests."""
    from orchestrator.planner import build_plan, plan_to_json
    from orchestrator.readiness import plan_document_with_readiness, restore_readiness

    loaded = load(inventory)
    the_plan = build_plan(loaded, Mode(mode), make_scope(campuses, segments, hosts))
    readiness = restore_readiness(loaded, the_plan, settings_from(ctx)) if the_plan.mode is Mode.RESTORE else None
    text = plan_to_json(the_plan) if readiness is None else plan_document_with_readiness(the_plan, readiness)
    if output:
        atomic_write(Path(output), text)  # private (0600), whole or absent
    if as_json:
        click.echo(text, nl=False)
    else:
        render_plan(the_plan)
        if readiness is not None:
            render_readiness(readiness)
        if output:
            console.print(f"plan written to {output}", markup=False)


def render_plan(the_plan: Plan) -> None:
    table = Table(title=Text(f"{the_plan.mode.value} plan {the_plan.plan_id} for {the_plan.site}"), show_lines=False)
    table.add_column("wave", justify="right")
    table.add_column("phase")
    table.add_column("action")
    table.add_column("targets")
    for wave in the_plan.waves:
        by_action: dict[str, list[str]] = {}
        for step in wave.steps:
            by_action.setdefault(step.action.value, []).append(step.target)
        for i, (action, targets) in enumerate(by_action.items()):
            table.add_row(str(wave.index) if i == 0 else "", wave.phase.value if i == 0 else "", Text(action),
                          Text(", ".join(targets)))
    console.print(table)
    ordered = [step for step in the_plan.steps() if step.reason]
    if ordered:
        console.print("[bold]Why hypervisors and storage are where they are[/]:")
        for step in ordered:
            console.print(f"  wave {_wave_of(the_plan, step.id)} {step.id}: {step.reason}", markup=False,
                          soft_wrap=True)
    if the_plan.kept:
        console.print("[bold]Stays running[/] (never powered off; its segment is still isolated):")
        for host, why in the_plan.kept.items():
            console.print(f"  {host}: {why}", markup=False, soft_wrap=True)
    console.print(f"{len(the_plan.steps())} steps in {len(the_plan.waves)} waves; "
                  f"inventory sha256 {the_plan.inventory_sha256[:12]}", markup=False)


def render_readiness(readiness: Readiness, run_id: str = "RUN_ID") -> None:
    """Per host of a restore: what will prove it clean; then the hosts that will stay isolated unless attested."""
    table = Table(title="what will prove each host clean")
    for column in ("tier", "host", "integrity", "health", "suites"):
        table.add_column(column)
    for h in readiness.hosts:
        proof = {"baseline": Text(f"baseline of {h.baseline_taken}"),
                 "attestation-required": Text(f"ATTESTATION REQUIRED: {h.why}", style="magenta"),
                 }.get(h.proof, Text(f"REFUSED: {h.why}", style="red"))
        health = ", ".join([*h.services, *(f"port {p}" for p in h.ports)]) or "-"
        table.add_row(str(h.tier), Text(h.host), proof, Text(health), Text(", ".join(h.suites) or "-"))
    console.print(table)
    for segment, names in readiness.held_segments.items():
        console.print(f"[magenta]stays isolated unless attested[/]: segment {lit(segment)} ({lit(', '.join(names))}): "
                      f"orchestrator attest {lit(run_id)} HOST --claim clean --by NAME --reason TEXT, then resume",
                      soft_wrap=True)
    if readiness.refused:
        console.print(f"[red]will be quarantined[/] (a baseline exists and fails its check; no attestation "
                      f"clears it): {lit(', '.join(readiness.refused))}", soft_wrap=True)


def _wave_of(the_plan: Plan, step_id: str) -> int:
    return next(w.index for w in the_plan.waves if any(s.id == step_id for s in w.steps))


# --------------------------------------------------------------------------------------------
# Lab
# --------------------------------------------------------------------------------------------


@cli.group()
def lab() -> None:
    """The rehearsal lab: real machines built from an inventory (systemd-nspawn, or Vagrant VMs)."""


def provider_option(func: F) -> F:
    return click.option(
        "--provider",
        type=click.Choice(["nspawn", "vagrant"]),
        default="nspawn",
        show_default=True,
        help="nspawn: containers (CI, Linux workstations); vagrant: VMs through Vagrant and libvirt (laptops).",
    )(func)


@dataclass(frozen=True)
class LabProvider:
    """One lab provider's three operations (``--provider``): nspawn containers or Vagrant VMs."""

    up: Callable[[Inventory], LabStatus]
    down: Callable[[Inventory | None], None]
    status: Callable[[Inventory], LabStatus]


def lab_provider(name: str) -> LabProvider:
    """The provider ``--provider NAME`` selects (imported only when used)."""
    if name == "vagrant":
        from orchestrator.lab.vm import vm_lab_down, vm_lab_status, vm_lab_up

        def progress(line: str) -> None:  # on stderr: stdout stays the status (--json)
            err_console.print(f"vm lab: {line}", markup=False, highlight=False, soft_wrap=True)

        return LabProvider(up=lambda inventory: vm_lab_up(inventory, progress=progress), down=vm_lab_down,
                           status=vm_lab_status)
    from orchestrator.lab import lab_down, lab_status, lab_up

    return LabProvider(up=lab_up, down=lab_down, status=lab_status)


@lab.command("up")
@click.argument("inventory", default=DEFAULT_LAB_INVENTORY, type=click.Path(dir_okay=False))
@provider_option
@click.option("--json", "as_json", is_flag=True)
def lab_up_cmd(inventory: str, provider: str, as_json: bool) -> None:
    """Build and boot the lab (idempotent)."""
    up = lab_provider(provider).up
    status = up(load(inventory))
    render_lab(status, as_json)
    if not as_json and status.timings:
        console.print("lab up: " + ", ".join(f"{k} {v:.1f} s" for k, v in status.timings.items()))


@lab.command("down")
@click.argument("inventory", default=None, required=False, type=click.Path(dir_okay=False))
@provider_option
def lab_down_cmd(inventory: str | None, provider: str) -> None:
    """Tear the lab down: containers (or VMs), overlays, bridges (or libvirt networks), routes, processes."""
    down = lab_provider(provider).down
    down(load(inventory) if inventory else None)
    console.print("lab is down")


@lab.command("status")
@click.argument("inventory", default=DEFAULT_LAB_INVENTORY, type=click.Path(dir_okay=False))
@provider_option
@click.option("--json", "as_json", is_flag=True)
def lab_status_cmd(inventory: str, provider: str, as_json: bool) -> None:
    """Show every lab machine, its state, leader PID (a VM: its hypervisor's) and how to log in."""
    status = lab_provider(provider).status
    render_lab(status(load(inventory)), as_json)


def render_lab(status: LabStatus, as_json: bool) -> None:
    if as_json:
        emit_json(status.as_dict())
        return
    table = Table(title="lab machines")
    for col in ("name", "kind", "state", "pid", "management address"):
        table.add_column(col)
    for m in status.machines:
        colour = "green" if m.state == "running" else "red"
        table.add_row(Text(str(m.name)), Text(str(m.kind)), Text(str(m.state), style=colour),
                      Text(str(m.pid or "-")), Text(str(m.management_address)))
    console.print(table)


# --------------------------------------------------------------------------------------------
# Running plans
# --------------------------------------------------------------------------------------------


Record = Mapping[str, Any]  # a journal record: JSON, as the journal wrote it


def _wave_started(r: Record) -> str:
    return f" [bold]wave {lit(r.get('wave'))}[/] ({lit(r.get('phase'))}): {len(r.get('steps') or [])} step(s)"


def _step_finished(r: Record) -> str:
    status = str(r.get("status"))
    colour = STATUS_COLOURS.get(status, "white")
    extra = " (already in force)" if r.get("already") else ""
    extra += " [magenta](escalated to power off)[/]" if r.get("escalated") else ""
    err = f" — {lit(r.get('error'))}" if r.get("error") else ""
    return f"   [{colour}]{lit(f'{status:8}')}[/] {lit(r.get('step_id'))}{extra}{err}"


def _escalation(r: Record) -> str:
    return f"   [magenta]escalate[/] {lit(r.get('host'))}: {lit(r.get('to'))} ({lit(r.get('reason'))})"


def _quarantine(r: Record) -> str:
    off = "powered off" if r.get("powered_off") else "NOT powered off"
    return f"   [red]quarantine[/] {lit(r.get('host'))} ({off}): {lit(r.get('reason'))}"


def _clearance(r: Record) -> str:
    return f"   [cyan]cleared[/] {lit(r.get('host'))} for {lit(r.get('segment'))}: {lit(r.get('text'))}"


def _milestone(r: Record) -> str:
    elapsed_s = r.get("elapsed_s")
    after = f"{elapsed_s:.1f}" if isinstance(elapsed_s, int | float) else lit(elapsed_s)
    return f" [bold cyan]{lit(r.get('name'))}[/] after {after} s"


def _gate_approved(r: Record) -> str:
    return f"   [green]approved[/] {lit(r.get('gate'))} by {lit(r.get('approver'))} ({lit(r.get('how'))})"


def _observer_error(r: Record) -> str:
    return (f"   [yellow]observer error[/] {lit(r.get('observer'))}: {lit(r.get('error_type'))}: "
            f"{lit(r.get('message'))} (journaled; the run goes on)")


# record type -> (its progress line after the elapsed time, in rich markup; soft-wrapped?)
PROGRESS_LINES: dict[str, tuple[Callable[[Record], str], bool]] = {
    "wave-started": (_wave_started, False),
    "step-finished": (_step_finished, True),
    "escalation": (_escalation, True),
    "quarantine": (_quarantine, True),
    "clearance": (_clearance, True),
    "milestone": (_milestone, False),
    "gate-approved": (_gate_approved, True),
    "observer-error": (_observer_error, True),
}


class ProgressView:
    """Human progress: one line per wave and per finished step, with elapsed time; on a terminal a
    live line shows what is running now. With --json: every journal record as one JSON line.

    Everything a record carries (step errors, device replies, host names, reasons) is printed as
    text, never as rich markup: a ``[/b]`` from a hostile host is shown, not interpreted."""

    def __init__(self, as_json: bool) -> None:
        import time

        self.as_json = as_json
        self.name = "json printer" if as_json else "progress view"  # how the journal names it (observer-error)
        self.t0 = time.monotonic()
        self.running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._status: Status | None = None
        if not as_json and sys.stdout.isatty():
            self._status = console.status("starting")
            self._status.start()

    def elapsed(self) -> str:
        import time

        return f"{time.monotonic() - self.t0:7.1f}s"

    def __call__(self, record: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(record, ensure_ascii=False, default=str, sort_keys=True))
            return
        kind = str(record.get("type"))
        with self._lock:
            if kind == "step-started":
                self.running[str(record.get("step_id"))] = 0.0
            elif kind == "step-finished":
                self.running.pop(str(record.get("step_id")), None)
            if kind in PROGRESS_LINES:
                line, soft_wrap = PROGRESS_LINES[kind]
                console.print(f"{self.elapsed()}{line(record)}", soft_wrap=soft_wrap)
            if self._status is not None:
                now = ", ".join(sorted(self.running)[:6]) or "waiting"
                more = f" (+{len(self.running) - 6})" if len(self.running) > 6 else ""
                self._status.update(Text(f"{self.elapsed()} running now: {now}{more}"))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()


def install_stop_handlers() -> threading.Event:
    import signal

    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            return
        stop.set()
        err_console.print(f"\n[yellow]{signal.Signals(signum).name}[/]: finishing the steps in flight, "
                          "journaling them, then stopping; continue later with `orchestrator resume RUN_ID`")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def run_with_progress(as_json: bool, run: Callable[[ProgressView, threading.Event], T]) -> T:
    """``run(view, stop)`` under the progress view (or the JSON printer) and the SIGINT/SIGTERM handlers
    that ask a run to stop after the steps in flight; the view is closed however ``run`` ends."""
    view = ProgressView(as_json)
    stop = install_stop_handlers()
    try:
        return run(view, stop)
    finally:
        view.close()


def ask(step: Step, summary: str) -> bool:
    """The operator's answer at a restore gate (``--approve each``): no unless they say yes."""
    return click.confirm(f"gate {step.target}: {summary}. Approve?", default=False)


def run_options(ctx: click.Context, *, dry_run: bool = False, approve: ApprovalPolicy | None = None) -> RunOptions:
    """The executor's options from the global flags; with ``approve``, gates are asked through :func:`ask`."""
    from orchestrator.executor import RunOptions
    from orchestrator.journal import current_operator

    settings = settings_from(ctx)
    if approve is None:
        return RunOptions(forks=settings.forks, operator=current_operator(), dry_run=dry_run)
    return RunOptions(forks=settings.forks, operator=current_operator(), dry_run=dry_run, approve=approve,
                      approver=ask)


def render_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"type": "result", "run_id": result.run_id, "status": result.status,
                               "time_to_containment_s": result.time_to_containment_s,
                               "time_to_shutdown_s": result.time_to_shutdown_s,
                               "quarantined": dict(result.quarantined),
                               "left": [{"step_id": s, "reason": r} for s, r in result.left],
                               "attested": result.attested}))
        return
    colour = STATUS_COLOURS.get(result.status, "red")
    console.print(f"\nrun [bold]{lit(result.run_id)}[/]: [{colour}]{lit(result.status)}[/]")
    if result.time_to_containment_s is not None:
        console.print(f"  time to containment: {result.time_to_containment_s:.1f} s")
    if result.time_to_shutdown_s is not None:
        console.print(f"  time to shutdown:    {result.time_to_shutdown_s:.1f} s")
    for host, why in result.quarantined.items():
        console.print(f"  [red]quarantined[/] {lit(host)}: {lit(why)}", soft_wrap=True)
    for step_id, said in result.attested.items():
        console.print(f"  [magenta]ATTESTED[/] {lit(step_id)}: {lit(said)}", soft_wrap=True)
    unproven = {s for s, _ in result.unproven if s not in result.attested}
    if unproven:
        console.print(f"  [magenta]UNPROVEN[/] (done as far as the devices say, not proven by any probe: "
                      f"not verified): {lit(', '.join(sorted(unproven)))}", soft_wrap=True)
    if result.left:
        console.print("  left undone or unproven:")
        for step_id, reason in result.left:
            console.print(f"    {step_id}: {reason}", soft_wrap=True, markup=False)
    console.print(f"  journal: {result.journal_path}", markup=False)
    if result.status == "interrupted":
        console.print(f"  continue with: orchestrator resume {result.run_id}", markup=False)


def finish(result: RunResult, as_json: bool) -> NoReturn:
    """Show a run's result and exit with its code (0 completed, 1 anything else)."""
    render_result(result, as_json)
    raise Exit(result.exit_code)


def execute(ctx: click.Context, inventory: Inventory, the_plan: Plan, options: RunOptions, as_json: bool) -> None:
    from orchestrator.runs import start_run

    settings = settings_from(ctx)
    argv = ["orchestrator", *sys.argv[1:]]
    finish(run_with_progress(as_json, lambda view, stop: start_run(
        inventory, the_plan, settings, options, observers=[view], stop_event=stop, argv=argv)), as_json)


def confirm_site(inventory: Inventory, the_plan: Plan, yes: bool) -> None:
    from orchestrator.errors import SafetyInterlock

    if yes:
        return
    if not sys.stdin.isatty():
        raise SafetyInterlock("no terminal to confirm on", hint="pass --yes to confirm non-interactively")
    answer = click.prompt(f"Type the site name ({inventory.site.name}) to {the_plan.mode.value} it", default="",
                          show_default=False)
    if answer.strip() != inventory.site.name:
        raise SafetyInterlock("confirmation did not match the site name; nothing was touched")


@cli.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Walk the plan, journal it, touch nothing.")
@click.option("--inventory", "inventory_path", type=click.Path(dir_okay=False),
              help="The inventory (default: the path recorded in the plan).")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def apply(ctx: click.Context, plan_file: str, yes: bool, dry_run: bool, inventory_path: str | None,
          as_json: bool) -> None:
    """Apply a saved plan (refused if the inventory changed since)."""
    from orchestrator.runs import check_plan_is_current, load_plan_file

    the_plan = load_plan_file(plan_file)
    inventory = load(inventory_path or the_plan.inventory_path)
    check_plan_is_current(the_plan, inventory)  # re-planned and compared: an edited plan is refused
    if not as_json:
        render_plan(the_plan)
    if not dry_run:
        confirm_site(inventory, the_plan, yes)
    execute(ctx, inventory, the_plan, run_options(ctx, dry_run=dry_run), as_json)


@cli.command()
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@click.option("--contain-only", is_flag=True, help="Cut links and isolate segments; power nothing off.")
@scope_options
@click.option("--yes", is_flag=True, help="Do not ask to type the site name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def shutdown(ctx: click.Context, inventory_path: str, contain_only: bool, campuses: tuple[str, ...],
             segments: tuple[str, ...], hosts: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Emergency: cut external links, isolate segments, power hosts off in order (islands keep running)."""
    from orchestrator.planner import build_plan

    inventory = load(inventory_path)
    mode = Mode.CONTAIN if contain_only else Mode.SHUTDOWN
    the_plan = build_plan(inventory, mode, make_scope(campuses, segments, hosts))
    if not as_json:
        render_plan(the_plan)
    confirm_site(inventory, the_plan, yes)
    execute(ctx, inventory, the_plan, run_options(ctx), as_json)


@cli.command()
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@click.option("--run", "run_id", metavar="RUN_ID", help="Undo exactly what this run did.")
@click.option("--approve", type=click.Choice(["all", "each"]), default=None,
              help="Approve every gate now, or be asked at each gate.")
@scope_options
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def restore(ctx: click.Context, inventory_path: str, run_id: str | None, approve: str | None,
            campuses: tuple[str, ...], segments: tuple[str, ...], hosts: tuple[str, ...], as_json: bool) -> None:
    """Staged restore: power on by tier, integrity and health checks while isolated, gates, reconnect."""
    from orchestrator.errors import ApprovalRequired
    from orchestrator.executor import ApprovalPolicy
    from orchestrator.planner import build_plan
    from orchestrator.runs import selection_from_run

    if approve is None and not sys.stdin.isatty():
        raise ApprovalRequired("restore reconnects segments only behind approved gates, and there is no "
                               "terminal to ask at", hint="pass --approve all (or --approve each on a terminal)")
    if approve == "each" and not sys.stdin.isatty():
        raise ApprovalRequired("--approve each needs a terminal to ask at", hint="use --approve all")
    inventory = load(inventory_path)
    settings = settings_from(ctx)
    scope = make_scope(campuses, segments, hosts)
    selection = selection_from_run(settings, run_id, inventory) if run_id else None
    the_plan = build_plan(inventory, Mode.RESTORE, scope, selection=selection)
    if not as_json:
        from orchestrator.readiness import restore_readiness

        render_plan(the_plan)
        render_readiness(restore_readiness(inventory, the_plan, settings))
    policy = ApprovalPolicy(approve) if approve else ApprovalPolicy.EACH
    execute(ctx, inventory, the_plan, run_options(ctx, approve=policy), as_json)


@cli.command()
@click.argument("run_id")
@click.option("--approve", type=click.Choice(["all", "each"]), default=None,
              help="For restore runs: approval for gates not yet passed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def resume(ctx: click.Context, run_id: str, approve: str | None, as_json: bool) -> None:
    """Continue an interrupted or failed run without redoing verified steps."""
    from orchestrator.executor import ApprovalPolicy
    from orchestrator.runs import resume_run

    policy = ApprovalPolicy(approve) if approve else (ApprovalPolicy.EACH if sys.stdin.isatty()
                                                      else ApprovalPolicy.NONE)
    settings = settings_from(ctx)
    options = run_options(ctx, approve=policy)
    finish(run_with_progress(as_json, lambda view, stop: resume_run(
        run_id, settings, options, observers=[view], stop_event=stop)), as_json)


@cli.command()
@click.argument("run_id")
@click.argument("host")
@click.option("--by", "by", required=True, metavar="NAME", help="Who attests (a person, not an account).")
@click.option("--reason", required=True, metavar="TEXT", help="Why, and how it was checked (where, when, by whom).")
@click.option("--evidence", type=click.Path(dir_okay=False), metavar="FILE",
              help="A file backing the claim (photo, ticket export): its SHA-256 is journaled.")
@click.option("--claim", type=click.Choice(["disconnected", "clean"]), default="disconnected", show_default=True,
              help="What is attested. disconnected: the host is physically cut off every network. clean: the "
              "host is vouched clean where the tool cannot check its integrity (no baseline, windows).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def attest(ctx: click.Context, run_id: str, host: str, by: str, reason: str, evidence: str | None, claim: str,
           as_json: bool) -> None:
    """Record in a restore run's journal what a person vouches for and the tool cannot prove.

    A quarantined host without a power driver (or one its driver cannot prove off) holds its segment
    isolated; an attestation that it is physically disconnected lets `orchestrator resume RUN_ID`
    reconnect the segment. The report says "attested by NAME: physically disconnected, not verified".
    A host without a baseline (or a windows host) fails its integrity step; `--claim clean` vouches
    for it and the resumed restore passes it as "attested by NAME, not verified". A host whose
    integrity check found differences is never cleared by an attestation.
    """
    from orchestrator.attest import CLI_CLAIMS, attest_host
    from orchestrator.journal import current_operator

    done = attest_host(settings_from(ctx), run_id, host, by=by, reason=reason, evidence=evidence,
                       claim=CLI_CLAIMS[claim], operator=current_operator())
    if as_json:
        emit_json(done.as_dict())
        return
    console.print(f"[bold]attested[/] {lit(done.host)} in run {lit(done.run_id)}: {lit(done.claim)}, by "
                  f"{lit(done.by)} ({lit(done.operator)}) at {lit(done.ts)}: {lit(done.reason)}", soft_wrap=True)
    if done.evidence is not None:
        console.print(f"  evidence {done.evidence['file']}: sha256 {done.evidence['sha256']}", markup=False,
                      soft_wrap=True)
    console.print(f"  journal record {done.seq}; not verified by the tool. Continue with: orchestrator resume "
                  f"{done.run_id}", markup=False, soft_wrap=True)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """Show a run (default: the latest) or list runs."""
    from orchestrator.lock import read_lock
    from orchestrator.runs import list_run_ids, run_summary

    settings = settings_from(ctx)
    ids = list_run_ids(settings)
    holder = read_lock(settings.lock_path)
    if not ids and not run_id:
        if as_json:
            emit_json({"runs": [], "lock": holder.as_dict() if holder else None})
        else:
            console.print(f"no runs in {settings.state_dir}", markup=False)
        return
    from orchestrator.attest import run_assurances
    from orchestrator.runs import read_run

    summary = run_summary(settings, run_id or ids[-1])
    summary.update(run_assurances(read_run(settings, str(summary["run_id"])).records))
    if as_json:
        emit_json({**summary, "runs": ids, "lock": holder.as_dict() if holder else None})
        return
    colour = STATUS_COLOURS.get(str(summary["status"]), "bold")
    console.print(f"run {lit(summary['run_id'])} ({lit(summary['mode'])}, plan {lit(summary['plan_id'])}) by "
                  f"{lit(summary['operator'])} at {lit(summary['started'])}: [{colour}]{lit(summary['status'])}[/]",
                  soft_wrap=True)
    console.print(f"  {summary['steps']} steps: " + ", ".join(f"{k} {v}" for k, v in sorted(summary['counts'].items())),
                  markup=False)
    for key in ("time_to_containment_s", "time_to_shutdown_s"):
        if summary[key] is not None:
            console.print(f"  {key.removesuffix('_s').replace('_', ' ')}: {summary[key]:.1f} s")
    for item in summary["left"]:
        console.print(f"  left: {item['step_id']}: {item['reason']}", soft_wrap=True, markup=False)
    for host, why in (summary.get("kept") or {}).items():
        console.print(f"  kept running: {host}: {why}", soft_wrap=True, markup=False)
    for host, how in (summary.get("cleared") or {}).items():
        console.print(f"  cleared: {host}: {how}", soft_wrap=True, markup=False)
    for item in summary.get("attestations") or []:
        console.print(f"  attested: {item['host']} by {item['by']} ({item['claim']}): {item['reason']}",
                      soft_wrap=True, markup=False)
    if holder:
        console.print(f"  lock held by {holder.describe()}", markup=False)


@cli.command("restore-status")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@click.option("--run", "run_id", metavar="RUN_ID", help="This restore run (default: the site's latest).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def restore_status_cmd(ctx: click.Context, inventory_path: str, run_id: str | None, as_json: bool) -> None:
    """The restore board's view: per tier and host the state (off, started, integrity ok/failed/attested,
    suites x/y, gate, reconnected), what blocks each segment and who approved each gate. Read-only."""
    from orchestrator.restore_status import restore_status

    doc = restore_status(load(inventory_path), settings_from(ctx), run_id)
    if as_json:
        emit_json(doc)
        return
    render_restore_status(doc)


def render_restore_status(doc: dict[str, Any]) -> None:
    run = doc["run"]
    if run is None:
        console.print(f"site {lit(doc['site'])}: no restore run yet; what a restore will need:", soft_wrap=True)
    else:
        console.print(f"site {lit(doc['site'])}: restore run {lit(run['run_id'])} ({lit(run['status'])}), started "
                      f"{lit(run['started'])}", soft_wrap=True)
    for row in doc["tiers"]:
        gate = row.get("gate") or {}
        approved = (f"approved by {gate['approver']} ({gate['how']}) at {gate['at']}" if gate.get("approved")
                    else "refused" if gate.get("approved") is False else gate.get("status", "not reached"))
        table = Table(title=Text(f"tier {row['tier']}: gate {approved}" if gate else f"tier {row['tier']}"))
        for column in ("host", "segment", "state", "start", "integrity", "suites", "health", "attestation"):
            table.add_column(column)
        for h in row["hosts"]:
            suites = f"{h['suites']['passed']}/{h['suites']['total']}" if h["suites"]["total"] else "-"
            table.add_row(*(Text(str(v)) for v in (h["host"], h["segment"], h["state"], h["start"], h["integrity"],
                                                    suites, h["health"], h["attestation"] or "-")))
        console.print(table)
        for seg in row["segments"]:
            console.print(f"  segment {lit(seg['segment'])}: " + (
                "reconnected" if seg["status"] == "verified" else f"isolated: {lit(seg['blocking'])}"), soft_wrap=True)
    if doc["still_to_attest"]:
        console.print(f"[magenta]need an attestation[/] (no baseline, or windows): "
                      f"{lit(', '.join(doc['still_to_attest']))}", soft_wrap=True)


@cli.group()
def journal() -> None:
    """The append-only, hash-chained run journal."""


@journal.command("verify")
@click.argument("run_id")
@click.option("--against-syslog", "syslog_file", type=click.Path(dir_okay=False, exists=True),
              help="Also compare with what the syslog collector received (the file it wrote).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def journal_verify(ctx: click.Context, run_id: str, syslog_file: str | None, as_json: bool) -> None:
    """Check every record's HMAC and the chain (edited, deleted, reordered); with --against-syslog,
    that the collector received every record as it is here, and nothing this journal lost."""
    from orchestrator.journal import journal_key, verify_journal

    settings = settings_from(ctx)
    path = settings.journal_path(run_id)
    if not path.exists():
        fail(f"no journal for run {run_id} at {path}", EXIT_BAD_INPUT)
    key = journal_key(settings.signing_key_path, create=False)
    if key is None:
        fail(f"no controller key at {settings.signing_key_path}: the journal's records cannot be authenticated "
             "(restore the key from the controller's backup, or pass the right --state-dir)", EXIT_BAD_INPUT)
    check = verify_journal(path, key)
    doc: dict[str, object] = check.as_dict()
    ok = check.ok
    comparison = None
    if syslog_file:
        from orchestrator.syslog_copy import compare_with_collector

        comparison = compare_with_collector(path, Path(syslog_file))
        doc["collector"] = {"file": syslog_file, **comparison.as_dict()}
        ok = ok and comparison.ok
        doc["journal_ok"], doc["ok"] = check.ok, ok  # ``ok``: both hold; scripts read one field
    if as_json:
        emit_json(doc)
        raise Exit(EXIT_OK if ok else EXIT_FAILED)
    if check.ok:
        console.print(f"[green]journal verifies[/]: {check.records} records, every HMAC valid, head {check.head}")
    else:
        console.print(f"[red]journal does NOT verify[/]: {lit(path)}")
        for problem in check.problems:
            console.print(f"  {problem}", soft_wrap=True, markup=False)
    if comparison is not None:
        if comparison.ok:
            console.print(f"[green]the collector holds every record as written[/]: {comparison.matched} of "
                          f"{comparison.local_records} records matched")
        else:
            console.print(f"[red]the collector's copy differs[/] ({lit(syslog_file)}): {comparison.matched} of "
                          f"{comparison.local_records} records matched")
            for problem in comparison.problems:
                console.print(f"  {problem}", soft_wrap=True, markup=False)
        for note in comparison.notes:
            console.print(f"  note: {note}", soft_wrap=True, markup=False)
    raise Exit(EXIT_OK if ok else EXIT_FAILED)


@cli.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md")
@click.option("-o", "output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.pass_context
def report(ctx: click.Context, run_id: str, fmt: str, output: str | None) -> None:
    """Incident report of a run: timeline, times, outcomes, NIS2 notification fields."""
    from orchestrator.report import build_report, render_report
    from orchestrator.runs import read_run

    settings = settings_from(ctx)
    state = read_run(settings, run_id)
    inventory_copy = settings.run_dir(run_id) / "inventory.yml"
    inv = None
    if inventory_copy.exists():
        from orchestrator.inventory import load_inventory

        original = Path(state.started.inventory or inventory_copy)
        inv = load_inventory(inventory_copy, base_dir=original.parent)
    from orchestrator.journal import verify_journal

    check = verify_journal(settings.journal_path(run_id))
    text = render_report(build_report(state.records, inv, verification=check), fmt)
    if output:
        atomic_write(Path(output), text)  # private (0600), whole or absent
        console.print(f"report written to {output}", markup=False)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--latest", is_flag=True, help="Follow the newest run, and the next one when it starts (the default).")
@click.option("--next", "next_run", is_flag=True, help="Wait for the next run to start, then follow it (and later).")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="ADDRESS:PORT",
              help="Where to serve the page (port 0: any free port).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM); needed beyond loopback.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="TLS private key (PEM) of --tls-cert.")
@click.option("--allow-plain-http", is_flag=True, help="Serve beyond loopback without TLS (a network you trust).")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Keep the access token in FILE (0600; made if missing) so the link survives a restart.")
@click.pass_context
def board(ctx: click.Context, run_id: str | None, latest: bool, next_run: bool, listen: str, tls_cert: str | None,
          tls_key: str | None, allow_plain_http: bool, token_file: str | None) -> None:
    """A live, read-only web page of a run for the crisis cell (it reads the journal, nothing else)."""
    from orchestrator.board.app import Board, bind, board_url, check_exposure, make_server, parse_listen
    from orchestrator.board.follower import RunSource, latest_run
    from orchestrator.board.token import load_token
    from orchestrator.errors import UsageError

    settings = settings_from(ctx)
    if sum((bool(run_id), latest, next_run)) > 1:
        raise UsageError("give one of RUN_ID, --latest, --next", target="board", hint="drop the others")
    if run_id and not settings.journal_path(run_id).is_file():
        raise UsageError(f"no run {run_id} in {settings.state_dir}", target=run_id,
                         hint="`orchestrator status` lists the runs; or pass --state-dir")
    where = parse_listen(listen)
    tls = bool(tls_cert or tls_key)
    check_exposure(where, tls=tls, allow_plain_http=allow_plain_http)
    token = load_token(Path(token_file) if token_file else None)
    source = RunSource(settings, run_id, after=latest_run(settings) if next_run else None)
    the_board = Board(source, token, secure_cookie=tls)
    server = make_server(the_board, tls_cert=tls_cert, tls_key=tls_key)
    sock = bind(where)
    click.echo(f"board: {board_url(sock, token, tls=tls)}")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@cli.command()
@click.argument("inventory_path", metavar="INVENTORY", default=DEFAULT_LAB_INVENTORY,
                type=click.Path(dir_okay=False))
@click.option("--keep", is_flag=True, help="Leave the lab running afterwards.")
@click.option("--reports", "reports_dir", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Where the drill's reports go.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line, then the summary.")
@click.pass_context
def drill(ctx: click.Context, inventory_path: str, keep: bool, reports_dir: str, as_json: bool) -> None:
    """The whole rehearsal on the lab: up, baseline, shutdown, verify, restore, verify, report, down."""
    from orchestrator.drill import run_drill
    from orchestrator.journal import current_operator

    inventory = load(inventory_path)
    settings = settings_from(ctx)

    def progress(message: str) -> None:
        if not as_json:
            console.print(f"[bold]drill[/] {lit(message)}", soft_wrap=True)

    result = run_with_progress(as_json, lambda view, stop: run_drill(
        inventory, settings, keep=keep, reports_dir=Path(reports_dir), observers=[view], progress=progress,
        stop_event=stop, operator=current_operator(), board=not as_json))
    if as_json:
        click.echo(json.dumps({"type": "drill-result", **result.as_dict()}, default=str))
        raise Exit(EXIT_OK if result.ok else EXIT_FAILED)
    table = Table(title=Text(f"drill on {inventory.site.name}: " + ("PASSED" if result.ok else "FAILED")))
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in result.timings.items():
        table.add_row(Text(name), f"{seconds:.1f}")
    console.print(table)
    failed = [c for c in result.checks if not c.passed]
    console.print(f"independent checks: {len(result.checks) - len(failed)}/{len(result.checks)} passed")
    for check in failed:
        console.print(f"  [red]failed[/] {lit(check.name)}: {lit(check.detail)}", soft_wrap=True)
    for name, run in result.runs.items():
        console.print(f"{name} run {run.run_id}: {run.status}", markup=False)
        for step_id, reason in run.left:
            console.print(f"  left: {step_id}: {reason}", soft_wrap=True, markup=False)
    if result.error:
        console.print(f"[red]error[/] {lit(result.error)}", soft_wrap=True)
    for path in result.reports:
        if path.endswith((".html", ".md")):
            console.print(f"report: {path}", markup=False)
    if result.lab_kept:
        console.print("the lab is still up (--keep): `orchestrator lab down` removes it")
    raise Exit(EXIT_OK if result.ok else EXIT_FAILED)


@cli.group()
def baseline() -> None:
    """Signed, off-host integrity baselines."""


@baseline.command("capture")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@scope_options
@click.option("--force", is_flag=True, help="Re-baseline hosts a run quarantined or found differing "
              "(needs --reason; journaled).")
@click.option("--reason", metavar="TEXT", help="Why these hosts' current state is trusted (with --force).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def baseline_capture(ctx: click.Context, inventory_path: str, campuses: tuple[str, ...], segments: tuple[str, ...],
                     hosts: tuple[str, ...], force: bool, reason: str | None, as_json: bool) -> None:
    """Record each host's files, packages, users, keys, cron, units, ports and SUID files, signed, as a
    new version (earlier ones are kept), under the state lock; every capture is journaled."""
    import functools

    from orchestrator.errors import UsageError
    from orchestrator.integrity import BaselineRefused, capture_all
    from orchestrator.journal import current_operator

    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason TEXT: say why these hosts' current state is trusted",
                         target="--force", hint="e.g. --reason 'rebuilt from the 2026-01-10 image, EDR scan clean'")
    if reason and not force:
        raise UsageError("--reason is only used with --force", target="--reason", hint="add --force or drop --reason")
    action = functools.partial(capture_all, force=force, reason=reason, operator=current_operator())
    outcome = dict(_per_host(ctx, action, inventory_path, make_scope(campuses, segments, hosts)))
    doc = _outcome_doc(outcome)
    refused = sorted(n for n, item in outcome.items() if isinstance(item, BaselineRefused))
    for name in refused:
        doc["hosts"][name]["refused"] = True
    if as_json:
        emit_json(doc)
    else:
        for name, item in doc["hosts"].items():
            mark = "captured" if item["ok"] else ("REFUSED" if item.get("refused") else "failed")
            colour = "green" if item["ok"] else "red"
            console.print(f"[{colour}]{mark}[/] ", end="")
            console.print(f"{name}: {item['detail']}", soft_wrap=True, markup=False)
    if refused:
        raise Exit(EXIT_INTERLOCK)
    raise Exit(EXIT_OK if all(i["ok"] for i in doc["hosts"].values()) else EXIT_FAILED)


HostAction = Callable[["SshDriver", Inventory, tuple[str, ...], Settings, int], Mapping[str, T]]


def _per_host(ctx: click.Context, action: HostAction[T], inventory_path: str, scope: Scope) -> Mapping[str, T]:
    """Run an integrity action (capture or check) over the scope's hosts, in parallel over SSH."""
    from orchestrator.drivers.ssh import SshDriver
    from orchestrator.planner import resolve_scope

    inventory = load(inventory_path)
    settings = settings_from(ctx)
    names = resolve_scope(inventory, scope).hosts
    ssh = SshDriver(inventory)
    try:
        return action(ssh, inventory, names, settings, settings.forks)
    finally:
        ssh.close()


def _outcome_doc(outcome: Mapping[str, object]) -> dict[str, dict[str, dict[str, object]]]:
    hosts: dict[str, dict[str, object]] = {}
    for name, item in sorted(outcome.items()):
        if isinstance(item, Exception):
            hosts[name] = {"ok": False, "detail": str(item)}
        else:
            hosts[name] = {"ok": True, "detail": str(item)}
    return {"hosts": hosts}


@cli.group()
def integrity() -> None:
    """Compare hosts with their signed baselines."""


@integrity.command("check")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@scope_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def integrity_check(ctx: click.Context, inventory_path: str, campuses: tuple[str, ...], segments: tuple[str, ...],
                    hosts: tuple[str, ...], as_json: bool) -> None:
    """Exit 1 when any host differs from its baseline, naming every differing path."""
    from orchestrator.integrity import check_all

    outcome = _per_host(ctx, check_all, inventory_path, make_scope(campuses, segments, hosts))
    doc: dict[str, dict[str, dict[str, object]]] = {"hosts": {}}
    bad = False
    for name, item in sorted(outcome.items()):
        if isinstance(item, Exception):
            bad = True
            doc["hosts"][name] = {"clean": False, "error": str(item), "differences": []}
            if not as_json:
                console.print(f"[red]not checked[/] {lit(name)}: {lit(item)}", soft_wrap=True)
            continue
        diffs = [{"category": d.category, "path": d.path, "detail": d.detail} for d in item.differences]
        bad = bad or not item.clean
        doc["hosts"][name] = {"clean": item.clean, "differences": diffs}
        if not as_json:
            if item.clean:
                console.print(f"[green]clean[/] {lit(name)}")
            else:
                console.print(f"[red]DIFFERS[/] {lit(name)}: {len(diffs)} difference(s)")
                for d in diffs:
                    console.print(f"    {d['category']:16} {d['path']}  {d['detail']}", soft_wrap=True,
                                  markup=False)
    if as_json:
        emit_json(doc)
    raise Exit(EXIT_FAILED if bad else EXIT_OK)


@cli.group("health")
def health_group() -> None:
    """Site health suites (pytest-testinfra files named by the inventory)."""


@health_group.command("check")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@scope_options
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              help="Seconds one suite may run before it is stopped (counted as an error).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def health_check_cmd(ctx: click.Context, inventory_path: str, campuses: tuple[str, ...], segments: tuple[str, ...],
                     hosts: tuple[str, ...], timeout_s: float, as_json: bool) -> None:
    """Read-only: run each in-scope host's health suites against it over pinned SSH.

    Exit 1 when a test failed or errored."""
    from orchestrator.health.check import check_health
    from orchestrator.health.suites import SuiteOptions

    inventory = load(inventory_path)
    result = check_health(inventory, make_scope(campuses, segments, hosts), forks=settings_from(ctx).forks,
                          options=SuiteOptions(suite_timeout_s=timeout_s))
    if as_json:
        emit_json(result.as_dict())
    else:
        render_health_check(result)
    raise Exit(EXIT_OK if result.passed else EXIT_FAILED)


HEALTH_COLOURS = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}


def render_health_check(result: HealthCheck) -> None:
    if not result.hosts:
        console.print("no host in scope names a health suite (health: or health_suites: in the inventory)",
                      markup=False)
        return
    table = Table(title=Text("health suites (read-only)"))
    for column in ("host", "suite", "test", "outcome", "s", "message"):
        table.add_column(column)
    for h in result.hosts:
        if h.not_run:
            table.add_row(Text(h.host), Text(", ".join(h.suites)), Text("-"), Text("not run", style="yellow"),
                          Text(""), Text(h.not_run))
        for t in h.tests:
            table.add_row(Text(h.host), Text(t.suite), Text(t.test), Text(t.outcome, style=HEALTH_COLOURS[t.outcome]),
                          Text(f"{t.duration_s:.2f}"), Text(t.message))
    console.print(table)
    for h in result.hosts:
        counts = h.counts()
        verdict = "[green]passed[/]" if h.passed else "[red]FAILED[/]"
        console.print(f"{verdict} {lit(h.host)}: {counts['passed']}/{len(h.tests)} passed, {counts['failed']} "
                      f"failed, {counts['error']} error, {counts['skipped']} skipped ({h.duration_s:.1f} s)")
        for t in h.failures:  # in full, unwrapped: the table's cells are narrow
            first, *_ = t.message.splitlines() or [""]
            console.print(f"    {h.host} {t.suite}::{t.test} {t.outcome}: {first}", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[red]error[/] {lit(message)}", soft_wrap=True)
    raise Exit(code)


@cli.group("power")
def power_group() -> None:
    """Out-of-band power controllers (vSphere, Redfish, IPMI)."""


@power_group.command("status")
@click.argument("inventory_path", metavar="INVENTORY", type=click.Path(dir_okay=False))
@scope_options
@click.option("--no-probe", is_flag=True, help="Do not compare with each host's own probe (its SSH port).")
@click.option("--json", "as_json", is_flag=True)
def power_status_cmd(inventory_path: str, campuses: tuple[str, ...], segments: tuple[str, ...],
                     hosts: tuple[str, ...], no_probe: bool, as_json: bool) -> None:
    """Read-only: every host's power state from its controller (nothing is powered on or off).

    Exit 1 when a controller could not be reached or refused the login, or a host's state is unknown."""
    from orchestrator.drivers import open_ssh
    from orchestrator.power_status import read_power_status

    inventory = load(inventory_path)
    scope = make_scope(campuses, segments, hosts)
    ssh = None if no_probe else open_ssh(inventory)
    try:
        report = read_power_status(inventory, scope, ssh=ssh)
    finally:
        if ssh is not None:
            ssh.close()
    if as_json:
        emit_json(report.as_dict())
    else:
        render_power_status(report)
    unknown = any(h.state == "unknown" for h in report.hosts)
    raise Exit(EXIT_FAILED if unknown or report.failed_controllers else EXIT_OK)


POWER_COLOURS = {"on": "green", "off": "blue", "unknown": "red"}


def render_power_status(report: PowerStatus) -> None:
    if not report.hosts:
        console.print("no host in scope has a power controller (power: {controller: ...})", markup=False)
        return
    table = Table(title=Text("power status (read from each host's controller)"))
    for column in ("host", "controller", "state", "probe", "evidence"):
        table.add_column(column)
    for h in report.hosts:
        state = Text(h.state + (" MISMATCH" if h.mismatch else ""), style=POWER_COLOURS[h.state])
        table.add_row(Text(h.name), Text(h.controller), state, Text(h.probe or "not probed"),
                      Text(h.error if h.error else h.evidence))
    console.print(table)
    for c in report.controllers:
        if not c.ok:
            console.print(f"[red]controller failed[/] {lit(c.name)} ({lit(c.endpoint)}): {lit(c.error)}"
                          + (f" (fix: {lit(c.hint)})" if c.hint else ""), soft_wrap=True)
        if c.logout_error:
            console.print(f"[yellow]logout failed[/] {lit(c.name)}: {lit(c.logout_error)}", soft_wrap=True)
    for h in report.mismatches:
        console.print(f"[yellow]mismatch[/] {lit(h.name)}: the controller says {h.state} while SSH "
                      f"{'answers' if h.probe == 'answers' else 'is silent'}", soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> None:
    from orchestrator.storage import private_umask

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    private_umask()  # everything this process writes is 0600 / 0700 (backups, baselines, plans, reports)
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="orchestrator", standalone_mode=False)
    except Exit as exc:
        sys.exit(exc.code)
    except InventoryError as exc:
        err_console.print("[red]invalid inventory[/]", end=" ")
        err_console.print(exc.message, soft_wrap=True, markup=False)
        for warning in (p for p in exc.problems if p.severity == "warning"):
            err_console.print(f"[yellow]warning[/] {lit(warning.render())}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except OrchestratorError as exc:
        err_console.print(f"[red]{lit(exc.code)}[/] {lit(exc)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(EXIT_FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)
