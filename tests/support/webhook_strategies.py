"""Hypothesis strategies for webhook bodies: generated from the webhook schemas, and
mutated from GitHub's own example payloads.

Why a small generator of our own rather than ``hypothesis-jsonschema``: the event schemas
are large (a ``pull_request`` body requires a full repository object of ~90 fields),
cross-reference each other by ``$id`` (``tests/support/webhooks.py`` resolves them with a
``referencing`` registry) and use a handful of keywords only (``type``, ``enum``,
``properties``/``required``, ``items``, ``oneOf``, ``allOf``, ``$ref``, ``format``).
Walking them here keeps bodies mostly schema-shaped (so they get past the first
``isinstance`` and reach the handlers) while staying small and fast to generate: optional
properties are drawn, not always filled, and below a depth the generator stops.

Strings are drawn partly from values that matter to this bot (commands, the served
repository, refs, shas, labels), so generated bodies also exercise the command parser and
the handlers behind it, not only the gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from referencing._core import Resolver

from tests.support.webhooks import (
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    EVENTS_WITHOUT_ACTION,
    _registry,
    all_payloads,
    schema_path,
)

Json = Any
Draw = Callable[[st.SearchStrategy[Any]], Any]

#: Below this depth an object gets no more optional properties and required nested
#: objects become ``{}``: bodies stay small; shallow structure is what handlers read.
MAX_DEPTH = 5

#: Strings a handler of this bot reacts to: commands, names of the served repository.
MEANINGFUL = [
    "bot: build", "bot: build repo:eessi-2023.06 arch:zen2", "bot:build for:arch=zen3",
    "bot: cancel", "bot: rebuild", "bot: status", "bot: help", "bot: show_config",
    "bot: deploy", "bot: probe", "bot: build inst:*", "bot: build\nbot: cancel",
    "bot: build accel:nvidia/cc80", "bot: bild", "bot:", "@layerbot build",
    DEFAULT_REPO, "octo-org", "stack", "main", "feature", "refs/heads/main", "layerbot",
    "bot:deploy", "deploy", "a" * 40, "0" * 40, "User", "Bot", "Organization", "OWNER",
    "MEMBER", "CONTRIBUTOR", "NONE", "completed", "success", "failure", "open", "closed",
    "", " ", "\x00", "é🙂", "../../etc/passwd", "%s%n", "${{ secrets.X }}",
]

_DATE_TIMES = ["2026-12-05T01:00:00Z", "2019-05-15T15:20:33Z", "1970-01-01T00:00:00Z",
               "not a date", "9999-12-31T23:59:59+14:00"]
_URIS = [f"https://api.github.com/repos/{DEFAULT_REPO}", "https://github.com/octo-org",
         "http://localhost:1/", "not a uri", "javascript:alert(1)"]

#: Integers: small ids, the fake's ids, and the edges of the 64-bit ranges databases hold.
_INTS = st.one_of(
    st.integers(min_value=-3, max_value=5000),
    st.sampled_from([DEFAULT_INSTALLATION_ID, 1, 0, -1, 2**31 - 1, 2**31, 2**53 + 1,
                     2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
_STRINGS = st.one_of(st.sampled_from(MEANINGFUL), st.text(max_size=24))


def any_json(max_leaves: int = 6) -> st.SearchStrategy[Json]:
    """Any JSON value (of the range orjson reads: integers fit in 64 bits)."""
    scalars = st.one_of(st.none(), st.booleans(), _INTS, _STRINGS,
                        st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=max_leaves)


def _resolve(schema: dict[str, Any], resolver: Resolver[Any]
             ) -> tuple[dict[str, Any], Resolver[Any]]:
    """Follow ``$ref`` (and nested ones) to the schema it names, with its own resolver."""
    while "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    return schema, resolver


def _merge_all_of(schema: dict[str, Any], resolver: Resolver[Any]) -> dict[str, Any]:
    """``allOf`` of object schemas as one: properties and required lists combined (the
    only way these schemas use it: a common object plus event-specific constraints)."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, tuple[dict[str, Any], Resolver[Any]]] = {}
    required: list[str] = list(schema.get("required", []))
    for part in schema["allOf"]:
        part, part_resolver = _resolve(part, resolver)
        if "allOf" in part:
            part = _merge_all_of(part, part_resolver)
        for name, sub in part.get("properties", {}).items():
            properties[name] = (sub, part_resolver)  # later parts narrow earlier ones
        required += part.get("required", [])
        merged.setdefault("type", part.get("type"))
    merged["_resolved_properties"] = properties
    merged["required"] = sorted(set(required))
    return merged


