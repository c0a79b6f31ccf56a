"""The answers that carry no record: a job's status (and the answer creating a bulk job) and a
bulk-write upload's receipt.

Pure. A mass update's, bulk read's or bulk write's status, and the answer to an upload,
are the CRM's bookkeeping: states, counts, ids, times, field and module names, download
paths. No record is in them, so there are no fields to judge them by, and they are checked
by what they may hold instead (default deny): a member whose name is not in the CRM's
vocabulary for them, or a text that is not a plain token, a time or a path, is withheld
(null); a state is one of the CRM's states, a message one of its messages.

What this cannot judge: a plain word under a name the vocabulary has (a field name in
``query.fields``, a user's name in ``created_by``, words in a criterion's ``value``), and
numbers. An error's message is ``errors_body``'s to judge (the caller scrubs errors
first). A CRM that meant to hide
a value in its bookkeeping could still do so there; one that answers as the CRM does
carries none.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.privacy.errors_body import DETAILS_VOCABULARY

#: the members of those answers (lower case), in every version the gateway forwards
VOCABULARY = frozenset(
    {
        # envelope
        "data", "status", "code", "message", "details", "info",
        # ids and times
        "id", "job_id", "file_id", "created_time", "modified_time", "created_by", "name",
        # bulk read: the job and its query
        "operation", "state", "query", "module", "api_name", "page", "fields", "criteria",
        "group", "group_operator", "comparator", "field", "value", "cvid", "file_type",
        "page_token", "result", "count", "download_url", "per_page", "more_records",
        "next_page_token", "callback", "url", "method",
        # bulk write: the job, its resources and their files
        "character_encoding", "resource", "type", "field_mappings", "index", "format",
        "find_by", "default_value", "file", "added_count", "skipped_count", "updated_count",
        "total_count", "ignore_empty",
        # mass update
        "failed_count", "not_updated_count",
    }
) | DETAILS_VOCABULARY  # a CRM error's details, as errors_body keeps them  # fmt: skip
#: a state, a code, an id, a name of a field or module, a number as text
_TOKEN = re.compile(r"[A-Za-z0-9_.$\-]{1,200}")
#: an ISO time (2026-12-01T10:00:00+05:30)
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?")
#: a download path or URL of the CRM's (/crm/bulk/v8/read/111/result)
_PATH = re.compile(r"(https://[A-Za-z0-9.\-]{1,253})?(/[A-Za-z0-9_.\-]{1,200}){1,12}")
#: the CRM's own messages in them (lower case, without a final period); any other text,
#: which might name a record, is withheld
MESSAGES = frozenset(
    {"success", "file uploaded", "added successfully", "mass update scheduled successfully"}
)
#: a job's, resource's, file's or answer's state (lower case, "_" as a space)
STATES = frozenset(
    {"added", "queued", "scheduled", "in progress", "running", "completed", "failed",
     "failure", "skipped", "success", "error"}
)  # fmt: skip
#: the name of the CRM user who made a job (``created_by``)
_USER = re.compile(r"[\w .'\-]{1,100}")
#: a criterion's value echoed in a bulk read's status ("Cold Call", "2026-12-01")
_WORDS = re.compile(r"[\w .,'\-:/+]{1,200}")
_FORMAT = re.compile(r"[A-Za-z/.,: \-]{1,40}")
_DEPTH = 16


def scrub_status(body: Any, *, failed: bool = False) -> int:
    """Withhold in ``body`` (in place) what such an answer may not hold; return how many
    values were withheld. Past ``_DEPTH`` levels everything is withheld. The messages of
    the error envelopes ``errors_body.scrub_answer`` judged are kept: the answer's own when
    it says ``"status": "error"`` or ``failed`` (the HTTP status) with no ``data``, and
    those of ``data`` entries that say so."""
    return _scrub(body, 0, "", failed)


def _scrub(value: Any, depth: int, parent: str, failed_top: bool = False) -> int:
    withheld = 0
    if isinstance(value, dict):
        status = value.get("status")
        failed = (depth == 0 and (status == "error" or (failed_top and "data" not in value))) or (
            depth == 2 and parent == "data" and status == "error"
        )
        for key in list(value):
            inner = value[key]
            if inner is None:
                continue
            name = key.lower() if isinstance(key, str) else ""
            if failed and name == "message" and isinstance(inner, str):
                continue
            if name in VOCABULARY and depth < _DEPTH and _kept(name, inner, parent):
                withheld += _scrub(inner, depth + 1, name)
            else:
                value[key] = None
                withheld += 1
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            if depth < _DEPTH and _kept(parent, inner, parent):  # as the list's member
                withheld += _scrub(inner, depth + 1, parent)
            elif inner is not None:
                value[i] = None
                withheld += 1
    return withheld


def _kept(name: str, value: Any, parent: str) -> bool:
    """Whether a value of member ``name`` (of an object under ``parent``) may stay
    (objects and lists are looked into)."""
    if value is None or isinstance(value, bool | int | float | dict | list):
        return True
    if not isinstance(value, str):
        return False
    if name == "message":
        return value.lower().rstrip(".") in MESSAGES
    if name in ("state", "status"):
        return value.lower().replace("_", " ") in STATES
    if name == "name" and parent == "created_by":
        return _USER.fullmatch(value) is not None  # a CRM user, as a record's Owner
    if name == "value":  # a criterion's, as the client sent it: words, no address
        return _WORDS.fullmatch(value) is not None
    if name == "format":  # a bulk write's date or time format (MM/dd/yyyy)
        return _FORMAT.fullmatch(value) is not None
    return bool(_TOKEN.fullmatch(value) or _TIME.fullmatch(value) or _PATH.fullmatch(value))
