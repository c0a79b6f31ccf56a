"""Case-insensitive path keywords: ``/crm/V8/LEADS/Search`` is routed as ``/crm/v8/LEADS/search``.

Starlette routes case-sensitively, so the middleware rewrites the path before routing: the
keywords of the CRM's URL space (``crm``, ``bulk``, the version, ``settings`` and what
follows it, ``coql``, ``search``, ``deleted``, ``upsert``, ``actions`` and its actions, ...)
get their canonical lower-case spelling. Module names, record ids, external values and
related-list names are left alone: the routes match those case-insensitively themselves.
"""

from __future__ import annotations

#: what may follow ``/crm/{v}/`` besides a module name
TOP_LEVEL = frozenset({"org", "users", "settings", "coql", "upload", "__composite_requests"})
#: what may follow ``/crm/{v}/{module}/``
MODULE_LEVEL = frozenset({"search", "deleted", "upsert", "actions"})
BULK_JOBS = frozenset({"read", "write"})


def _lower_if(parts: list[str], index: int, words: frozenset[str] | None = None) -> str | None:
    """Lower-case ``parts[index]`` when it is one of ``words`` (any word when None)."""
    if index >= len(parts):
        return None
    low = parts[index].lower()
    if words is None or low in words:
        parts[index] = low
        return low
    return None


def canonical_path(path: str) -> str:
    parts = path.split("/")  # ["", "crm", version | "bulk", ...]
    if len(parts) < 3 or parts[1].lower() != "crm":
        return path
    parts[1] = "crm"
    if _lower_if(parts, 2, frozenset({"bulk"})):
        _lower_if(parts, 3)  # version
        if _lower_if(parts, 4, BULK_JOBS):
            _lower_if(parts, 6, frozenset({"result"}))
        return "/".join(parts)
    _lower_if(parts, 2)  # version
    top = _lower_if(parts, 3, TOP_LEVEL)
    if top == "settings":
        _lower_if(parts, 4)
    elif top is None:  # parts[3] is a module
        if _lower_if(parts, 4, MODULE_LEVEL) == "actions":
            _lower_if(parts, 5)
        elif _lower_if(parts, 5, frozenset({"actions"})):  # /{module}/{id}/actions/convert
            _lower_if(parts, 6)
    return "/".join(parts)
