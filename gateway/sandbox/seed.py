"""Deterministic seed data: the same ``random.Random`` state gives byte-identical records.

Values look like a real CRM's (names, e-mails, phones, companies, ISO dates) so that the
gateway's redaction is exercised on realistic shapes: lookups, consent objects, subform
rows, tag arrays and ``$``-keys.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .vocab import (
    BASES,
    CITIES,
    COMPANY_ROOTS,
    COMPANY_SUFFIX,
    DESCRIPTIONS,
    DESIGNATIONS,
    DIAGNOSES,
    FIRST,
    INDUSTRIES,
    LAST,
    LAWFUL_REASONS,
    LEAD_SOURCES,
    LEAD_STATUSES,
    STAGES,
    TAGS,
)

DEAL_KINDS = ["Renewal", "Expansion", "Pilot", "Licences"]

Record = dict[str, Any]


_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
#: list positions of Leads that must be in stop processing / must not (tests rely on them)
LEADS_STOPPED = frozenset({3, 10})
LEADS_ACTIVE = frozenset({0, 1, 2})

SIZES = {
    1: {"Accounts": 30, "Contacts": 120, "Vendors": 25, "Leads": 600, "Deals": 80, "Patients": 60},
    2: {"Accounts": 5, "Contacts": 10, "Vendors": 5, "Leads": 50, "Deals": 8, "Patients": 5},
}


def dollar_keys() -> dict[str, Any]:
    """The read-only ``$``-keys every record carries (research §6)."""
    return {
        "$approved": True,
        "$editable": True,
        "$currency_symbol": "$",
        "$approval_state": "approved",
        "$in_merge": False,
        "$process_flow": False,
        "$locked_for_me": False,
        "$review": None,
        "$approval": {"delegate": False, "approve": False, "reject": False, "resubmit": False},
        "$review_process": {"approve": False, "reject": False, "resubmit": False},
        "$sharing_permission": "full_access",
    }


def iso(dt: datetime) -> str:
    return dt.replace(microsecond=0).isoformat()


class Seeder:
    """Builds one org's records; ``alloc`` hands out the org's unique numeric ids."""

    def __init__(
        self,
        rng: random.Random,
        alloc: Callable[[int], str],
        users: list[dict[str, Any]],
        tag_ids: list[str],
    ) -> None:
        self.rng = rng
        self.alloc = alloc
        self.users = users
        self.tags = [{"name": name, "id": tid} for name, tid in zip(TAGS, tag_ids, strict=True)]
        self.emails: set[str] = set()
        self.records: dict[str, dict[str, Record]] = {}

    # -- small value generators -------------------------------------------------------------
    def new_id(self) -> str:
        return self.alloc(self.rng.randint(1, 9))

    def owner(self) -> dict[str, Any]:
        user = self.rng.choice(self.users)
        return {"name": user["full_name"], "id": user["id"], "email": user["email"]}

    def when(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.rng.randint(0, 700 * 86400))

    def day(self, start_year: int, end_year: int) -> str:
        start = date(start_year, 1, 1).toordinal()
        return date.fromordinal(
            self.rng.randint(start, date(end_year, 12, 31).toordinal())
        ).isoformat()

    def phone(self) -> str:
        r = self.rng
        return f"+1-555-{r.randint(100, 999)}-{r.randint(1000, 9999)}"

    def email(self, first: str, last: str, domain: str = "example.com") -> str:
        base = f"{first}.{last}".lower().replace(" ", "")
        candidate, n = f"{base}@{domain}", 1
        while candidate in self.emails:
            n += 1
            candidate = f"{base}{n}@{domain}"
        self.emails.add(candidate)
        return candidate

    def company(self) -> str:
        return f"{self.rng.choice(COMPANY_ROOTS)} {self.rng.choice(COMPANY_SUFFIX)}"

    def ref(self, module: str, name_key: str) -> dict[str, Any]:
        rec = self.rng.choice(list(self.records[module].values()))
        return {"name": rec[name_key], "id": rec["id"]}

    def consent(self) -> dict[str, Any]:
        r = self.rng
        basis = r.choice(BASES)
        consented = self.day(2022, 2024)
        mail = iso(self.when()) if r.random() < 0.5 else None
        return {
            "id": self.new_id(),
            "Data_Processing_Basis": basis,
            "Lawful_Reason": LAWFUL_REASONS.get(basis),
            "Contact_Through_Email": r.random() < 0.7,
            "Contact_Through_Phone": r.random() < 0.5,
            "Contact_Through_Survey": r.random() < 0.3,
            "Contact_Through_Social": r.random() < 0.2,
            "Consent_Date": consented,
            "Consent_Remarks": r.choice(["Approved.", "Signed at the event.", None]),
            "Consent_Through": "Email",
            "Consent_EndsOn": str(int(consented[:4]) + 2) + consented[4:]
            if r.random() < 0.6
            else None,
            "Mail_Sent_Time": mail,
            "Owner": self.owner(),
        }

    # -- record envelope ---------------------------------------------------------------------
    def wrap(self, rid: str, values: dict[str, Any], *, gdpr: bool, stop: bool | None) -> Record:
        created = self.when()
        modified = created + timedelta(seconds=self.rng.randint(0, 90 * 86400))
        owner, creator = self.owner(), self.owner()
        rec: Record = {"Owner": owner, **values}
        rec.update(
            {
                "Created_By": creator,
                "Created_Time": iso(created),
                "Modified_By": creator,
                "Modified_Time": iso(modified),
                "id": rid,
                **dollar_keys(),
            }
        )
        if gdpr:
            rec["$stop_processing"] = stop if stop is not None else self.rng.random() < 0.06
        return rec

    def add(self, module: str, rec: Record) -> None:
        self.records.setdefault(module, {})[rec["id"]] = rec

    # -- modules -----------------------------------------------------------------------------
    def accounts(self, n: int) -> None:
        used: set[str] = set()
        for _ in range(n):
            name = self.company()
            while name in used:
                name = self.company()
            used.add(name)
            slug = name.split()[0].lower()
            values = {
                "Account_Name": name,
                "Phone": self.phone(),
                "Website": f"www.{slug}.example.com",
                "Industry": self.rng.choice(INDUSTRIES),
            }
            self.add("Accounts", self.wrap(self.new_id(), values, gdpr=False, stop=None))

    def contacts(self, n: int) -> None:
        r = self.rng
        for _ in range(n):
            first, last = r.choice(FIRST), r.choice(LAST)
            values = {
                "First_Name": first,
                "Last_Name": last,
                "Full_Name": f"{first} {last}",
                "Email": self.email(first, last),
                "Phone": self.phone(),
                "Mailing_City": r.choice(CITIES)[0],
                "Date_of_Birth": self.day(1950, 2002) if r.random() < 0.8 else None,
                "Account_Name": self.ref("Accounts", "Account_Name") if r.random() < 0.8 else None,
                "Data_Processing_Basis_Details": self.consent() if r.random() < 0.35 else None,
            }
            self.add("Contacts", self.wrap(self.new_id(), values, gdpr=True, stop=None))

    def vendors(self, n: int) -> None:
        for _ in range(n):
            name = self.company()
            slug = name.split()[0].lower()
            values = {
                "Vendor_Name": name,
                "Email": self.email("sales", slug, "vendor.example.com"),
                "Phone": self.phone(),
                "Website": f"www.{slug}-supply.example.com",
                "Data_Processing_Basis_Details": self.consent()
                if self.rng.random() < 0.35
                else None,
            }
            self.add("Vendors", self.wrap(self.new_id(), values, gdpr=True, stop=None))

    def leads(self, n: int) -> None:
        r = self.rng
        for pos in range(n):
            rid = self.new_id()
            first, last = r.choice(FIRST), r.choice(LAST)
            city, country = r.choice(CITIES)
            values = {
                "First_Name": first,
                "Last_Name": last,
                "Full_Name": f"{first} {last}",
                "Email": self.email(first, last),
                "Secondary_Email": f"{first[0]}{last}@mail.example.org".lower()
                if r.random() < 0.3
                else None,
                "Phone": self.phone(),
                "Mobile": self.phone() if r.random() < 0.7 else None,
                "Company": self.company(),
                "Designation": r.choice(DESIGNATIONS),
                "Lead_Source": r.choice(LEAD_SOURCES),
                "Lead_Status": r.choice(LEAD_STATUSES),
                "Annual_Revenue": float(r.randint(5, 5000) * 1000),
                "Date_of_Birth": self.day(1950, 2002) if r.random() < 0.8 else None,
                "City": city,
                "Country": country,
                "Description": r.choice(DESCRIPTIONS),
                "Referrer": self.ref("Contacts", "Full_Name") if r.random() < 0.4 else None,
                "Data_Processing_Basis_Details": self.consent() if r.random() < 0.35 else None,
                "Visits": self.visits(rid, f"{first} {last}") if r.random() < 0.3 else [],
                "Tag": [r.choice(self.tags)] if r.random() < 0.2 else [],
            }
            stop = True if pos in LEADS_STOPPED else False if pos in LEADS_ACTIVE else None
            self.add("Leads", self.wrap(rid, values, gdpr=True, stop=stop))

    def visits(self, parent_id: str, parent_name: str) -> list[dict[str, Any]]:
        r = self.rng
        return [
            {
                "id": self.new_id(),
                "Visit_Date": self.day(2023, 2024),
                "Notes": r.choice(
                    ["Asked about pricing.", "Toured the showroom.", "Brought a colleague."]
                ),
                "Visitor_IP": f"203.0.113.{r.randint(1, 254)}",
                "Parent_Id": {"name": parent_name, "id": parent_id},
            }
            for _ in range(r.randint(1, 3))
        ]

    def deals(self, n: int) -> None:
        r = self.rng
        for _ in range(n):
            account = self.ref("Accounts", "Account_Name")
            values = {
                "Deal_Name": f"{account['name']} - {r.choice(DEAL_KINDS)}",
                "Amount": float(r.randint(1, 500) * 100),
                "Stage": r.choice(STAGES),
                "Closing_Date": self.day(2024, 2025),
                "Contact_Name": self.ref("Contacts", "Full_Name") if r.random() < 0.85 else None,
                "Account_Name": account,
            }
            self.add("Deals", self.wrap(self.new_id(), values, gdpr=False, stop=None))

    def patients(self, n: int) -> None:
        r = self.rng
        for _ in range(n):
            first, last = r.choice(FIRST), r.choice(LAST)
            values = {
                "Name": f"{first} {last}",
                "Email": self.email(first, last, "patients.example.com"),
                "Diagnosis": r.choice(DIAGNOSES),
                "Insurance_Number": f"INS-{r.randint(10_000_000, 99_999_999)}",
                "Referring_Lead": self.ref("Leads", "Full_Name") if r.random() < 0.5 else None,
                "Data_Processing_Basis_Details": self.consent() if r.random() < 0.35 else None,
            }
            self.add("Patients", self.wrap(self.new_id(), values, gdpr=True, stop=None))


def seed_records(
    org: int,
    rng: random.Random,
    alloc: Callable[[int], str],
    users: list[dict[str, Any]],
    tag_ids: list[str],
) -> dict[str, dict[str, Record]]:
    seeder = Seeder(rng, alloc, users, tag_ids)
    sizes = SIZES[org]
    # Order matters: lookups point at records generated earlier.
    seeder.accounts(sizes["Accounts"])
    seeder.contacts(sizes["Contacts"])
    seeder.vendors(sizes["Vendors"])
    seeder.leads(sizes["Leads"])
    seeder.deals(sizes["Deals"])
    seeder.patients(sizes["Patients"])
    return seeder.records
