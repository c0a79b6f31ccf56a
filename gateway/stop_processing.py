"""The write corridor: refuse writes against stop-processing records, per record.

For each write the targets are looked up upstream right before forwarding (one batched
``GET /{module}?ids=...`` per module; an upsert's duplicate-check look-up by search). Only
allowed inputs are forwarded; the CRM's entries are merged back in input order.
Delete is never refused: erasure must stay possible. Only GDPR modules (Leads, Contacts,
Vendors, custom modules) have the state; writes to the CRM's other standard modules pass.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import re
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from gateway.crm import endpoints as ep_kind
from gateway.crm.endpoints import Endpoint
from gateway.decision import REFUSED, Decision
from gateway.errors import GatewayError, InvalidData
from gateway.jsonbody import loads_request, record_id
from gateway.privacy import writes
from gateway.privacy.writes import Split
from gateway.types import Incoming, Reply
from gateway.upstream import Headers, fetch_json

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline, View

STATE_LIMIT = 32 * 1024 * 1024
_ID_BATCH = 100
_GDPR_STANDARD = ("Leads", "Contacts", "Vendors")
_GDPR_STANDARD_LOWER = frozenset(m.lower() for m in _GDPR_STANDARD)
_ID_LIKE = re.compile(r"\d{15,25}")  # CRM record ids: long numeric strings


class StopProcessingGuard:
    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline

    # -- state look-ups -----------------------------------------------------------------

    async def states(
        self, view: View, module: str, ids: Sequence[str], headers: Headers
    ) -> dict[str, bool]:
        """Current ``$stop_processing`` of ``ids``; an id missing from the answer is unknown."""
        found: dict[str, bool] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _ID_BATCH):
            chunk = unique[start : start + _ID_BATCH]
            url = (
                f"{self.p.upstream_url}/crm/{view.version}/{quote(module, safe='')}"
                f"?ids={','.join(quote(i, safe='') for i in chunk)}&fields=id&per_page={_ID_BATCH}"
            )
            found.update(await self._lookup(url, headers))
        return found

    async def _lookup(self, url: str, headers: Headers) -> dict[str, bool]:
        try:
            answer = await fetch_json(self.p.upstream, "GET", url, headers, b"", STATE_LIMIT)
        except GatewayError:
            return {}  # unknown: the targets are refused with state_unknown
        if answer.status != 200 or not isinstance(answer.body, dict):
            return {}  # 204 (none found) or an error: nothing is known
        return writes.states_from_records(answer.body.get("data"))

    async def one_state(
        self, view: View, module: str, record_id: str, req: Incoming, headers: Headers
    ) -> tuple[str, bool | None]:
        """(id, state) of the record a single-record write names; by external id when the
        client sent ``X-EXTERNAL`` (the look-up then carries that header too, or the CRM
        would read the external value as a record id)."""
        external = req.header("x-external")
        if record_id.isdigit() and external is None:
            state = (await self.states(view, module, [record_id], headers)).get(record_id)
            return record_id, state
        path = f"{quote(module, safe='')}/{quote(record_id, safe='')}"
        url = f"{self.p.upstream_url}/crm/{view.version}/{path}"
        by_path = [*headers, ("x-external", external)] if external is not None else headers
        try:
            answer = await fetch_json(self.p.upstream, "GET", url, by_path, b"", STATE_LIMIT)
        except GatewayError:
            return record_id, None
        body = answer.body if answer.status == 200 else None
        data = body.get("data") if isinstance(body, dict) else None
        states = writes.states_from_records(data)
        if len(states) != 1:
            return record_id, None
        ((rid, state),) = states.items()
        return rid, state

    async def upsert_states(
        self, view: View, module: str, records: list[Any], fields: Sequence[str], headers: Headers
    ) -> list[tuple[str | None, bool | None]]:
        """Per input record: (target id, state). A record with no id and no duplicate-check
        value is an insert: (None, False)."""
        by_id = await self.states(
            view,
            module,
            [rid for r in records if isinstance(r, dict) and (rid := record_id(r))],
            headers,
        )
        sem = asyncio.Semaphore(8)

        async def one(record: Any) -> tuple[str | None, bool | None]:
            if not isinstance(record, dict):
                return None, None
            rid = record_id(record)
            if rid:
                return rid, by_id.get(rid)
            if not fields:
                return None, None
            pairs = writes.duplicate_values(record, fields)[:10]
            if not pairs:
                return None, False
            criteria = "or".join(
                f"({name}:equals:{writes.escape_criteria_value(value)})" for name, value in pairs
            )
            url = (
                f"{self.p.upstream_url}/crm/{view.version}/{quote(module, safe='')}/search"
                f"?criteria={quote(criteria, safe='')}&per_page=200"
            )
            async with sem:
                try:
                    answer = await fetch_json(
                        self.p.upstream, "GET", url, headers, b"", STATE_LIMIT
                    )
                except GatewayError:
                    return None, None
            if answer.status == 204:
                return None, False  # no duplicate: the upsert inserts
            body = answer.body if isinstance(answer.body, dict) else {}
            data = body.get("data")
            info = body.get("info")
            more = isinstance(info, dict) and info.get("more_records") is not False
            if answer.status != 200 or not isinstance(data, list) or more:
                # An exact match could hide on a page the gateway did not read.
                return None, None
            # Search's equals matches loosely: a hit is a target when its value matches exactly,
            # or when the CRM withheld the value (a restricted field), so it cannot be ruled out.
            matches = [
                rec
                for rec in data
                if isinstance(rec, dict)
                and (writes.matches_duplicate(rec, pairs) or writes.hides_duplicate(rec, pairs))
            ]
            if not matches:
                return None, False
            states = writes.states_from_records(matches)
            if len(states) != len(matches):
                return None, None
            stopped = [rid for rid, s in states.items() if s]
            return (stopped[0], True) if stopped else (next(iter(states)), False)

        return list(await asyncio.gather(*(one(r) for r in records)))

    # -- the corridor -------------------------------------------------------------------

    async def handle(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        if endpoint.kind == ep_kind.UPLOAD:
            return await self.upload(endpoint, req, headers, view, decision)
        if endpoint.kind == ep_kind.BULK_WRITE_CREATE:
            _check_bulk_write_job(_json_object(req.body), decision)
            return await self.p.passthrough(endpoint, req, headers, decision)
        module = endpoint.module or ""
        lookup_headers = [(n, v) for n, v in headers if n != "x-external"]
        if endpoint.kind != ep_kind.INSERT and not await self.is_gdpr_module(
            view, module, lookup_headers
        ):
            # Stop processing exists only in GDPR modules; a Deal has no such state.
            return await self.p.passthrough(endpoint, req, headers, decision)
        if endpoint.kind in (ep_kind.RECORD_WRITE, ep_kind.CONVERT) and endpoint.record_id:
            rid, state = await self.one_state(view, module, endpoint.record_id, req, lookup_headers)
            if endpoint.route == "/crm/{v}/{module}/{id}":
                _body_names_only(req.body, {endpoint.record_id, rid})
            if endpoint.kind == ep_kind.CONVERT and state is False:
                # Converting into an existing Contact writes the lead's data onto it.
                contacts = _convert_contacts(req.body)
                found = await self.states(view, "Contacts", contacts, lookup_headers)
                for cid in contacts:
                    if found.get(cid) is not False:
                        rid, state = cid, found.get(cid)
                        break
            return await self.batch(endpoint, req, headers, decision, None, [(rid, state)])
        if endpoint.kind == ep_kind.RECORD_WRITE:
            # A module-level action other than mass update: its targets cannot be known.
            decision.refuse("unknown_targets")
            raise GatewayError(
                "The gateway cannot check this action's records for stop processing.",
                details={"reason": "unknown_targets"},
                status_code=400,
                code="NOT_ALLOWED",
                reason="unknown_targets",
            )
        body = _json_object(req.body)
        if endpoint.kind == ep_kind.MASS_UPDATE:
            return await self.mass_update(endpoint, req, headers, view, decision, body)
        records = body.get("data")
        if not isinstance(records, list):
            raise InvalidData(details={"reason": "data must be a list of records"})
        if endpoint.kind == ep_kind.INSERT:
            return await self.insert(endpoint, req, headers, view, decision, body, records)
        if endpoint.kind == ep_kind.UPSERT:
            fields = body.get("duplicate_check_fields")
            if not (
                isinstance(fields, list) and all(isinstance(f, str) for f in fields) and fields
            ):
                fields = list(writes.DEFAULT_DUPLICATE_CHECK.get(module.lower(), ("Email",)))
            if req.header("x-external"):
                fields = []  # the external field decides the target: unknown to the gateway
            targets = await self.upsert_states(view, module, records, fields, lookup_headers)
            inserts = [
                i for i, (rid, state) in enumerate(targets) if rid is None and state is False
            ]
            missing = await self.missing_consent(view, module, records, inserts, decision)
            return await self.batch(
                endpoint, req, headers, decision, body, targets, refused=missing
            )
        # UPDATE: every input names its record by id; one without an id names none, unless
        # X-EXTERNAL makes another field the key, whose target the gateway cannot look up.
        ids = [record_id(r) if isinstance(r, dict) else None for r in records]
        states = await self.states(view, module, [i for i in ids if i], lookup_headers)
        keyless: bool | None = None if req.header("x-external") else False
        targets = [(i, states.get(i) if i else keyless) for i in ids]
        return await self.batch(endpoint, req, headers, decision, body, targets)

    async def batch(
        self,
        endpoint: Endpoint,
        req: Incoming,
        headers: Headers,
        decision: Decision,
        body: dict[str, Any] | None,
        targets: Sequence[tuple[str | None, bool | None]],
        *,
        list_key: str = "data",
        refused: dict[int, dict[str, Any]] | None = None,
    ) -> Reply:
        """``refused``: inputs already refused for another reason (missing consent)."""
        refused = dict(refused or {})
        for pos, (rid, state) in enumerate(targets):
            if pos in refused:
                continue
            if rid and rid.isdigit():
                decision.record_ids.append(rid)
            reason = writes.verdict(state)
            if reason is not None:
                refused[pos] = writes.refusal(rid, reason)
                decision.refuse(f"{reason}:{rid}" if rid and rid.isdigit() else reason)
        split = Split([i for i in range(len(targets)) if i not in refused], refused)
        return await self.forward_split(endpoint, req, headers, decision, body, split, list_key)

    async def forward_split(
        self,
        endpoint: Endpoint,
        req: Incoming,
        headers: Headers,
        decision: Decision,
        body: dict[str, Any] | None,
        split: Split,
        list_key: str = "data",
    ) -> Reply:
        total = len(split.forward) + len(split.refused)
        if not split.refused:
            return await self.p.passthrough(endpoint, req, headers, decision)
        decision.outcome = REFUSED
        if not split.forward:
            entries = writes.merge(total, split, [], None)
            return _json(writes.batch_status(split, None), {"data": entries})
        assert body is not None  # single-record writes have nothing left to forward
        items = body[list_key]
        sent = dict(body, **{list_key: [items[i] for i in split.forward]})
        resp = await self.p.send(endpoint, req, headers, decision, body=orjson.dumps(sent))
        answer = await self.p.read_json(resp)
        upstream_entries = answer.get("data") if isinstance(answer, dict) else None
        entries = writes.merge(total, split, upstream_entries, answer)
        return _json(writes.batch_status(split, resp.status), {"data": entries})

    async def insert(
        self,
        endpoint: Endpoint,
        req: Incoming,
        headers: Headers,
        view: View,
        decision: Decision,
        body: dict[str, Any],
        records: list[Any],
    ) -> Reply:
        refused = await self.missing_consent(
            view, endpoint.module or "", records, range(len(records)), decision
        )
        if not refused:
            return await self.p.passthrough(endpoint, req, headers, decision)
        split = Split([i for i in range(len(records)) if i not in refused], refused)
        return await self.forward_split(endpoint, req, headers, decision, body, split)

    async def missing_consent(
        self,
        view: View,
        module: str,
        records: list[Any],
        inserts: Sequence[int],
        decision: Decision,
    ) -> dict[int, dict[str, Any]]:
        """Refusals for the inserted records without Data_Processing_Basis_Details, when the
        policy requires consent and the module is a GDPR module (it has that field)."""
        if not self.p.policy.require_consent or not inserts:
            return {}
        catalog = await self.p.catalog(view, module, decision)
        if catalog.get("Data_Processing_Basis_Details") is None:
            return {}
        refused = {
            i: writes.missing_consent(i)
            for i in inserts
            if not (isinstance(records[i], dict) and _has_consent(records[i]))
        }
        for _ in refused:
            decision.refuse("missing_consent")
        return refused

    async def mass_update(
        self,
        endpoint: Endpoint,
        req: Incoming,
        headers: Headers,
        view: View,
        decision: Decision,
        body: dict[str, Any],
    ) -> Reply:
        ids = body.get("ids")
        if ids is None:
            if self.p.policy.allow_mass_update_by_cvid:
                decision.reasons.append("mass_update_unchecked")
                return await self.p.passthrough(endpoint, req, headers, decision)
            decision.refuse("unknown_targets")
            raise GatewayError(
                "Mass update by custom view or territory cannot be checked for records in "
                "stop processing; send the record ids.",
                details={"reason": "unknown_targets"},
                status_code=400,
                code="NOT_ALLOWED",
                reason="unknown_targets",
            )
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise InvalidData(details={"reason": "ids must be a list of record ids"})
        str_ids = [str(i) for i in ids]
        lookup_headers = [(n, v) for n, v in headers if n != "x-external"]
        states = await self.states(view, endpoint.module or "", str_ids, lookup_headers)
        targets = [(i, states.get(i)) for i in str_ids]
        return await self.batch(endpoint, req, headers, decision, body, targets, list_key="ids")

    async def upload(
        self, endpoint: Endpoint, req: Incoming, headers: Headers, view: View, decision: Decision
    ) -> Reply:
        """A bulk-write file names no module: its ids are looked up in every GDPR module.
        One stopped id refuses the whole file, which cannot be split. Values of the ``id``
        column must be found; any other id-like value is checked too, since a job's field
        mapping may make any column the key."""
        ids, others = _upload_ids(req.header("content-type") or "", req.body)
        if ids or others:
            found: dict[str, bool] = {}
            lookup_headers = [(n, v) for n, v in headers if n not in ("feature", "x-external")]
            wanted = list(dict.fromkeys([*ids, *others]))
            for module in await self.gdpr_modules(view, lookup_headers):
                missing = [i for i in wanted if i not in found]
                if not missing:
                    break
                found.update(await self.states(view, module, missing, lookup_headers))
            verdicts = [(i, writes.verdict(found.get(i))) for i in ids]
            verdicts += [(i, writes.STOP_PROCESSING) for i in others if found.get(i)]
            bad = [(i, r) for i, r in verdicts if r is not None]
            if bad:
                for rid, reason in bad:
                    decision.record_ids.append(rid)
                    decision.refuse(f"{reason}:{rid}")
                return _json(
                    400,
                    {
                        "code": "CANNOT_PROCESS",
                        "details": {"ids": [i for i, _ in bad], "reason": bad[0][1]},
                        "message": "The file names records in stop processing",
                        "status": "error",
                    },
                )
        return await self.p.passthrough(endpoint, req, headers, decision)

    async def module_types(self, view: View, headers: Headers) -> dict[str, tuple[str, str]]:
        """lower-case api_name -> (api_name, generated_type) from the CRM's module list
        (cached with the other metadata); empty when the list cannot be had."""
        try:
            found, _age = await self.p.metadata.modules(view.org.org_id, view.version, view.headers)
        except GatewayError:
            return {}
        return found

    async def gdpr_modules(self, view: View, headers: Headers) -> list[str]:
        """Leads, Contacts, Vendors and the custom modules. When the module list cannot be
        had, the custom modules stay unknown: their ids count as unknown."""
        modules = list(_GDPR_STANDARD)
        for name, kind in (await self.module_types(view, headers)).values():
            if kind == "custom":
                modules.append(name)
        return modules

    async def is_gdpr_module(self, view: View, module: str, headers: Headers) -> bool:
        """Whether records of ``module`` can be in stop processing (contract §1: Leads,
        Contacts, Vendors and custom modules). Only a module the CRM lists as one of its
        other standard modules is exempt; an unknown answer keeps the check (fail closed)."""
        if module.lower() in _GDPR_STANDARD_LOWER:
            return True
        found = (await self.module_types(view, headers)).get(module.lower())
        return found is None or found[1] != "default"


def _check_bulk_write_job(body: dict[str, Any], decision: Decision) -> None:
    """An update or upsert job whose rows find their records by anything but ``id`` names
    targets the upload check could not see: refused."""
    operation = str(body.get("operation") or "").lower()
    resources = body.get("resource")
    if operation == "insert":
        return
    if not isinstance(resources, list):
        raise InvalidData(details={"reason": "resource must be a list"})
    for res in resources:
        find_by = res.get("find_by") if isinstance(res, dict) else None
        if find_by not in (None, "id"):
            decision.refuse("unknown_targets")
            raise GatewayError(
                "A bulk write that finds records by another field than id cannot be checked "
                "for records in stop processing.",
                details={"reason": "unknown_targets"},
                status_code=400,
                code="NOT_ALLOWED",
                reason="unknown_targets",
            )


def _has_consent(record: dict[str, Any]) -> bool:
    for key, value in record.items():
        if key.lower() == "data_processing_basis_details":
            return isinstance(value, dict) and bool(value)
    return False


def _body_names_only(raw: bytes, allowed: set[str]) -> None:
    """A single-record write whose body names another record by id is refused: which of
    the two the CRM would update is not documented, and only the path's was checked."""
    if not raw.strip():
        return
    data = _json_object(raw).get("data")
    for record in data if isinstance(data, list) else ():
        other = record_id(record) if isinstance(record, dict) else None
        if other is not None and other not in allowed:
            raise InvalidData(details={"reason": "the body names another record than the path"})


