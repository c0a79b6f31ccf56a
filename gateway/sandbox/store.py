"""In-memory state: one ``OrgStore`` per org, and the ``Sandbox`` that owns both.

Each ``create_app`` call builds its own ``Sandbox``, so several apps can run side by side in
one test process without sharing anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .schema import (
    MODULE_FIELDS,
    NAME_FIELD,
    SE_MODULE,
    SUBFORM_MODULES,
    build_fields,
    build_modules,
    make_id,
    org_info,
)
from .seed import Record, iso, seed_records
from .seed_activities import seed_activities

_USERS = {
    1: [
        ("Patricia", "Boyle", "p.boyle@zylker.com", "CEO", "Administrator"),
        ("Ryan", "Chen", "r.chen@zylker.com", "Manager", "Standard"),
        ("Amelia", "Burns", "a.burns@zylker.com", "Sales Rep", "Standard"),
    ],
    2: [
        ("Sam", "Okafor", "admin@second.example.com", "CEO", "Administrator"),
        ("Lena", "Vogt", "l.vogt@second.example.com", "Manager", "Standard"),
    ],
}


def build_users(org: int) -> list[dict[str, Any]]:
    users = []
    for i, (first, last, email, role, profile) in enumerate(_USERS[org]):
        users.append(
            {
                "id": make_id(org, 411001 + i),
                "first_name": first,
                "last_name": last,
                "full_name": f"{first} {last}",
                "email": email,
                "role": {"name": role, "id": make_id(org, 7001 + i)},
                "profile": {"name": profile, "id": make_id(org, 7101 + (profile == "Standard"))},
                "status": "active",
                "confirm": True,
                "time_zone": "Etc/UTC",
                "locale": "en_US",
                "country": "US",
                "language": "en_US",
            }
        )
    return users


def now_iso() -> str:
    return iso(datetime.now(UTC))


def canon_id(raw: Any) -> str | None:
    """A record id as the CRM compares ids: a JSON number, surrounding whitespace or leading
    zeros name the same record. None for what cannot be an id (booleans, floats, objects)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw) if raw >= 0 else None
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit():
        return str(int(text))
    return text or None


