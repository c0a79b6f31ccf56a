"""Lead conversion: a Contact (plus an Account from Company, a Deal when asked) per lead.

The answer's shape depends on the version (research §4.7): v2/v2.1 give bare ids,
v3 onwards a SUCCESS entry whose details hold ``{id, name}`` objects.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .coerce import FieldError, coerce_record
from .context import context, json_body, record_module
from .responses import SandboxError, invalid_id, json_response
from .schema import OLD_SHAPE_VERSIONS
from .store import OrgStore
from .writes import apply_update, create

_CARRY = {  # lead field -> contact field
    "First_Name": "First_Name",
    "Last_Name": "Last_Name",
    "Email": "Email",
    "Phone": "Phone",
    "Date_of_Birth": "Date_of_Birth",
    "City": "Mailing_City",
    "Data_Processing_Basis_Details": "Data_Processing_Basis_Details",
}


def _ref_id(value: Any) -> str | None:
    """v2 sends ``"Accounts": "<id>"``, v7 sends ``{"id": "<id>"}``."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _existing(org: OrgStore, module: str, value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    rid = _ref_id(value)
    rec = org.get(module, rid) if rid else None
    if rec is None:
        raise SandboxError(400, "INVALID_DATA", "invalid data", {"api_name": field})
    return rec


def _account(org: OrgStore, lead: dict[str, Any], given: Any) -> dict[str, Any] | None:
    found = _existing(org, "Accounts", given, "Accounts")
    if found is not None or not lead.get("Company"):
        return found
    company = str(lead["Company"])
    for acc in org.active("Accounts"):
        if str(acc.get("Account_Name", "")).casefold() == company.casefold():
            return acc
    return create(org, "Accounts", {"Account_Name": company, "Phone": lead.get("Phone")})


def _contact(org: OrgStore, lead: dict[str, Any], account: dict[str, Any] | None) -> dict[str, Any]:
    values = {dst: lead.get(src) for src, dst in _CARRY.items() if lead.get(src) is not None}
    consent = values.get("Data_Processing_Basis_Details")
    if isinstance(consent, dict):
        # The contact gets its own consent record, carrying the lead's answers.
        values["Data_Processing_Basis_Details"] = {**consent, "id": org.new_id()}
    if account is not None:
        values["Account_Name"] = org.ref("Accounts", account)
    values["Owner"] = lead.get("Owner")
    contact = create(org, "Contacts", values)
    if "$stop_processing" in lead:
        contact["$stop_processing"] = lead["$stop_processing"]
    return contact


def _deal_values(org: OrgStore, given: Any) -> dict[str, Any] | None:
    """Validated before anything is created, so a bad Deal converts nothing."""
    if not isinstance(given, dict):
        return None
    try:
        return coerce_record(org, "Deals", given, None, creating=True)
    except FieldError as e:
        raise SandboxError(400, e.code, e.message, e.details) from None


def _deal(
    org: OrgStore,
    values: dict[str, Any] | None,
    contact: dict[str, Any],
    account: dict[str, Any] | None,
) -> dict[str, Any] | None:
    if values is None:
        return None
    values["Contact_Name"] = org.ref("Contacts", contact)
    if account is not None:
        values["Account_Name"] = org.ref("Accounts", account)
    return create(org, "Deals", values)


async def convert_lead(request: Request) -> Response:
    ctx = context(request)
    module = record_module(ctx, request.path_params["module"])
    if module != "Leads":
        raise SandboxError(
            400,
            "INVALID_MODULE",
            "the given module is not supported in api",
            {"resource_path_index": 0},
        )
    org = ctx.org
    lead = org.get("Leads", request.path_params["id"])
    if lead is None:
        raise invalid_id(request.path_params["id"])
    lead_id = str(lead["id"])
    if lead_id in org.converted:
        raise SandboxError(400, "ID_ALREADY_CONVERTED", "id already converted", {"id": lead_id})
    body = await json_body(request)
    items = body.get("data") if isinstance(body, dict) else None
    options: dict[str, Any] = (
        items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    )
    deal_values = _deal_values(org, options.get("Deals"))
    given_contact = _existing(org, "Contacts", options.get("Contacts"), "Contacts")
    account = _account(org, lead, options.get("Accounts"))
    contact = given_contact or _contact(org, lead, account)
    deal = _deal(org, deal_values, contact, account)
    org.converted.add(lead_id)
    apply_update(org, "Leads", lead, {"$converted": True})

    made = {
        "Contacts": ("Contacts", contact),
        "Accounts": ("Accounts", account),
        "Deals": ("Deals", deal),
    }
    if ctx.version in OLD_SHAPE_VERSIONS:
        row = {k: (rec["id"] if rec else None) for k, (_, rec) in made.items()}
        return json_response(request, {"data": [row]})
    details = {k: (org.ref(m, rec) if rec else None) for k, (m, rec) in made.items()}
    entry = {
        "code": "SUCCESS",
        "details": details,
        "message": "The record has been converted successfully",
        "status": "success",
    }
    return json_response(request, {"data": [entry]})
