"""The official Zoho CRM Python SDK for API v8 (zohocrmsdk8-0) works through the gateway.

A real sandbox and a real gateway in front of it, and the unmodified SDK pointed at the
gateway: an ``Environment`` whose API URL is the gateway's, a ready access token (the SDK
then never calls the accounts server), and a token store, resource path (field-metadata
cache) and logger that keep every file the SDK writes inside a tmp dir. The accounts and
upload URLs point at a closed local port, so nothing can reach the internet.

SDK initialisation is process-global, so everything lives in this one module with its own
servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.header_map import HeaderMap
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.parameter_map import ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.record import (
    ActionWrapper,
    APIException,
    BodyWrapper,
    Field,
    GetRecordsParam,
    Record,
    RecordOperations,
    ResponseWrapper,
    SearchRecordsParam,
    SuccessResponse,
)
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig

from gateway.app import create_app
from gateway.policy import policy_from_mapping
from gateway.sandbox import create_app as create_sandbox
from gateway.settings import Settings
from tests.conftest import AUTH
from tests.servers import ThreadedServer, free_port

FIELDS = "Last_Name,Email,Mobile,Company,$stop_processing"


class LocalDataCenter(DataCenter):
    """A data centre whose API is the gateway; accounts and uploads go to a closed port."""

    def __init__(self, api_url: str, dead_url: str) -> None:
        self.api_url = api_url
        self.dead_url = dead_url

    def get_iam_url(self) -> str:
        return f"{self.dead_url}/oauth/v2/token"

    def get_file_upload_url(self) -> str:
        return self.dead_url

    def environment(self) -> Any:
        return DataCenter.Environment(self.api_url, self.get_iam_url(), self.get_file_upload_url())


@dataclass
class Sdk:
    crm_url: str
    gw_url: str
    files: Path  # where the SDK may write
    cwd_before: set[str]

    def sandbox_received(self, path_contains: str) -> list[dict[str, Any]]:
        log = httpx.get(f"{self.crm_url}/_sandbox/requests", timeout=30).json()["requests"]
        return [r for r in log if path_contains in r["path"]]

    def sandbox_clear(self) -> None:
        httpx.delete(f"{self.crm_url}/_sandbox/requests", timeout=30)


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdk]:
    crm = ThreadedServer(create_sandbox(seed=42)).start()
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    settings_ = Settings.build(
        upstream=crm.url,
        audit_log=str(audit),
        env={"GATEWAY_SECRET": "s"},
        policy=policy_from_mapping({"audit": {"fsync": "never"}}),
    )
    gw = ThreadedServer(create_app(settings_)).start()
    files = tmp_path_factory.mktemp("sdk")
    # The SDK uses requests, which honours HTTP(S)_PROXY: keep local calls local.
    mp = pytest.MonkeyPatch()
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv("no_proxy", "127.0.0.1,localhost")
    cwd_before = set(os.listdir(os.getcwd()))
    Initializer.initialize(
        environment=LocalDataCenter(gw.url, f"http://127.0.0.1:{free_port()}").environment(),
        token=OAuthToken(access_token="test-token"),
        store=FileStore(str(files / "tokens.csv")),
        sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False),
        resource_path=str(files),
        logger=Logger.get_instance(Logger.Levels.WARNING, None),
    )
    yield Sdk(crm.url, gw.url, files, cwd_before)
    gw.stop()
    crm.stop()
    mp.undo()


def _leads() -> list[Any]:
    params = ParameterMap()
    params.add(GetRecordsParam.fields, FIELDS)
    params.add(GetRecordsParam.per_page, 200)
    response = RecordOperations("Leads").get_records(params, HeaderMap())
    assert response.get_status_code() == 200
    page = response.get_object()
    assert isinstance(page, ResponseWrapper), vars(page)
    records: list[Any] = page.get_data()
    return records


def test_sdk_reads_leads_and_private_fields_come_back_null(sdk: Sdk) -> None:
    records = _leads()
    assert len(records) == 200
    assert sdk.sandbox_received("/crm/v8/Leads")  # it went through the gateway to the sandbox
    raw = httpx.get(
        f"{sdk.crm_url}/crm/v8/Leads",
        params={"fields": FIELDS, "per_page": 200},
        headers=AUTH,
        timeout=30,
    ).json()["data"]
    assert [int(r["id"]) for r in raw] == [rec.get_id() for rec in records]
    assert any(r["Email"] for r in raw) and any(r["Mobile"] for r in raw)  # not vacuous
    for rec in records:
        assert isinstance(rec.get_id(), int)
        assert rec.get_key_value("Email") is None
        assert rec.get_key_value("Mobile") is None
        assert rec.get_key_value("Last_Name")
        assert rec.get_key_value("Company")


def test_sdk_search_on_a_restricted_field_surfaces_invalid_query(sdk: Sdk) -> None:
    sdk.sandbox_clear()
    params = ParameterMap()
    params.add(SearchRecordsParam.criteria, "(Email:equals:someone@example.com)")
    response = RecordOperations("Leads").search_records(params, HeaderMap())
    assert response.get_status_code() == 400
    refusal = response.get_object()
    assert isinstance(refusal, APIException), vars(refusal)
    assert refusal.get_code().get_value() == "INVALID_QUERY"
    assert refusal.get_status().get_value() == "error"
    assert refusal.get_details()["api_name"] == "Email"
    assert not sdk.sandbox_received("/search")


def test_sdk_update_of_a_stopped_lead_gets_per_record_results(sdk: Sdk) -> None:
    records = _leads()
    active, stopped = records[0], records[3]
    assert active.get_key_value("$stop_processing") is False
    assert stopped.get_key_value("$stop_processing") is True

    batch = []
    for rec in (active, stopped):
        change = Record()
        change.set_id(rec.get_id())
        change.add_field_value(Field.Leads.company(), "Renamed by the SDK")
        batch.append(change)
    body = BodyWrapper()
    body.set_data(batch)
    sdk.sandbox_clear()
    response = RecordOperations("Leads").update_records(body, HeaderMap())

    assert response.get_status_code() == 207
    wrapper = response.get_object()
    assert isinstance(wrapper, ActionWrapper), vars(wrapper)
    ok, refused = wrapper.get_data()
    assert isinstance(ok, SuccessResponse)
    assert ok.get_code().get_value() == "SUCCESS"
    assert int(ok.get_details()["id"]) == active.get_id()
    assert isinstance(refused, APIException)
    assert refused.get_code().get_value() == "CANNOT_PROCESS"
    assert refused.get_status().get_value() == "error"
    assert int(refused.get_details()["id"]) == stopped.get_id()
    assert refused.get_details()["reason"] == "stop_processing"

    (sent,) = [r for r in sdk.sandbox_received("/crm/v8/Leads") if r["method"] == "PUT"]
    assert str(active.get_id()) in sent["body"]
    assert str(stopped.get_id()) not in sent["body"]
    after = {r.get_id(): r for r in _leads()}
    assert after[active.get_id()].get_key_value("Company") == "Renamed by the SDK"
    assert after[stopped.get_id()].get_key_value("Company") == stopped.get_key_value("Company")


def test_sdk_upsert_of_free_records_succeeds_through_the_gateway(sdk: Sdk) -> None:
    """One row names a free lead by id, one matches a free lead by its Email (the Leads
    duplicate-check field), one is new: all three reach the CRM."""
    records = _leads()
    by_id, by_email = records[0], records[1]
    assert by_id.get_key_value("$stop_processing") is False
    assert by_email.get_key_value("$stop_processing") is False
    rows = []
    first = Record()
    first.set_id(by_id.get_id())
    first.add_field_value(Field.Leads.company(), "Upserted by id")
    rows.append(first)
    # The gateway withholds Email; the CRM's own copy tells which address to match on.
    raw = httpx.get(
        f"{sdk.crm_url}/crm/v2/Leads/{by_email.get_id()}", headers=AUTH, timeout=30
    ).json()["data"][0]
    assert raw["Email"]
    second = Record()
    second.add_field_value(Field.Leads.email(), raw["Email"])
    second.add_field_value(Field.Leads.last_name(), "Upserted by email")
    rows.append(second)
    third = Record()
    third.add_field_value(Field.Leads.last_name(), "Brand new from the SDK")
    rows.append(third)
    body = BodyWrapper()
    body.set_data(rows)
    sdk.sandbox_clear()
    response = RecordOperations("Leads").upsert_records(body, HeaderMap())
    assert response.get_status_code() in (200, 201), vars(response.get_object())
    wrapper = response.get_object()
    assert isinstance(wrapper, ActionWrapper), vars(wrapper)
    assert [type(e) for e in wrapper.get_data()] == [SuccessResponse] * 3
    (sent,) = [r for r in sdk.sandbox_received("/upsert") if r["method"] == "POST"]
    assert "Brand new from the SDK" in sent["body"]
    # The gateway looked the email match up (a search naming $stop_processing) first.
    (lookup,) = sdk.sandbox_received("/crm/v8/Leads/search")
    assert "stop_processing" in lookup["query"]
    details = [e.get_details() for e in wrapper.get_data()]
    assert int(details[1]["id"]) == by_email.get_id()  # the CRM updated the matched lead


def test_sdk_wrote_files_only_in_its_tmp_dir(sdk: Sdk) -> None:
    assert (sdk.files / "tokens.csv").is_file()
    assert list((sdk.files / "resources").glob("*.json"))
    assert set(os.listdir(os.getcwd())) == sdk.cwd_before
