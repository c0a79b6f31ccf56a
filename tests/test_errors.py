"""The error hierarchy drawn in errors.py's docstring is the hierarchy in the code."""

from __future__ import annotations

import re

import gateway.app  # noqa: F401  (imports every module that may define an error)
from gateway import errors
from gateway.errors import GatewayError, Reason

_ROW = re.compile(r"^\s*(?:[│ ]*[├└]── )?(\w+)\s+(\d{3}|4xx)\s+(\S+.*)$")


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _drawing() -> dict[str, tuple[str, str, str]]:
    """name -> (status, code, parent name) from the docstring's tree."""
    rows: dict[str, tuple[str, str, str]] = {}
    parents: dict[int, str] = {}
    for line in (errors.__doc__ or "").splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        name, status, code = m.groups()
        depth = line.index(name)
        parents[depth] = name
        parent = max((d for d in parents if d < depth), default=None)
        rows[name] = (status, code.strip(), parents[parent] if parent is not None else "")
    return rows


def test_every_error_class_is_drawn_with_its_status_code_and_parent() -> None:
    drawn = _drawing()
    classes = [GatewayError, *_subclasses(GatewayError)]
    assert {c.__name__ for c in classes} == set(drawn)
    for cls in classes:
        status, code, parent = drawn[cls.__name__]
        if status != "4xx":  # UpstreamRefused answers with the CRM's own status and body
            assert int(status) == cls.status_code, cls.__name__
            assert code == cls.code, cls.__name__
        assert parent == (cls.__base__.__name__ if cls is not GatewayError else "")


def test_every_error_has_a_reason_from_the_vocabulary() -> None:
    for cls in [GatewayError, *_subclasses(GatewayError)]:
        assert isinstance(cls.reason, Reason), cls.__name__
