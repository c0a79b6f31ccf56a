"""The sandbox's modules and field metadata, per org, in Zoho's v8 shape.

The gateway's own tests rely on these exact names and privacy markings, so they are spelled
out as tables rather than generated. Fields are kept in the v8 shape (the richest one);
``meta_routes`` turns them into older versions' shapes on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: restricted, type, export
Private = tuple[bool, str, bool]

ORG_PREFIX = {1: "5725767", 2: "5725768"}

VERSIONS = frozenset({"v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"})
#: versions whose metadata and convert answers use the old (v2-era) shapes
OLD_SHAPE_VERSIONS = frozenset({"v2", "v2.1"})
#: versions whose list ``info`` block carries page tokens
TOKEN_INFO_VERSIONS = frozenset({"v7", "v8"})

GDPR_MODULES = frozenset({"Leads", "Contacts", "Vendors", "Patients"})
SUBFORM_MODULES = frozenset({"Lead_Visits"})
#: modules whose records hang off a parent through a multi-module lookup (+ ``$se_module``)
ACTIVITY_MODULES = frozenset({"Tasks", "Events", "Calls"})
#: the record API has no upsert for these (research §4.6)
NO_UPSERT_MODULES = ACTIVITY_MODULES | {"Notes"}
#: the lookup "module" a multi-module lookup (``Parent_Id``, ``What_Id``) names, as the SDK reads it
SE_MODULE = "se_module"
#: what a multi-module lookup may point at
SE_PARENTS = frozenset(
    {"Leads", "Contacts", "Accounts", "Deals", "Vendors", "Patients", "Campaigns"}
)
#: lookups that accept records of more modules than their metadata names
EXTRA_LOOKUP_TARGETS: dict[str, tuple[str, ...]] = {"Who_Id": ("Leads",)}

#: the field that names a record in lookups and the recycle bin
NAME_FIELD = {
    "Leads": "Full_Name",
    "Contacts": "Full_Name",
    "Accounts": "Account_Name",
    "Deals": "Deal_Name",
    "Vendors": "Vendor_Name",
    "Patients": "Name",
    "Campaigns": "Campaign_Name",
    "Notes": "Note_Title",
    "Tasks": "Subject",
    "Events": "Event_Title",
    "Calls": "Subject",
}

#: upsert's system-defined duplicate-check fields (custom modules: ``Name``); the module's
#: unique fields are checked after them (research §4.6)
DUPLICATE_CHECK = {
    "Leads": ["Email"],
    "Contacts": ["Email"],
    "Vendors": ["Vendor_Name"],
    "Accounts": ["Account_Name"],
    "Deals": ["Deal_Name"],
    "Campaigns": ["Campaign_Name"],
}
CUSTOM_DUPLICATE_CHECK = ["Name"]

#: a unique field's ``unique`` metadata (non-unique fields carry ``{}``, as in the CRM)
UNIQUE = {"casesensitive": "false"}


@dataclass(frozen=True)
class RelatedList:
    """A related list: records of ``target`` whose ``lookup`` field names the parent, or, when
    ``linked``, records tied to the parent in the org's many-to-many link table."""

    api_name: str
    target: str
    lookup: str | None = None
    linked: bool = False


RELATED_LISTS: dict[str, list[RelatedList]] = {
    "Contacts": [
        RelatedList("Deals", "Deals", "Contact_Name"),
        RelatedList("Leads", "Leads", "Referrer"),
        RelatedList("Campaigns", "Campaigns", linked=True),
    ],
    "Accounts": [
        RelatedList("Contacts", "Contacts", "Account_Name"),
        RelatedList("Deals", "Deals", "Account_Name"),
    ],
    "Leads": [
        RelatedList("Patients", "Patients", "Referring_Lead"),
        RelatedList("Campaigns", "Campaigns", linked=True),
    ],
    "Campaigns": [
        RelatedList("Leads", "Leads", linked=True),
        RelatedList("Contacts", "Contacts", linked=True),
    ],
}

