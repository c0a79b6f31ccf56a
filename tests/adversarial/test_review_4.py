"""Attacks tried while reading the whole change of red teams 9 to 20 once more: each states
what it tried and asserts the safe outcome."""

from __future__ import annotations

import pytest

from tests.adversarial.conftest import send
from tests.adversarial.test_redteam_12 import CONSENT, _answer
from tests.conftest import Crm, MakeGateway


@pytest.mark.parametrize("mode", ["shadow", "off"])
def test_a_duplicate_holder_named_by_an_unknown_field_is_withheld_in_every_mode(
    crm: Crm, make_gateway: MakeGateway, mode: str
) -> None:
    """A refused insert's ``DUPLICATE_DATA`` naming a field the metadata does not know (one
    made at the CRM since, perhaps restricted) cannot be judged: its ``duplicate_record``
    is withheld even where the redact rule passes judged values on (shadow, off), as every
    value no metadata judged is."""
    gw = make_gateway({"rules": {"redact": mode}})
    holder = next(p for p in crm.records("Patients") if not p["$stop_processing"])
    details = {"api_name": "No_Such_Field", "duplicate_record": {"id": holder["id"]}}
    refused = {"code": "DUPLICATE_DATA", "status": "error", "message": "m", "details": details}
    _answer(crm, "/crm/v8/Patients", "POST", {"data": [refused]})
    row = {"Name": "Review Probe", "Data_Processing_Basis_Details": CONSENT}
    r = send(gw, "POST", "/crm/v8/Patients", {"data": [row]})
    assert "DUPLICATE_DATA" in r.text and "duplicate_record" in r.text, r.text
    assert holder["id"] not in r.text, r.text
