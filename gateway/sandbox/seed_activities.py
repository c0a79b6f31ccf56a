"""Seed data for Campaigns, Notes, Tasks, Events and Calls, and the campaign memberships.

Kept apart from ``seed`` and driven by a generator of its own, so that adding these modules
left every older module's records byte-identical. A few records are pinned to the Lead at
list position 3 (always in stop processing) so that tests of writes that reach a stopped
record through ``Parent_Id`` / ``What_Id`` / ``Who_Id`` or a campaign link have a target.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .schema import NAME_FIELD
from .seed import Record, Seeder, iso

SIZES = {
    1: {"Campaigns": 4, "Notes": 12, "Tasks": 8, "Events": 5, "Calls": 6},
    2: {"Campaigns": 2, "Notes": 4, "Tasks": 3, "Events": 2, "Calls": 2},
}
#: list position of the Lead the pinned records point at (a stopped one, see ``seed``)
STOPPED_LEAD = 3

# fmt: off
CAMPAIGNS = [
    "Spring Trade Show", "Data Retention Webinar", "Partner Roadshow", "Q3 Email Nurture",
    "Customer Advisory Day", "Renewal Drive",
]
NOTE_TITLES = ["Call summary", "Follow-up", "Pricing question", "Meeting notes", None]
NOTE_TEXTS = [
    "Prefers to be contacted after 10am.", "Sent the updated quote.",
    "Asked for the data processing agreement.", "Wants a second demo for the team.",
]
TASKS = ["Send proposal", "Follow up on quote", "Prepare demo", "Check consent status"]
EVENTS = ["Product demo", "Quarterly review", "Onboarding session", "Site visit"]
CALLS = ["Discovery call", "Pricing call", "Check-in", "Support follow-up"]
# fmt: on

Links = set[frozenset[str]]


class ActivitySeeder(Seeder):
    def __init__(
        self,
        rng: random.Random,
        alloc: Callable[[int], str],
        users: list[dict[str, Any]],
        tag_ids: list[str],
        seeded: dict[str, dict[str, Record]],
    ) -> None:
        super().__init__(rng, alloc, users, tag_ids)
        self.records = {m: dict(recs) for m, recs in seeded.items()}
        self.links: Links = set()
        self.stopped_lead = list(seeded["Leads"].values())[STOPPED_LEAD]

    def named_ref(self, module: str, rec: Record) -> dict[str, Any]:
        return {"name": rec.get(NAME_FIELD[module]) or rec["id"], "id": rec["id"]}

    def pick(self, modules: list[str]) -> tuple[str, Record]:
        module = self.rng.choice(modules)
        return module, self.rng.choice(list(self.records[module].values()))

    def put(self, module: str, values: dict[str, Any], parent: tuple[str, Record] | None) -> None:
        rec = self.wrap(self.new_id(), values, gdpr=False, stop=None)
        rec["$se_module"] = parent[0] if parent else None
        self.add(module, rec)

    def campaigns(self, n: int) -> None:
        r = self.rng
        for i, name in enumerate(r.sample(CAMPAIGNS, n)):
            start = self.day(2023, 2024)
            values = {
                "Campaign_Name": name,
                "Type": r.choice(["Conference", "Email", "Webinar", "Trade Show"]),
                "Status": r.choice(["Planning", "Active", "Complete"]),
                "Start_Date": start,
                "End_Date": str(int(start[:4]) + 1) + start[4:],
                "Expected_Revenue": float(r.randint(10, 500) * 1000),
                "Description": None,
            }
            rec = self.wrap(self.new_id(), values, gdpr=False, stop=None)
            self.add("Campaigns", rec)
            leads = r.sample(list(self.records["Leads"].values()), 4)
            if i == 0:
                leads.append(self.stopped_lead)
            contacts = r.sample(list(self.records["Contacts"].values()), 3)
            self.links |= {frozenset((rec["id"], m["id"])) for m in leads + contacts}

    def notes(self, n: int) -> None:
        for i in range(n):
            parent = (
                ("Leads", self.stopped_lead)
                if i == 0
                else self.pick(["Leads", "Contacts", "Accounts", "Deals", "Campaigns"])
            )
            values = {
                "Note_Title": self.rng.choice(NOTE_TITLES),
                "Note_Content": self.rng.choice(NOTE_TEXTS),
                "Parent_Id": self.named_ref(*parent),
            }
            self.put("Notes", values, parent)

    def _who(self, module: str) -> dict[str, Any] | None:
        if self.rng.random() < 0.4:
            return None
        return self.named_ref(module, self.rng.choice(list(self.records[module].values())))

    def tasks(self, n: int) -> None:
        r = self.rng
        for i in range(n):
            parent = (
                ("Leads", self.stopped_lead)
                if i == 0
                else self.pick(["Accounts", "Deals", "Leads"])
            )
            values = {
                "Subject": r.choice(TASKS),
                "Due_Date": self.day(2024, 2025),
                "Status": r.choice(["Not Started", "In Progress", "Completed"]),
                "Priority": r.choice(["High", "Normal", "Low"]),
                "What_Id": self.named_ref(*parent),
                "Who_Id": self._who("Contacts"),
                "Description": None,
            }
            self.put("Tasks", values, parent)

    def events(self, n: int) -> None:
        r = self.rng
        for _ in range(n):
            parent = self.pick(["Accounts", "Deals"]) if r.random() < 0.7 else None
            start = self.when()
            values = {
                "Event_Title": r.choice(EVENTS),
                "Start_DateTime": iso(start),
                "End_DateTime": iso(start + timedelta(hours=1)),
                "Venue": r.choice(["Online", "Customer office", None]),
                "What_Id": self.named_ref(*parent) if parent else None,
                "Who_Id": self._who("Contacts"),
                "Description": None,
            }
            self.put("Events", values, parent)

    def calls(self, n: int) -> None:
        r = self.rng
        for i in range(n):
            # A call to a Lead names it in Who_Id and relates to nothing else.
            lead = i == 0 or r.random() < 0.3
            who = self.named_ref("Leads", self.stopped_lead) if i == 0 else self._who("Leads")
            parent = None if lead else self.pick(["Accounts", "Deals"])
            values = {
                "Subject": r.choice(CALLS),
                "Call_Type": r.choice(["Outbound", "Inbound"]),
                "Call_Start_Time": iso(self.when()),
                "Call_Duration": f"00:{r.randint(1, 59):02d}",
                "What_Id": self.named_ref(*parent) if parent else None,
                "Who_Id": who if lead else self._who("Contacts"),
                "Description": None,
            }
            self.put("Calls", values, parent)


def seed_activities(
    org: int,
    rng: random.Random,
    alloc: Callable[[int], str],
    users: list[dict[str, Any]],
    tag_ids: list[str],
    seeded: dict[str, dict[str, Record]],
) -> tuple[dict[str, dict[str, Record]], Links]:
    """The new modules' records (by module) and the campaign membership links."""
    seeder = ActivitySeeder(rng, alloc, users, tag_ids, seeded)
    sizes = SIZES[org]
    seeder.campaigns(sizes["Campaigns"])
    seeder.notes(sizes["Notes"])
    seeder.tasks(sizes["Tasks"])
    seeder.events(sizes["Events"])
    seeder.calls(sizes["Calls"])
    new = ("Campaigns", "Notes", "Tasks", "Events", "Calls")
    return {m: seeder.records.get(m, {}) for m in new}, seeder.links
