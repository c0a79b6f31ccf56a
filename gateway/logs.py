"""Every line the process writes on stderr is one JSON object.

structlog renders the gateway's own events; stdlib logging (uvicorn's loggers, asyncio's,
the audit trail's warnings) goes through structlog's ``ProcessorFormatter`` to the same
renderer, so a log shipper never meets a plain-text line. Uvicorn is run with
``log_config=None`` so it adds no handlers of its own.

A traceback is rendered as the exception's type and its frames (file, line, function):
never its message or its locals, either of which may hold a token or a personal value.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor

LEVELS = ("debug", "info", "warning", "error", "critical")


def level_number(name: str) -> int:
    if name.lower() not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    number: int = logging.getLevelNamesMapping()[name.upper()]
    return number


def safe_exception(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """``exc_info`` -> ``exception: {type, frames}``; the message and locals are dropped."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        frames = traceback.extract_tb(exc_info[2])
        event["exception"] = {
            "type": exc_info[0].__name__,
            "frames": [{"file": f.filename, "line": f.lineno, "function": f.name} for f in frames],
        }
    event.pop("stack_info", None)
    return event


def foreign_template(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """A stdlib record (uvicorn's, asyncio's) keeps its message's template and first line:
    never the values formatted into it (``%r`` of a request, a task's exception repr)."""
    record = event.get("_record")
    if record is not None:
        event["event"] = str(record.msg).split("\n", 1)[0]
    return event


def _render(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(stream: TextIO | None = None, level: str = "info") -> None:
    """Route structlog and stdlib logging to one JSON line each, at ``level`` and above."""
    number = level_number(level)
    out = stream or sys.stderr
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        safe_exception,
    ]
    structlog.configure(
        processors=[*shared, _render],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(out),  # one write() a line; print makes two
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, foreign_template, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
