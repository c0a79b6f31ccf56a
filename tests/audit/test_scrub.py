"""The scrub processor: an allow-list of keys and of value shapes."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.canonical import canonical_json
from gateway.audit.scrub import ENTRY_KEYS, MAX_STRING, looks_like_token, scrub
from tests.audit.helpers import decision


def scrubbed(**fields: Any) -> dict[str, Any]:
    return dict(scrub(None, "msg", {"event": "request", "seq": 1, **fields}))


class TestKeys:
    def test_unknown_keys_are_dropped(self) -> None:
        """Keys outside the allow-list never reach the entry, whatever they hold."""
        out = scrubbed(token="1000.abc", query="email=a@b.c", body={"Email": "a@b.c"}, x=1)
        assert not {"token", "query", "body", "x"} & out.keys()

    def test_every_allowed_key_is_present(self) -> None:
        """An entry always has the same keys, so readers never guess."""
        out = scrubbed()
        assert set(out) | {"prev_hash", "hash"} == ENTRY_KEYS

    def test_a_clean_decision_passes_unchanged(self) -> None:
        """What Decision.as_dict() produces is kept as it is."""
        fields = decision(1)
        out = scrubbed(**fields)
        for key, value in fields.items():
            assert out[key] == value, key
        assert not any(r.startswith("scrubbed:") for r in out["reasons"])

    def test_chain_fields_from_input_are_ignored(self) -> None:
        """Input cannot pre-set the hash or prev_hash the chain step adds."""
        out = scrubbed(hash="f" * 64, prev_hash="e" * 64)
        assert "hash" not in out and "prev_hash" not in out

    def test_unknown_event_becomes_request(self) -> None:
        """Only the trail's own event names are kept."""
        assert scrubbed(event="<script>")["event"] == "request"


class TestValues:
    def test_token_looking_strings_are_dropped(self) -> None:
        """A credential in a name-shaped field is dropped and the drop is noted."""
        token = "1000.0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
        out = scrubbed(request_id=token, policy_version="Zoho-oauthtoken", module="A" * 45)
        assert out["request_id"] is None
        assert out["policy_version"] is None
        assert out["module"] is None
        assert {"scrubbed:request_id", "scrubbed:policy_version", "scrubbed:module"} <= set(
            out["reasons"]
        )

    def test_record_ids_keep_only_numeric_strings(self) -> None:
        """Emails, names, ints and over-long numbers are not record ids."""
        out = scrubbed(record_ids=["5725767000000524157", "jane@example.com", 42, "1" * 26, "12"])
        assert out["record_ids"] == ["5725767000000524157", "12"]
        assert "scrubbed:record_ids" in out["reasons"]

    def test_reasons_keep_only_codes_of_the_vocabulary(self) -> None:
        """A reason that carries a value, an id or a sentence, or is no known code, is dropped."""
        out = scrubbed(
            reasons=[
                "restricted_criteria",
                "restricted_criteria:Email",
                "stop_processing:5725767000000524157",
                "criteria:Email=jane@example.com",
                "Bad Reason",
                "made_up_code",
                "metadata_unavailable",
            ]
        )
        assert out["reasons"] == ["restricted_criteria", "metadata_unavailable", "scrubbed:reasons"]

    def test_fields_refused_keep_only_field_names(self) -> None:
        out = scrubbed(fields_refused=["Email", "Lookup.Mobile", "jane@example.com"])
        assert out["fields_refused"] == ["Email", "Lookup.Mobile"]
        assert "scrubbed:fields_refused" in out["reasons"]

    def test_route_must_be_a_template(self) -> None:
        """A raw path with an id, a module name or a query string is not a route."""
        assert scrubbed(route="/crm/{v}/{module}/search")["route"] == "/crm/{v}/{module}/search"
        assert scrubbed(route="unknown")["route"] == "unknown"
        for raw in (
            "/crm/v2/Leads/search?email=jane@example.com",
            "/crm/v2/Leads/5725767000000524157",
            "/crm/{v}/{module}/search?criteria=(Email:equals:x)",
            "https://www.zohoapis.com/crm/v2/Leads",
            "/other/{v}",
        ):
            out = scrubbed(route=raw)
            assert out["route"] is None, raw
            assert "scrubbed:route" in out["reasons"]

    def test_client_is_a_fingerprint_or_null(self) -> None:
        """Only 32 lower-case hex characters pass as a client."""
        assert scrubbed(client="a" * 32)["client"] == "a" * 32
        assert scrubbed(client="Zoho-oauthtoken 1000.x")["client"] is None
        assert scrubbed(client="A" * 32)["client"] is None

    def test_withheld_names_are_field_names(self) -> None:
        """Field names pass; anything that is not a name is dropped and noted."""
        out = scrubbed(fields_withheld={"names": ["Email", "Sub.Field$1", "a b", 3], "count": 4})
        assert out["fields_withheld"] == {"names": ["Email", "Sub.Field$1"], "count": 4}
        assert "scrubbed:fields_withheld" in out["reasons"]

    def test_long_strings_are_cut(self) -> None:
        """No string field is longer than 200 characters."""
        out = scrubbed(policy_version="v-" * 150, route="/crm/" + "/".join(["{x}"] * 70))
        assert len(out["policy_version"]) == MAX_STRING
        assert len(out["route"]) == MAX_STRING

    def test_numbers_must_be_numbers(self) -> None:
        """Statuses are HTTP codes, durations finite; bools and strings are not numbers."""
        out = scrubbed(status="200", upstream_status=True, duration_ms=float("nan"))
        assert out["status"] is None and out["upstream_status"] is None
        assert out["duration_ms"] is None

    def test_outcome_is_one_of_four(self) -> None:
        """Unknown outcomes are dropped."""
        assert scrubbed(outcome="refused")["outcome"] == "refused"
        assert scrubbed(outcome="allowed")["outcome"] is None

    def test_digest_policy_version_is_kept(self) -> None:
        """A content digest is a legitimate policy version, though it is a long hex run."""
        assert scrubbed(policy_version="ab" * 32)["policy_version"] == "ab" * 32


@given(st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
def test_the_gateways_own_request_ids_are_kept(request_id: str) -> None:
    """uuid4 hex, the shape of every id the gateway makes, passes without the token search
    (``_request_id``'s shortcut), which is sound because no such id looks like a token."""
    assert not looks_like_token(request_id)
    assert scrubbed(request_id=request_id)["request_id"] == request_id


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*sorted(ENTRY_KEYS), "x", "token"]), json_values))
def test_scrub_output_always_renders_with_allowed_keys(fields: dict[str, Any]) -> None:
    """Whatever comes in, the result has only allowed keys and renders as JSON."""
    out = scrub(None, "msg", {**fields, "seq": 1, "event": "request"})
    assert set(out) <= ENTRY_KEYS
    canonical_json(out)