# fmt: off
PICKLISTS = {
    "Lead_Source": [
        "Advertisement", "Cold Call", "Employee Referral", "External Referral", "Online Store",
        "Partner", "Public Relations", "Seminar Partner", "Trade Show", "Web Download", "Chat",
    ],
    "Lead_Status": [
        "Attempted to Contact", "Contact in Future", "Contacted", "Junk Lead", "Lost Lead",
        "Not Contacted", "Pre-Qualified", "Not Qualified",
    ],
    "Industry": [
        "Communications", "Consulting", "Education", "Financial Services", "Government",
        "Healthcare", "Manufacturing", "Real Estate", "Retail", "Technology",
    ],
    "Stage": [
        "Qualification", "Needs Analysis", "Value Proposition", "Proposal/Price Quote",
        "Negotiation/Review", "Closed Won", "Closed Lost",
    ],
    # module-specific lists are keyed "Module.Field"
    "Campaigns.Type": ["Advertisement", "Conference", "Email", "Webinar", "Trade Show", "Others"],
    "Campaigns.Status": ["Planning", "Active", "Inactive", "Complete"],
    "Tasks.Status": ["Not Started", "Deferred", "In Progress", "Completed", "Waiting for input"],
    "Tasks.Priority": ["Highest", "High", "Normal", "Low", "Lowest"],
    "Calls.Call_Type": ["Outbound", "Inbound", "Missed"],
}
# fmt: on


@dataclass(frozen=True)
class F:
    """One field row of the tables below."""

    api_name: str
    data_type: str
    private: Private | None = None
    target: str | None = None  # lookup / subform module
    mandatory: bool = False
    read_only: bool = False
    unique: bool = False


HIGH_EXPORT: Private = (True, "High", True)

_DPBD = F("Data_Processing_Basis_Details", "consent_lookup")

MODULE_FIELDS: dict[str, list[F]] = {
    "Leads": [
        F("First_Name", "text", (False, "Low", False)),
        F("Last_Name", "text", mandatory=True),
        F("Full_Name", "text", read_only=True),
        F("Email", "email", HIGH_EXPORT),
        F("Secondary_Email", "email", (False, "Low", True)),
        F("Phone", "phone", (False, "High", True)),
        F("Mobile", "phone", HIGH_EXPORT),
        F("Company", "text"),
        F("Designation", "text"),
        F("Lead_Source", "picklist"),
        F("Lead_Status", "picklist"),
        F("Annual_Revenue", "currency"),
        F("Date_of_Birth", "date", HIGH_EXPORT),
        F("City", "text", (False, "Low", False)),
        F("Country", "text"),
        F("Description", "textarea", (False, "High", True)),
        F("Referrer", "lookup", (False, "High", True), target="Contacts"),
        _DPBD,
        F("Visits", "subform", target="Lead_Visits"),
        F("Tag", "jsonarray"),
        # An external id field (the key of X-EXTERNAL reads and writes); not seeded.
        F("External_Ref", "text", unique=True),
    ],
    "Lead_Visits": [
        F("Visit_Date", "date"),
        F("Notes", "textarea", HIGH_EXPORT),
        F("Visitor_IP", "text", (False, "Low", True)),
        F("Parent_Id", "lookup", target="Leads"),
    ],
    "Contacts": [
        F("First_Name", "text", (False, "Low", False)),
        F("Last_Name", "text", mandatory=True),
        F("Full_Name", "text", read_only=True),
        F("Email", "email", HIGH_EXPORT),
        F("Phone", "phone", (False, "High", True)),
        F("Mailing_City", "text"),
        F("Date_of_Birth", "date", HIGH_EXPORT),
        F("Account_Name", "lookup", target="Accounts"),
        _DPBD,
    ],
    "Vendors": [
        F("Vendor_Name", "text", mandatory=True),
        F("Email", "email", HIGH_EXPORT),
        F("Phone", "phone", (False, "Low", False)),
        F("Website", "website"),
        _DPBD,
    ],
    "Accounts": [
        F("Account_Name", "text", mandatory=True),
        F("Phone", "phone"),
        F("Website", "website"),
        F("Industry", "picklist"),
    ],
    "Deals": [
        F("Deal_Name", "text", mandatory=True),
        F("Amount", "currency"),
        F("Stage", "picklist"),
        F("Closing_Date", "date"),
        F("Contact_Name", "lookup", target="Contacts"),
        F("Account_Name", "lookup", target="Accounts"),
    ],
    "Patients": [
        F("Name", "text", mandatory=True),
        F("Email", "email", HIGH_EXPORT),
        F("Diagnosis", "textarea", HIGH_EXPORT),
        F("Insurance_Number", "text", (False, "Low", True), unique=True),
        F("Referring_Lead", "lookup", target="Leads"),
        _DPBD,
    ],
    "Campaigns": [
        F("Campaign_Name", "text", mandatory=True),
        F("Type", "picklist"),
        F("Status", "picklist"),
        F("Start_Date", "date"),
        F("End_Date", "date"),
        F("Expected_Revenue", "currency"),
        F("Description", "textarea"),
    ],
    "Notes": [
        F("Note_Title", "text"),
        F("Note_Content", "textarea", mandatory=True),
        F("Parent_Id", "lookup", target=SE_MODULE, mandatory=True),
    ],
    "Tasks": [
        F("Subject", "text", mandatory=True),
        F("Due_Date", "date"),
        F("Status", "picklist"),
        F("Priority", "picklist"),
        F("What_Id", "lookup", target=SE_MODULE),
        F("Who_Id", "lookup", target="Contacts"),
        F("Description", "textarea"),
    ],
    "Events": [
        F("Event_Title", "text", mandatory=True),
        F("Start_DateTime", "datetime", mandatory=True),
        F("End_DateTime", "datetime", mandatory=True),
        F("Venue", "text"),
        F("What_Id", "lookup", target=SE_MODULE),
        F("Who_Id", "lookup", target="Contacts"),
        F("Description", "textarea"),
    ],
    "Calls": [
        F("Subject", "text", mandatory=True),
        F("Call_Type", "picklist", mandatory=True),
        F("Call_Start_Time", "datetime", mandatory=True),
        F("Call_Duration", "text"),
        F("What_Id", "lookup", target=SE_MODULE),
        F("Who_Id", "lookup", target="Contacts"),
        F("Description", "textarea"),
    ],
}