def _convert_contacts(raw: bytes) -> list[str]:
    """Ids of the existing Contacts a lead conversion merges into."""
    if not raw.strip():
        return []
    data = _json_object(raw).get("data")
    out: list[str] = []
    for item in data if isinstance(data, list) else ():
        for key, value in item.items() if isinstance(item, dict) else ():
            if key.lower() != "contacts" or not value:
                continue
            cid = record_id(value) if isinstance(value, dict) else str(value)
            if cid:
                out.append(cid)
    return out


def _json_object(raw: bytes) -> dict[str, Any]:
    body = loads_request(raw)
    if not isinstance(body, dict):
        raise InvalidData(details={"reason": "the body must be a JSON object"})
    return body


def _json(status: int, body: Any) -> Reply:
    return Reply(status, [("content-type", "application/json;charset=UTF-8")], orjson.dumps(body))


def _upload_ids(content_type: str, body: bytes) -> tuple[list[str], list[str]]:
    """(values of ``id`` columns, other id-like values) of the CSVs inside an uploaded ZIP."""
    if "multipart/form-data" not in content_type.lower():
        raise InvalidData(details={"reason": "the upload must be multipart/form-data"})
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    files = [
        part.get_payload(decode=True)
        for part in message.iter_parts()
        if part.get_param("name", header="content-disposition") == "file"
    ]
    if len(files) != 1 or not isinstance(files[0], bytes):
        raise InvalidData(details={"reason": "the upload needs exactly one 'file' part"})
    import csv

    ids: list[str] = []
    others: list[str] = []
    try:
        with zipfile.ZipFile(io.BytesIO(files[0])) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                with archive.open(member) as raw:
                    reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
                    header = [h.strip().lower() for h in next(reader, [])]
                    col = header.index("id") if "id" in header else -1
                    for row in reader:
                        for i, cell in enumerate(row):
                            value = cell.strip()
                            if i == col and value:
                                ids.append(value)
                            elif _ID_LIKE.fullmatch(value):
                                others.append(value)
    except (zipfile.BadZipFile, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidData(details={"reason": "the file must be a ZIP holding a CSV"}) from exc
    return list(dict.fromkeys(ids)), list(dict.fromkeys(others))