class OrgStore:
    """One org's metadata, records and jobs. ``generation`` changes on every mutation."""

    def __init__(self, num: int, rng: random.Random, seed: int = 42) -> None:
        self.num = num
        self.info = org_info(num)
        self.modules = build_modules(num)
        self.fields = build_fields(num)
        #: modules whose field metadata an admin call replaced (served verbatim)
        self.fields_override: set[str] = set()
        self.users = build_users(num)
        self.tag_ids = [make_id(num, 8001 + i) for i in range(4)]
        self._counter = 500_000
        self.records: dict[str, dict[str, Record]] = {
            m: {} for m in MODULE_FIELDS if m not in SUBFORM_MODULES
        }
        seeded = seed_records(num, rng, self._alloc, self.users, self.tag_ids)
        for module, recs in seeded.items():
            self.records[module].update(recs)
        # A generator of its own, so that the older modules' data stay what they were.
        own_rng = random.Random(f"activities-{seed}-{num}")
        activities, links = seed_activities(
            num, own_rng, self._alloc, self.users, self.tag_ids, seeded
        )
        for module, recs in activities.items():
            self.records[module].update(recs)
        #: many-to-many related-list links (Campaigns <-> Leads / Contacts), as id pairs
        self.links: set[frozenset[str]] = links
        self.id_module = {rid: m for m, recs in self.records.items() for rid in recs}
        self.converted: set[str] = set()
        #: (module, recycle-bin entry) of records deleted since the last reset
        self.deleted: list[tuple[str, dict[str, Any]]] = []
        self.uploads: dict[str, bytes] = {}
        self.bulk_reads: dict[str, dict[str, Any]] = {}
        self.bulk_writes: dict[str, dict[str, Any]] = {}
        self.mass_jobs: dict[str, dict[str, Any]] = {}
        self.generation = 0
        #: pre-rendered list pages, valid for the current generation only
        self.page_cache: dict[tuple[Any, ...], bytes] = {}
        #: custom views by id (custom_views.py seeds them)
        self.custom_views: dict[str, dict[str, Any]] = {}

    def _alloc(self, step: int) -> str:
        self._counter += step
        return make_id(self.num, self._counter)

    def new_id(self) -> str:
        return self._alloc(3)

    def touch(self) -> None:
        self.generation += 1
        self.page_cache.clear()

    # -- users -------------------------------------------------------------------------------
    @property
    def current_user(self) -> dict[str, Any]:
        return self.users[0]

    def user_ref(self, user: dict[str, Any] | None = None) -> dict[str, Any]:
        u = user or self.current_user
        return {"name": u["full_name"], "id": u["id"], "email": u["email"]}

    def user_by_id(self, uid: str) -> dict[str, Any] | None:
        return next((u for u in self.users if u["id"] == uid), None)

    # -- metadata ----------------------------------------------------------------------------
    def resolve_module(self, name: str) -> str | None:
        if name in self.modules:
            return name
        lower = name.lower()
        return next((m for m in self.modules if m.lower() == lower), None)

    def field_map(self, module: str) -> dict[str, dict[str, Any]]:
        """Fields keyed by lower-case api name (Zoho matches api names case-insensitively)."""
        return {
            str(f.get("api_name", "")).lower(): f
            for f in self.fields.get(module, [])
            if isinstance(f, dict)
        }

    def field_types(self, module: str) -> dict[str, str]:
        return {
            str(f.get("api_name")): str(f.get("data_type", "text"))
            for f in self.fields.get(module, [])
            if isinstance(f, dict)
        }

    def lookup_target(self, field_meta: dict[str, Any]) -> str | None:
        lookup = field_meta.get("lookup") or {}
        target = lookup.get("module") if isinstance(lookup, dict) else None
        if isinstance(target, dict):
            target = target.get("api_name")
        if isinstance(target, str):
            return self.resolve_module(target)
        return None

    def subform_target(self, field_meta: dict[str, Any]) -> str | None:
        for key in ("associated_module", "subform"):
            ref = field_meta.get(key)
            if isinstance(ref, dict) and isinstance(ref.get("module"), str):
                return self.resolve_module(ref["module"])
        return None

    @staticmethod
    def is_se_lookup(field_meta: dict[str, Any]) -> bool:
        """A multi-module lookup (``Parent_Id``, ``What_Id``): ``$se_module`` names its module."""
        lookup = field_meta.get("lookup") or {}
        target = lookup.get("module") if isinstance(lookup, dict) else None
        if isinstance(target, dict):
            target = target.get("api_name")
        return target == SE_MODULE

    def se_lookup_field(self, module: str) -> str | None:
        return next(
            (
                str(f["api_name"])
                for f in self.fields.get(module, [])
                if isinstance(f, dict) and "api_name" in f and self.is_se_lookup(f)
            ),
            None,
        )

    def subform_fields(self, module: str) -> list[str]:
        return [
            str(f["api_name"])
            for f in self.fields.get(module, [])
            if isinstance(f, dict) and f.get("data_type") == "subform" and "api_name" in f
        ]

    # -- records -----------------------------------------------------------------------------
    def get(self, module: str, rid: Any) -> Record | None:
        key = canon_id(rid)
        return self.records.get(module, {}).get(key) if key is not None else None

    def module_of(self, rid: Any) -> str | None:
        key = canon_id(rid)
        return self.id_module.get(key) if key is not None else None

    def active(self, module: str, converted: str = "false") -> list[Record]:
        """Records in default (insertion) order; converted Leads only when asked for."""
        recs = self.records.get(module, {})
        if module != "Leads" or converted == "both":
            return list(recs.values())
        want = converted == "true"
        return [r for rid, r in recs.items() if (rid in self.converted) == want]

    def put(self, module: str, rec: Record) -> None:
        self.records[module][rec["id"]] = rec
        self.id_module[rec["id"]] = module
        self.touch()

    def remove(self, module: str, rid: Any) -> Record | None:
        key = canon_id(rid)
        rec = self.records.get(module, {}).pop(key, None) if key is not None else None
        if rec is not None and key is not None:
            self.id_module.pop(key, None)
            self.converted.discard(key)
            self.links = {pair for pair in self.links if key not in pair}
            self.touch()
        return rec

    def display_name(self, module: str, rec: Record) -> str:
        key = NAME_FIELD.get(module)
        value = rec.get(key) if key else None
        if value is None and module in ("Leads", "Contacts"):
            value = " ".join(str(rec.get(k) or "") for k in ("First_Name", "Last_Name")).strip()
        return str(value) if value not in (None, "") else str(rec.get("id"))

    def ref(self, module: str, rec: Record) -> dict[str, Any]:
        return {"name": self.display_name(module, rec), "id": rec["id"]}


@dataclass
class Config:
    gzip: bool = False
    private_type_case: str = "title"


@dataclass
class FaultRule:
    path_contains: str
    method: str | None = None
    status: int | None = None
    body: str | None = None
    json: Any = None
    content_type: str | None = None
    content_encoding: str | None = None
    delay: float = 0.0
    times: int | None = None


@dataclass
class Sandbox:
    """Everything one sandbox app holds; ``reset()`` returns it to the seeded state."""

    seed: int = 42
    initial_gzip: bool = False
    config: Config = field(default_factory=Config)
    faults: list[FaultRule] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    orgs: dict[int, OrgStore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        rng = random.Random(self.seed)
        self.orgs = {1: OrgStore(1, rng, self.seed), 2: OrgStore(2, rng, self.seed)}
        from .custom_views import seed_views  # it reads the stores built here

        for org in self.orgs.values():
            org.custom_views = seed_views(org)
        self.faults.clear()
        self.requests.clear()
        self.config = Config(gzip=self.initial_gzip)

    @staticmethod
    def org_of_token(token: str) -> int:
        return 2 if token.startswith("org2-") else 1