#: org 2 differs from org 1 only in these Leads fields
ORG2_LEADS_PRIVATE: dict[str, Private | None] = {
    "Email": None,
    "Company": HIGH_EXPORT,
    "Mobile": None,
}

#: api_name, singular, plural, generated_type
MODULES: list[tuple[str, str, str, str]] = [
    ("Leads", "Lead", "Leads", "default"),
    ("Contacts", "Contact", "Contacts", "default"),
    ("Accounts", "Account", "Accounts", "default"),
    ("Deals", "Deal", "Deals", "default"),
    ("Vendors", "Vendor", "Vendors", "default"),
    ("Patients", "Patient", "Patients", "custom"),
    ("Lead_Visits", "Lead Visit", "Lead Visits", "subform"),
    ("Campaigns", "Campaign", "Campaigns", "default"),
    ("Notes", "Note", "Notes", "default"),
    ("Tasks", "Task", "Tasks", "default"),
    ("Events", "Event", "Meetings", "default"),
    ("Calls", "Call", "Calls", "default"),
]

_JSON_TYPE = {
    "currency": "double",
    "double": "double",
    "integer": "integer",
    "boolean": "boolean",
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
    "consent_lookup": "jsonobject",
    "subform": "jsonarray",
    "jsonarray": "jsonarray",
}

_LENGTH = {
    "text": 255,
    "email": 100,
    "phone": 30,
    "textarea": 32000,
    "picklist": 120,
    "currency": 16,
    "website": 255,
    "bigint": 19,
    "date": 20,
    "datetime": 120,
    "lookup": 120,
    "ownerlookup": 120,
    "consent_lookup": 120,
    "subform": 2000,
    "jsonarray": 2000,
}


def make_id(org: int, n: int) -> str:
    """A 19-digit numeric id, unique within the org (the SDKs parse ids as integers)."""
    return f"{ORG_PREFIX[org]}{n:012d}"


def module_id(org: int, api_name: str) -> str:
    index = [m[0] for m in MODULES].index(api_name)
    return make_id(org, 2175 + index)


