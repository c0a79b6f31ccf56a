"""Property: a private value, wherever the CRM puts it, never reaches the client.

Random records carry unique marker strings in every private place (top-level fields in any
case, private lookups, subform rows) and a random selection of ordinary fields; they are
read back through the real gateway by every read channel. No marker may appear in any
byte of any answer, and ordinary values must survive.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.policy import policy_from_mapping
from gateway.sandbox import create_app as create_sandbox
from gateway.settings import Settings
from tests.conftest import AUTH
from tests.servers import ThreadedServer

PRIVATE_TOP = [
    "Email",
    "Secondary_Email",
    "Phone",
    "Mobile",
    "Date_of_Birth",
    "City",
    "Description",
    "First_Name",
]
PRIVATE_ROW = ["Notes", "Visitor_IP"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    crm = ThreadedServer(create_sandbox(seed=7)).start()
    log = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    settings_ = Settings.build(
        upstream=crm.url,
        audit_log=str(log),
        env={"GATEWAY_SECRET": "s"},
        policy=policy_from_mapping({"audit": {"fsync": "never"}}),
    )
    gw = ThreadedServer(create_app(settings_)).start()
    yield crm.url, gw.url
    gw.stop()
    crm.stop()


def _marker() -> str:
    return "MK" + uuid.uuid4().hex


def _case(name: str, variant: int) -> str:
    return [name, name.lower(), name.upper()][variant]


records = st.fixed_dictionaries(
    {
        "private": st.lists(st.sampled_from(PRIVATE_TOP), min_size=1, unique=True),
        "case": st.integers(0, 2),
        "with_referrer": st.booleans(),
        "rows": st.integers(0, 3),
        "company": st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
            min_size=1,
            max_size=20,
        ),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=records)
def test_no_private_marker_ever_reaches_the_client(
    servers: tuple[str, str], spec: dict[str, Any]
) -> None:
    crm_url, gw_url = servers
    markers: list[str] = []
    last_name = "LN" + uuid.uuid4().hex[:12]
    rec: dict[str, Any] = {
        "Last_Name": last_name,
        "Company": spec["company"],
        "$stop_processing": False,
    }
    for name in spec["private"]:
        markers.append(m := _marker())
        rec[_case(name, spec["case"])] = m
    if spec["with_referrer"]:
        markers.append(m := _marker())
        rec["Referrer"] = {"name": m, "id": "5725767000000000001"}
    rows = []
    for _ in range(spec["rows"]):
        row = {"id": str(uuid.uuid4().int)[:19], "Visit_Date": "2024-01-01"}
        for name in PRIVATE_ROW:
            markers.append(m := _marker())
            row[name] = m
        rows.append(row)
    if rows:
        rec["Visits"] = rows
    created = httpx.post(f"{crm_url}/_sandbox/records/1/Leads", json=rec)
    assert created.status_code == 200, created.text
    rid = created.json()["id"]

    with httpx.Client(base_url=gw_url, headers=AUTH, timeout=30) as gw:
        answers = [
            gw.get(f"/crm/v8/Leads/{rid}"),
            gw.get(f"/crm/v2/Leads/{rid}", params={"include": "private_fields"}),
            gw.get("/crm/v8/Leads/search", params={"criteria": f"(Last_Name:equals:{last_name})"}),
            gw.get("/crm/v2/Leads", params={"ids": rid}),
            gw.post(
                "/crm/v8/coql",
                content=orjson.dumps(
                    {
                        "select_query": "select Last_Name, Company, Email, Mobile, Phone, City, "
                        "First_Name, Description, Referrer, Referrer.Last_Name as r "
                        f"from Leads where Last_Name = '{last_name}'"
                    }
                ),
            ),
        ]
    for r in answers:
        assert r.status_code == 200, r.text
        for m in markers:
            assert m.encode() not in r.content
    one = answers[0].json()["data"][0]
    assert one["Last_Name"] == last_name and one["Company"] == spec["company"]
    coql = answers[4].json()["data"][0]
    assert coql["Last_Name"] == last_name and coql["Company"] == spec["company"]
