"""Attacks tried while reviewing the corridor's performance round and the cvid guard: each
test here failed before its fix (one commit per finding)."""

from __future__ import annotations

from tests.adversarial.conftest import Marked
from tests.adversarial.test_cvid import make_view, record_calls, refused
from tests.conftest import Crm, GatewayHandle


def test_a_view_criterion_naming_a_field_twice_is_checked_on_both(
    crm: Crm, gw: GatewayHandle, marked: Marked
) -> None:
    """A criterion with a top-level ``api_name`` (v2's spelling) and a ``field`` object
    (v2.1+'s) naming another field: the CRM filters on the first, so the gateway must not
    check only the second (bulk criteria are checked on both already)."""
    email = marked.lead["Email"]
    criterion = {
        "comparator": "equal",
        "api_name": "Email",
        "field": {"api_name": "Last_Name", "id": "1"},
        "value": email,
    }
    cvid = make_view(crm, "Leads", criterion)
    # straight at the CRM the view is an oracle on Email
    direct = crm.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    assert [x["id"] for x in direct.json()["data"]] == [marked.lead["id"]]
    crm.clear()
    r = gw.http.get("/crm/v8/Leads", params={"fields": "Last_Name", "cvid": cvid})
    refused(r, "Email")
    assert record_calls(crm) == []
    marked.assert_clean(r)
