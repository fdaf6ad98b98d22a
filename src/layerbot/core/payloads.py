"""The shape of the webhook bodies the handlers read, checked once before they run.

A delivery is signed, so it came from GitHub, but the handlers must not trust that the
body has every field they index: GitHub's schemas change, an event arrives under another
name, a body is replayed from an older API. Without this check a body missing
``comment`` or with a string where ``issue.number`` should be made a handler raise; the
inbox retried it with back-off and finally kept it as ``failed``, logged as a crash,
and the person who wrote the comment heard nothing (found by the webhook fuzzing,
``tests/web/test_webhook_fuzz.py``).

So each handled event names the fields its handlers index (not all of GitHub's schema:
only what the code reads without a default), and a body that lacks one, or has one of
another type, is *ignored* with a reason naming the field. Integers must fit the store's
64-bit columns (ids go into rows and outbox messages); a JSON ``true`` is not an integer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The largest integer a 64-bit signed column holds.
MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class Field:
    """One field of a body: a dotted path, its JSON kind, whether it may be absent/null."""

    path: str
    kind: str  # "object", "string", "integer", "array", "boolean"
    required: bool = True
    nullable: bool = False


_DESCRIBE = {"object": "an object", "string": "a string", "integer": "an integer",
             "array": "an array", "boolean": "true or false"}

#: What every body must be, when it has these objects at all (``Event.repo``,
#: ``Event.sender_login``, the gate and the receiver read them).
COMMON = (
    Field("repository", "object", required=False),
    Field("repository.full_name", "string"),
    Field("sender", "object", required=False),
    Field("sender.login", "string"),
    Field("installation", "object", required=False, nullable=True),
    Field("installation.id", "integer"),
)

#: What the handlers of each event index, by event (all actions alike: a check per action
#: would need as many tables as handlers, and these fields are in every action's schema).
SHAPES: dict[str, tuple[Field, ...]] = {
    "issue_comment": (
        Field("comment", "object"),
        Field("comment.id", "integer"),
        Field("comment.body", "string", nullable=True),
        Field("comment.user", "object", required=False, nullable=True),
        Field("comment.created_at", "string", required=False, nullable=True),
        Field("issue", "object"),
        Field("issue.number", "integer"),
        Field("repository", "object"),
    ),
    "pull_request": (
        Field("pull_request", "object"),
        Field("pull_request.number", "integer"),
        Field("pull_request.head", "object"),
        Field("pull_request.head.sha", "string"),
        Field("pull_request.base", "object"),
        Field("pull_request.base.ref", "string"),
        Field("pull_request.labels", "array", required=False),
        Field("label", "object", required=False, nullable=True),
        Field("repository", "object"),
    ),
    "check_run": (
        Field("check_run", "object"),
        Field("check_run.id", "integer"),
        Field("check_run.app", "object", required=False, nullable=True),
        Field("check_run.external_id", "string", required=False, nullable=True),
        Field("repository", "object"),
    ),
}


def _is(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                and -MAX_INT - 1 <= value <= MAX_INT)
    if kind == "array":
        return isinstance(value, list)
    if kind == "boolean":
        return isinstance(value, bool)
    raise ValueError(f"unknown kind {kind!r}")


def _lookup(payload: Mapping[str, Any], path: str) -> tuple[bool, object]:
    """``(present, value)``; a path whose parent is absent or null counts as absent (the
    parent's own field decides whether that is allowed)."""
    node: object = payload
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _parent_present(payload: Mapping[str, Any], path: str) -> bool:
    parent, _, _ = path.rpartition(".")
    if not parent:
        return True
    present, value = _lookup(payload, parent)
    return present and isinstance(value, Mapping)


def malformed(event: str, payload: Mapping[str, Any]) -> str | None:
    """None when the body has what the handlers of ``event`` read; else what is wrong."""
    for field in (*COMMON, *SHAPES.get(event, ())):
        if not _parent_present(payload, field.path):
            continue
        present, value = _lookup(payload, field.path)
        if not present:
            if field.required:
                return f"the {event} body has no {field.path}"
            continue
        if value is None and field.nullable:
            continue
        if not _is(value, field.kind):
            return f"the {event} body's {field.path} is not {_DESCRIBE[field.kind]}"
    return None