def from_schema(draw: Draw, schema: dict[str, Any], resolver: Resolver[Any],
                depth: int = 0) -> Json:
    """One value drawn for ``schema`` (mostly valid; edges of each type included)."""
    schema, resolver = _resolve(schema, resolver)
    if "allOf" in schema:
        schema = _merge_all_of(schema, resolver)
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    if "const" in schema:
        return schema["const"]
    if "oneOf" in schema or "anyOf" in schema:
        branches = schema.get("oneOf") or schema.get("anyOf")
        return from_schema(draw, draw(st.sampled_from(branches)), resolver, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = draw(st.sampled_from(kind))
    if kind == "object" or "properties" in schema or "_resolved_properties" in schema:
        return _object(draw, schema, resolver, depth)
    if kind == "array":
        if depth >= MAX_DEPTH:
            return []
        items = schema.get("items", {})
        return [from_schema(draw, items, resolver, depth + 1)
                for _ in range(draw(st.integers(0, 2)))]
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return draw(st.sampled_from(_DATE_TIMES))
        if fmt in ("uri", "uri-template"):
            return draw(st.sampled_from(_URIS))
        return draw(_STRINGS)
    if kind == "integer":
        return draw(_INTS)
    if kind == "number":
        return draw(st.one_of(_INTS, st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "null":
        return None
    return draw(any_json(3))  # no type: anything


def _object(draw: Draw, schema: dict[str, Any], resolver: Resolver[Any],
            depth: int) -> dict[str, Json]:
    properties = schema.get("_resolved_properties") or {
        name: (sub, resolver) for name, sub in schema.get("properties", {}).items()}
    required = set(schema.get("required", []))
    if depth >= MAX_DEPTH:
        return {}
    out: dict[str, Json] = {}
    for name in sorted(properties):
        if name in required or draw(st.integers(0, 3)) == 0:
            sub, sub_resolver = properties[name]
            out[name] = from_schema(draw, sub, sub_resolver, depth + 1)
    return out


def event_schema(event: str, action: str | None) -> tuple[dict[str, Any], Resolver[Any]]:
    """The schema of ``event``/``action`` with a resolver for its ``$ref``s."""
    path = schema_path(event, action)
    schema: dict[str, Any] = json.loads(path.read_bytes())
    return schema, _registry().resolver(base_uri=schema["$id"])


def schema_events() -> list[tuple[str, str | None]]:
    """Every (event, action) the project has a schema for."""
    from tests.support.webhooks import schemas_dir

    found: list[tuple[str, str | None]] = []
    for path in sorted(schemas_dir().glob("*/*.schema.json")):
        event = path.parent.name
        if event == "common":
            continue
        action = None if event in EVENTS_WITHOUT_ACTION else path.name.split(".")[0]
        found.append((event, action))
    return found


def anchor(payload: dict[str, Json]) -> dict[str, Json]:
    """Point a generated body at the served repository and installation (when it has
    those objects), so the gate admits it and the handlers run."""
    if isinstance(payload.get("repository"), dict):
        payload["repository"]["full_name"] = DEFAULT_REPO
    if isinstance(payload.get("installation"), dict):
        payload["installation"]["id"] = DEFAULT_INSTALLATION_ID
    return payload


@st.composite
def generated_bodies(draw: Draw) -> tuple[str, dict[str, Json]]:
    """``(event, body)`` generated from an event's schema, often anchored to the served
    repository."""
    event, action = draw(st.sampled_from(schema_events()))
    schema, resolver = event_schema(event, action)
    body = from_schema(draw, schema, resolver)
    if draw(st.integers(0, 3)):
        body = anchor(body)
    return event, body


#: Words of the command grammar and arguments, valid and not, to build comment bodies.
_COMMANDS = ["build", "cancel", "rebuild", "status", "help", "show_config", "deploy", "probe",
             "bild", "", "BUILD", "build:", "cancel all"]
_ARGUMENTS = ["repo:eessi-2023.06", "arch:zen2", "for:arch=zen3", "inst:test-a", "inst:*",
              "on:arch=zen2", "job:1", "job:999999999999999999999", "accel:nvidia/cc80",
              "slurm:time=01:00:00", "slurm:--wrap=rm", "x:y", "=", ":", "arch:", "repo:",
              "exportvariable:A=b", "target:../../x", "step:1", "arch:zen2,zen3"]


@st.composite
def command_comments(draw: Draw) -> str:
    """A comment of one to three lines of ``bot:`` commands with drawn arguments."""
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        words = [draw(st.sampled_from(_COMMANDS)),
                 *draw(st.lists(st.one_of(st.sampled_from(_ARGUMENTS), st.text(max_size=8)),
                                max_size=3))]
        lines.append(draw(st.sampled_from(["bot: ", "bot:", "@layerbot ", "bot:  "]))
                     + " ".join(words))
    return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)


def _paths(value: Json, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into a JSON value (the value itself included)."""
    found: list[tuple[str | int, ...]] = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Json, path: tuple[str | int, ...], new: Json, delete: bool) -> Json:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        if delete and not rest:
            copy.pop(head, None)  # type: ignore[call-overload]
        else:
            copy[head] = _replace(value[head], rest, new, delete)  # type: ignore[index]
        return copy
    copy_list = list(value)
    if delete and not rest:
        del copy_list[head]  # type: ignore[call-overload]
    else:
        copy_list[head] = _replace(value[head], rest, new, delete)  # type: ignore[index]
    return copy_list


#: The example payloads; new comments (the commands) weigh four times, pull requests twice:
#: that is where the handlers are.
_WEIGHT = {"issue_comment": 4, "pull_request": 2}
_EXAMPLES = [(event, name, payload) for event, name, payload, _ in all_payloads()
             for _ in range(_WEIGHT.get(event, 1) if "created" in name or event != "issue_comment"
                            else 1)]


@st.composite
def mutated_bodies(draw: Draw) -> tuple[str, Json]:
    """``(event, body)``: a real example payload, a comment's body often replaced by
    commands, with up to three mutations: a value deleted, nulled, or replaced by any JSON
    value (wrong types, edges of integers)."""
    event, _, payload = draw(st.sampled_from(_EXAMPLES))
    body: Json = json.loads(json.dumps(payload))
    if event == "issue_comment" and draw(st.booleans()):
        body["comment"]["body"] = draw(command_comments())
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths[1:] or paths))
        how = draw(st.sampled_from(["delete", "null", "any"]))
        new = None if how != "any" else draw(any_json())
        body = _replace(body, path, new, delete=how == "delete" and bool(path))
    if isinstance(body, dict) and draw(st.integers(0, 3)):
        body = anchor(body)  # mostly the served repository: the handlers run
    return event, body
