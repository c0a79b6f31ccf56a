"""Per-record refusal and merge of a partly refused batch (pure)."""

from __future__ import annotations

from gateway.privacy import writes
from gateway.privacy.writes import Split


def test_entries_are_merged_back_in_input_order() -> None:
    split = Split([0, 2], {1: writes.refusal("7", writes.STOP_PROCESSING)})
    merged = writes.merge(3, split, [{"code": "SUCCESS", "n": 0}, {"code": "SUCCESS", "n": 2}], {})
    assert [e["code"] for e in merged] == ["SUCCESS", "CANNOT_PROCESS", "SUCCESS"]
    assert merged[1] == {
        "code": "CANNOT_PROCESS",
        "details": {"id": "7", "reason": "stop_processing"},
        "message": "The record is in stop processing",
        "status": "error",
    }
    assert [merged[0]["n"], merged[2]["n"]] == [0, 2]


def test_an_upstream_answer_of_the_wrong_length_fills_each_forwarded_position() -> None:
    split = Split([1], {0: writes.refusal("7", writes.STATE_UNKNOWN)})
    env = {
        "code": "INVALID_TOKEN",
        "details": {},
        "message": "invalid oauth token",
        "status": "error",
    }
    merged = writes.merge(2, split, None, env)
    assert merged[1] == env and merged[0]["details"]["reason"] == "state_unknown"


def test_batch_status() -> None:
    none = Split([], {0: {}})
    mixed = Split([1], {0: {}})
    clean = Split([0, 1], {})
    assert writes.batch_status(none, None) == 400
    assert writes.batch_status(mixed, 200) == 207
    assert writes.batch_status(clean, 201) == 201


def test_state_verdicts_fail_closed() -> None:
    assert writes.verdict(True) == "stop_processing"
    assert writes.verdict(None) == "state_unknown"
    assert writes.verdict(False) is None
    assert writes.states_from_records(
        [{"id": "1", "$stop_processing": "false"}, {"id": "2", "$stop_processing": False}]
    ) == {"2": False}


def test_duplicate_values_and_criteria_escaping() -> None:
    rec = {"email": "a(b)@x,y", "Last_Name": "Z"}
    assert writes.duplicate_values(rec, ["Email", "Phone"]) == [("Email", "a(b)@x,y")]
    assert writes.escape_criteria_value("a(b)\\,") == "a\\(b\\)\\\\\\,"