def build_modules(org: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for api_name, singular, plural, generated in MODULES:
        subform = generated == "subform"
        out[api_name] = {
            "api_name": api_name,
            "module_name": api_name,
            "singular_label": singular,
            "plural_label": plural,
            "id": module_id(org, api_name),
            "api_supported": True,
            "generated_type": generated,
            "creatable": not subform,
            "editable": not subform,
            "deletable": not subform,
            "viewable": True,
            "global_search_supported": not subform,
            "visible": True,
            "modified_time": None,
        }
    return out


def _system_fields() -> list[F]:
    return [
        F("id", "bigint", read_only=True),
        F("Owner", "ownerlookup"),
        F("Created_Time", "datetime", read_only=True),
        F("Modified_Time", "datetime", read_only=True),
        F("Created_By", "ownerlookup", read_only=True),
        F("Modified_By", "ownerlookup", read_only=True),
    ]


def _field_dict(
    org: int, module: str, index: int, spec: F, private: Private | None
) -> dict[str, Any]:
    label = spec.api_name.replace("_", " ").strip()
    module_index = [m[0] for m in MODULES].index(module)
    field: dict[str, Any] = {
        "api_name": spec.api_name,
        "field_label": label,
        "display_label": label,
        "id": make_id(org, 3000 + module_index * 100 + index),
        "data_type": spec.data_type,
        "json_type": _JSON_TYPE.get(spec.data_type, "string"),
        "custom_field": module == "Patients" and spec.api_name not in ("id", "Owner", "Name"),
        "visible": True,
        "read_only": spec.read_only,
        "field_read_only": spec.read_only,
        "system_mandatory": spec.mandatory,
        "length": _LENGTH.get(spec.data_type, 255),
        "private": None,
        "crypt": None,
        "unique": dict(UNIQUE) if spec.unique else {},
        "lookup": {},
        "subform": None,
        "associated_module": None,
        "pick_list_values": [],
        "operation_type": {
            "web_update": not spec.read_only,
            "api_create": not spec.read_only,
            "web_create": not spec.read_only,
            "api_update": not spec.read_only,
        },
    }
    if private is not None:
        restricted, kind, export = private
        field["private"] = {"restricted": restricted, "type": kind, "export": export}
    if spec.data_type == "lookup" and spec.target:
        target: dict[str, Any] = {"api_name": spec.target}
        if spec.target != SE_MODULE:  # the SDK skips "se_module" and reads no id for it
            target["id"] = module_id(org, spec.target)
        field["lookup"] = {
            "module": target,
            "api_name": None,
            "display_label": None,
            "id": None,
        }
    if spec.data_type == "subform" and spec.target:
        ref = {"module": spec.target, "id": module_id(org, spec.target)}
        field["associated_module"] = dict(ref)
        field["subform"] = dict(ref)
    if spec.data_type == "picklist":
        listed = PICKLISTS.get(f"{module}.{spec.api_name}", PICKLISTS.get(spec.api_name, []))
        values = ["-None-", *listed]
        field["pick_list_values"] = [
            {
                "display_value": v,
                "actual_value": v,
                "sequence_number": i + 1,
                "id": make_id(org, 9000 + module_index * 100 + i),
            }
            for i, v in enumerate(values)
        ]
    return field


def build_fields(org: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for module, specs in MODULE_FIELDS.items():
        rows = [*_system_fields(), *specs]
        fields = []
        for i, spec in enumerate(rows):
            private = spec.private
            if org == 2 and module == "Leads" and spec.api_name in ORG2_LEADS_PRIVATE:
                private = ORG2_LEADS_PRIVATE[spec.api_name]
            fields.append(_field_dict(org, module, i, spec, private))
        out[module] = fields
    return out


def org_info(org: int) -> dict[str, Any]:
    """The ``/org`` object (keys from research §1, union of the SDKs' Org classes)."""
    names = {
        1: ("Zylker Demo", "20061000000000001", "20061000001"),
        2: ("Second Org", "20062000000000001", "20062000001"),
    }
    company, org_id, zgid = names[org]
    return {
        "country": "US",
        "photo_id": None,
        "city": "Pleasanton",
        "description": None,
        "mc_status": False,
        "gapps_enabled": False,
        "domain_name": f"org{zgid}",
        "translation_enabled": False,
        "street": None,
        "alias": None,
        "currency": "US Dollar",
        "id": org_id,
        "state": "California",
        "fax": None,
        "employee_count": "154",
        "zip": "94588",
        "website": "www.zylker.com",
        "currency_symbol": "$",
        "mobile": None,
        "currency_locale": "en_US",
        "primary_zuid": zgid[:-1] + "0",
        "zia_portal_id": None,
        "time_zone": "Etc/UTC",
        "zgid": zgid,
        "country_code": "US",
        "license_details": {
            "paid_expiry": None,
            "users_license_purchased": 10,
            "trial_type": None,
            "trial_expiry": None,
            "paid": True,
            "paid_type": "enterprise",
        },
        "phone": "+1-555-0100",
        "company_name": company,
        "privacy_settings": True,
        "primary_email": "p.boyle@zylker.com" if org == 1 else "admin@second.example.com",
        "iso_code": "USD",
        "hipaa_compliance_enabled": False,
        "type": "Production",
        "max_per_page": 200,
        "lite_users_enabled": False,
        "created_time": "2019-04-01T09:00:00+00:00",
    }
