"""Shared pieces of the attacks: a Lead whose private fields hold marker values.

Every attack asserts three things a user of the gateway relies on: no marker reaches the
client, a refused request never reaches the CRM, and the audit trail holds no marker.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
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


# -- helpers the red-team files share --------------------------------------------------------


def send(gw: GatewayHandle, method: str, url: str, body: Any = None) -> httpx.Response:
    """``body`` as JSON (bytes as they are), with no Content-Type, as the SDKs send writes."""
    content = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else None
    return gw.http.request(method, url, content=content)


def no_mark(r: httpx.Response, mark: str) -> None:
    """``mark`` is neither in the answer's body nor in any of its headers."""
    assert mark not in r.text, r.text[:600]
    for name, value in r.headers.multi_items():
        assert mark not in value, (name, value)


def field_metadata(crm: Crm, module: str) -> list[dict[str, Any]]:
    r = crm.http.get("/crm/v8/settings/fields", params={"module": module})
    assert r.status_code == 200, r.text
    fields: list[dict[str, Any]] = r.json()["fields"]
    return fields


def set_field_metadata(crm: Crm, module: str, fields: list[dict[str, Any]]) -> None:
    """The CRM's field metadata of ``module`` (org 1) replaced, as an admin's change would."""
    r = crm.admin.post(f"/_sandbox/metadata/1/{module}", content=orjson.dumps({"fields": fields}))
    assert r.status_code == 200, r.text


def patient_and_lead(crm: Crm) -> tuple[dict[str, Any], dict[str, Any]]:
    """A patient whose Referring_Lead names a lead (whose First_Name is private, Low)."""
    patient = next(p for p in crm.records("Patients") if p.get("Referring_Lead"))
    lead = crm.one("Leads", patient["Referring_Lead"]["id"])
    assert lead["First_Name"] and lead["First_Name"] in patient["Referring_Lead"]["name"]
    return patient, lead


def leads_by_state(crm: Crm) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sandbox's leads, free and in stop processing (several of each)."""
    leads = crm.records("Leads")
    normal = [r for r in leads if r["$stop_processing"] is False]
    stopped = [r for r in leads if r["$stop_processing"] is True]
    assert len(normal) >= 3 and len(stopped) >= 2
    return normal, stopped


def zip_of(name: str, text: str) -> bytes:
    """A ZIP holding one file ``name`` with ``text``, as a bulk-write upload carries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, text)
    return buf.getvalue()
