"""Structured logging: readable on a console, JSON on request, a level per component.

A component is the logger's name (``webhook``, ``inbox``, ``github``, ``jobs``...). Work on
an event binds its delivery id, work on a job its job id, through context variables, so
every line written inside carries them without being passed around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}

_levels: dict[str, int] = {}
_default_level = logging.INFO

#: Keys whose values are never written, whatever a caller binds by mistake.
_SECRET_KEYS = ("secret", "token", "password", "private_key", "authorization")


def _filter_by_component(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    component = event.get("component", "")
    threshold = _levels.get(component, _default_level)
    if LEVELS.get(method if method != "exception" else "error", logging.INFO) < threshold:
        raise structlog.DropEvent
    return event


def _redact(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(fmt: str = "console", level: str = "info",
              levels: Mapping[str, str] | None = None, stream: Any = None) -> None:
    """Set up structlog once at start; safe to call again (tests, `layerbot run`)."""
    global _default_level
    _default_level = LEVELS[level]
    _levels.clear()
    _levels.update({name: LEVELS[lvl] for name, lvl in (levels or {}).items()})
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _filter_by_component,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(component: str) -> Any:
    """A logger for one component: ``log.get("inbox").info("claimed", event_id=1)``."""
    # A lazy proxy: configure() called later (at start, or by a test) still applies.
    return structlog.get_logger(component=component)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind values (delivery_id, job_id...) to every line logged inside the block."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
