"""Shared pieces of the attacks: a Lead whose private fields hold marker values.

Every attack asserts three things a user of the gateway relies on: no marker reaches the
client, a refused request never reaches the CRM, and the audit trail holds no marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Crm, GatewayHandle


@dataclass(frozen=True)
class Marked:
    lead: dict[str, Any]  # the lead as the CRM stores it, markers included
    markers: tuple[str, ...]  # values of its private fields (restricted or not shown)
    stopped: dict[str, Any]  # a lead in stop processing
    contact: dict[str, Any]  # a contact the marked lead refers to (Referrer)

    def leaked(self, *texts: str) -> list[str]:
        return [m for m in self.markers for t in texts if m in t]

    def assert_clean(self, r: httpx.Response) -> None:
        head = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        assert not self.leaked(r.text, head), (r.status_code, r.text[:300])

    def assert_audit_clean(self, gw: GatewayHandle) -> None:
        text = gw.audit_text()
        assert text, "the audit trail is empty: nothing was checked"
        assert not self.leaked(text)


@pytest.fixture
def marked(crm: Crm) -> Marked:
    leads = crm.records("Leads")  # v2: whole records, $-keys included
    # Subform rows come with a single record's answer.
    lead = next(
        full
        for r in leads
        if not r["$stop_processing"] and (full := crm.one("Leads", r["id"])).get("Visits")
    )
    stopped = next(r for r in leads if r["$stop_processing"])
    contact = crm.records("Contacts")[0]
    tag = lead["id"][-6:]
    values = {
        "Email": f"mark-email-{tag}@example.com",
        "Mobile": f"+1-555-mark-{tag}",
        "Phone": f"+1-555-phone-{tag}",
        "City": f"MarkCity{tag}",
        "Description": f"mark-description-{tag}",
    }
    crm.edit(
        "Leads", lead["id"], **values, Referrer={"name": contact["Last_Name"], "id": contact["id"]}
    )
    row = lead["Visits"][0]
    crm.edit("Lead_Visits", row["id"], Notes=f"mark-visit-note-{tag}")
    stored = crm.one("Leads", lead["id"])
    assert stored["Email"] == values["Email"]  # the markers are really there
    assert stored["Visits"][0]["Notes"] == f"mark-visit-note-{tag}"
    return Marked(stored, (*values.values(), f"mark-visit-note-{tag}"), stopped, contact)
