"""The NIS2 (and GDPR) notification fields of a Report: what the journal tells is prefilled, what only a
person knows is marked for the role who completes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.report.model import (
    HostOutcome,
    Moment,
    Nis2Field,
    Nis2Section,
    Report,
    _add_months,
    _Clock,
    format_duration,
)

# Who completes what in the NIS2 forms.
SECURITY_OFFICER = "security officer (CISO)"
INCIDENT_MANAGER = "incident manager"
DPO = "data protection officer"
MANAGEMENT = "hospital management (accountable body)"


@dataclass(frozen=True)
class _Facts:
    """What the sections prefill, as text, and when each is due."""

    report: Report
    detected_dt: datetime | None
    clock: _Clock

    def due(self, hours: int) -> Moment | None:
        return self.clock.moment(self.detected_dt + timedelta(hours=hours)) if self.detected_dt else None

    @property
    def final_due(self) -> Moment | None:
        notification_due = self.detected_dt + timedelta(hours=72) if self.detected_dt else None
        return self.clock.moment(_add_months(notification_due, 1)) if notification_due else None

    @property
    def entity(self) -> Nis2Field:
        return Nis2Field(
            "Entity",
            self.report.site,
            SECURITY_OFFICER + " (legal name, sector: health, registration id)",
            "run-started site",
        )

    @property
    def measures(self) -> str:
        return "; ".join(self.report.measures) or "none recorded"

    def outcomes(self, *names: str) -> list[HostOutcome]:
        return [h for h in self.report.hosts if h.outcome in names]


def _took(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else "not reached in this run"


def _early_warning(facts: _Facts) -> Nis2Section:
    report, entity, measures = facts.report, facts.entity, facts.measures
    detected = f"{report.detected.utc} ({report.detected.local})" if report.detected else ""
    affected = "; ".join(report.affected_services) or "none recorded"
    ttc = _took(report.time_to_containment_s)
    started = report.started.utc if report.started else "?"
    description = (
        f"Precautionary {report.mode} of {report.site} started {started} by {report.operator}; "
        f"run {report.run_id} status {report.status}."
    )
    contact = Nis2Field("Contact point for the CSIRT", "", SECURITY_OFFICER, "")
    return Nis2Section(
        key="early-warning",
        title="Early warning (within 24 hours of becoming aware)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(a)",
        due=facts.due(24),
        due_note="24 h after detection",
        fields=(
            entity,
            contact,
            Nis2Field(
                "Detection time",
                detected,
                None,
                report.detected_source + "; correct it if the incident was detected earlier",
            ),
            Nis2Field(
                "Short description",
                description,
                INCIDENT_MANAGER + " (confirm, add what was observed)",
                "journal",
            ),
            Nis2Field(
                "Suspected unlawful or malicious act",
                "suspected (a precautionary containment was started)",
                SECURITY_OFFICER,
                "run mode",
            ),
            Nis2Field("Possible cross-border impact", "unknown", SECURITY_OFFICER, ""),
            Nis2Field(
                "Affected services",
                affected,
                INCIDENT_MANAGER + " (add clinical impact)",
                "journal step outcomes",
            ),
            Nis2Field("Containment measures taken", measures, None, "journal step outcomes"),
            Nis2Field("Time to containment", ttc, None, "milestone contained"),
        ),
    )


def _incident_notification(facts: _Facts) -> Nis2Section:
    report, entity = facts.report, facts.entity
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts.items())
    kept = "; ".join(f"{h.name} ({h.why})" for h in report.kept) or "none"
    stopped = facts.outcomes("stopped")
    failed = facts.outcomes("failed", "not-stopped")
    iocs = (
        "; ".join(f"{f.host}: {f.category} {f.path}" for f in report.findings)
        or "none found by integrity checks in this run"
    )
    tts = _took(report.time_to_shutdown_s)
    return Nis2Section(
        key="incident-notification",
        title="Incident notification (within 72 hours of becoming aware)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(b)",
        due=facts.due(72),
        due_note="72 h after detection",
        fields=(
            entity,
            Nis2Field("Update of the early warning", "", INCIDENT_MANAGER, ""),
            Nis2Field(
                "Initial assessment: severity and impact",
                f"{len(stopped)} host(s) powered off, {len(report.kept)} kept running, "
                f"{len(failed)} failed or not stopped; run {report.status} ({counts}); "
                f"time to shutdown {tts}",
                SECURITY_OFFICER + " (severity rating, patients and services affected)",
                "journal",
            ),
            Nis2Field(
                "Indicators of compromise",
                iocs,
                SECURITY_OFFICER + " (add network and threat-intel IoCs)",
                "integrity findings",
            ),
            Nis2Field("Number of people affected (patients, staff)", "", INCIDENT_MANAGER, ""),
            Nis2Field("Services kept running and why", kept, None, "plan kept hosts, islands"),
            Nis2Field("Possible cross-border impact", "unknown", SECURITY_OFFICER, ""),
        ),
    )


def _final_report(facts: _Facts) -> Nis2Section:
    entity, measures = facts.entity, facts.measures
    quarantined = facts.outcomes("quarantined")
    restored = facts.outcomes("restored")
    restore_state = (
        f"{len(restored)} host(s) restored, {len(quarantined)} quarantined"
        + (f" ({', '.join(h.name for h in quarantined)})" if quarantined else "")
        if (restored or quarantined)
        else "no restore recorded in this run"
    )
    return Nis2Section(
        key="final-report",
        title="Final report (within one month of the incident notification)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(e)",
        due=facts.final_due,
        due_note="one month after the incident notification (shown: if notified at the 72 h deadline)",
        fields=(
            entity,
            Nis2Field("Detailed description, severity and impact", "", SECURITY_OFFICER, ""),
            Nis2Field("Type of threat or root cause", "", SECURITY_OFFICER, ""),
            Nis2Field("Mitigation measures applied", measures, None, "journal step outcomes"),
            Nis2Field(
                "Mitigation measures ongoing; restoration",
                restore_state,
                INCIDENT_MANAGER + " (confirm; add what is still ongoing)",
                "journal",
            ),
            Nis2Field("Cross-border impact", "unknown", SECURITY_OFFICER, ""),
            Nis2Field("Lessons learned, approved by", "", MANAGEMENT, ""),
        ),
    )


def _personal_data(facts: _Facts) -> Nis2Section:
    return Nis2Section(
        key="personal-data",
        title="Personal data breach (GDPR), assessed separately",
        basis=(
            "GDPR (EU) 2016/679, Art. 33: notify the supervisory authority within 72 hours "
            "where personal data is at risk"
        ),
        due=facts.due(72),
        due_note="72 h after becoming aware of a personal data breach",
        fields=(
            Nis2Field("Personal data (patient records) accessed or exfiltrated?", "unknown", DPO, ""),
            Nis2Field("Categories and approximate number of data subjects", "", DPO, ""),
        ),
    )


def _nis2(report: Report, detected_dt: datetime | None, clock: _Clock) -> tuple[Nis2Section, ...]:
    """The early warning, the incident notification, the final report and the GDPR assessment."""
    facts = _Facts(report, detected_dt, clock)
    return (_early_warning(facts), _incident_notification(facts), _final_report(facts), _personal_data(facts))
