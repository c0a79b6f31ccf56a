"""One module per route kind, named by the route table (``crm/routes.py``). Each handler
takes the canonical request, the privacy view and the request's Decision, and returns the
Reply; none reads anything the upstream will not receive."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.forward import Forwarder
from gateway.policy import Policy
from gateway.state import RecordStates
from gateway.view import Views


@dataclass(frozen=True, slots=True)
class Context:
    forward: Forwarder
    views: Views
    states: RecordStates
    policy: Policy
