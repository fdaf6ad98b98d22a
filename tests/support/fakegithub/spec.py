"""The GitHub OpenAPI subset: routing requests to operations and validating them.

Validation of parameters and bodies is delegated to ``openapi-core`` (which implements
OpenAPI 3.0 semantics such as ``nullable`` correctly); this module only does what
``openapi-core`` cannot: matching concrete paths to templates with GitHub's
``x-multi-segment`` parameters, and a few documented work-arounds for quirks of the
upstream description (see :func:`_patch_document`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from tests.support.shared import github_data_dir

# openapi-core matches the request against the document's ``servers``; GitHub's is this.
_SPEC_HOST = "https://api.github.com"
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Operation:
    """One operation of the description (method + path template)."""

    operation_id: str
    method: str  # upper case
    template: str
    regex: re.Pattern[str]
    raw: Mapping[str, Any]

    @property
    def literal_length(self) -> int:
        """Characters outside ``{param}`` placeholders; more literal = more specific."""
        return len(re.sub(r"\{[^}]+\}", "", self.template))


@dataclass(frozen=True)
class RouteMatch:
    operation: Operation
    path_params: dict[str, str]


def _load_document() -> dict[str, Any]:
    with (github_data_dir() / "rest-api-subset.json").open(encoding="utf-8") as fh:
        document: dict[str, Any] = json.load(fh)
    return document


def _patch_document(document: dict[str, Any]) -> dict[str, Any]:
    """Work around upstream quirks that make a correct validator reject valid traffic.

    ``POST /repos/{owner}/{repo}/check-runs`` declares ``discriminator: {propertyName:
    status}`` over *inline* ``oneOf`` alternatives. A discriminator is only a hint and
    only meaningful for named (``$ref``) alternatives; openapi-core tries to resolve
    ``#/components/schemas/<status value>`` and rejects every body. Dropping the hint
    keeps the real constraint (``status: completed`` requires ``conclusion``), which the
    plain ``oneOf`` still expresses.
    """
    patched = copy.deepcopy(document)
    for path_item in patched["paths"].values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            for media in operation.get("requestBody", {}).get("content", {}).values():
                _drop_inline_discriminators(media.get("schema", {}))
    return patched


def _drop_inline_discriminators(schema: Any) -> None:
    if isinstance(schema, dict):
        alternatives = schema.get("oneOf") or schema.get("anyOf") or []
        inline = alternatives and not any("$ref" in alt for alt in alternatives)
        if "discriminator" in schema and inline and "mapping" not in schema["discriminator"]:
            del schema["discriminator"]
        for value in schema.values():
            _drop_inline_discriminators(value)
    elif isinstance(schema, list):
        for item in schema:
            _drop_inline_discriminators(item)


def _compile_template(template: str, multi_segment: set[str]) -> re.Pattern[str]:
    """``/repos/{owner}/{repo}/git/ref/{ref}`` -> regex; multi-segment params may hold '/'."""
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", template):
        pattern += re.escape(literal)
        if name:
            body = ".+" if name in multi_segment else "[^/]+"
            pattern += f"(?P<{name}>{body})"
    return re.compile(f"^{pattern}$")


class OpenApiSpec:
    """The parsed description plus an openapi-core validator for it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _patch_document(document)
        self._api = OpenAPI.from_dict(self.document)
        self.operations = self._build_operations()
        self.by_id = {op.operation_id: op for op in self.operations}
        self._verdicts = _Verdicts()

    # -- $ref handling -------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """Follow local ``$ref``s (``#/components/...``) until a concrete node remains."""
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def example(self, name: str) -> Any:
        """A deep copy of ``#/components/examples/<name>``'s value (used as templates)."""
        return copy.deepcopy(self.document["components"]["examples"][name]["value"])

    # -- routing ---------------------------------------------------------------------

    def _build_operations(self) -> list[Operation]:
        operations = []
        for template, path_item in self.document["paths"].items():
            for method, raw in path_item.items():
                if method not in _HTTP_METHODS:
                    continue
                params = [self.resolve(p) for p in raw.get("parameters", [])]
                multi = {p["name"] for p in params if p.get("x-multi-segment")}
                regex = _compile_template(template, multi)
                operations.append(
                    Operation(raw["operationId"], method.upper(), template, regex, raw)
                )
        # Try the most specific templates first so that e.g. ``issues/comments/{id}``
        # wins over a template with a placeholder in that position.
        operations.sort(key=lambda op: -op.literal_length)
        return operations

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """Match a request path (still percent-encoded) against the operations."""
        for operation in self.operations:
            if operation.method != method.upper():
                continue
            found = operation.regex.match(raw_path)
            if found:
                params = {k: unquote(v) for k, v in found.groupdict().items()}
                return RouteMatch(operation, params)
        return None

    def path_exists(self, raw_path: str) -> bool:
        return any(op.regex.match(raw_path) for op in self.operations)

    # -- validation ------------------------------------------------------------------

    def request_errors(
        self,
        match: RouteMatch,
        query: Mapping[str, str],
        body: bytes,
        content_type: str | None,
    ) -> list[str]:
        """Problems with the parameters and body of a request, as readable strings.

        Each distinct request is checked once (:class:`_Verdicts`)."""
        operation = match.operation
        key = (operation.operation_id, tuple(sorted(match.path_params.items())),
               tuple(sorted(query.items())), hashlib.sha256(body).digest(), content_type)

        def check() -> tuple[str, ...]:
            request = _request_to(match, args=dict(query), data=body or None,
                                  content_type=content_type or "application/json")
            return tuple(_describe(error) for error in self._api.iter_request_errors(request))

        return list(self._verdicts.get(key, check))

    def unknown_fields(self, match: RouteMatch, body: Any) -> list[str]:
        """Body fields the schema does not declare.

        GitHub silently ignores them, so the request still succeeds, but a misspelt
        field (``conclsion``) is a client bug that would otherwise go unnoticed.
        """
        schema = (
            match.operation.raw.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema")
        )
        if schema is None or body is None:
            return []
        unknown = _unknown_fields(self, schema, body, "body")
        return [f"{path}: unknown field (GitHub would silently ignore it)" for path in unknown]

    def response_errors(
        self, match: RouteMatch, status: int, body: bytes, headers: Mapping[str, str]
    ) -> list[str]:
        """Problems with one of the fake's own responses (a bug in the fake), each
        distinct response checked once."""
        operation = match.operation
        responses = operation.raw.get("responses", {})
        if str(status) not in responses and "default" not in responses:
            return []  # e.g. injected 502s or 401s: not described, nothing to check
        content_type = headers.get("content-type", "application/json") if body else ""
        # A response's check depends on its operation, not on the path's values (those
        # were checked with the request).
        key = ("response", operation.operation_id, status, hashlib.sha256(body).digest(),
               content_type)

        def check() -> tuple[str, ...]:
            request = _request_to(match)
            response = MockResponse(body, status_code=status, content_type=content_type)
            errors: list[str] = []
            for error in self._api.iter_response_errors(request, response):
                errors.extend(_describe_response_error(error))
            return tuple(errors)

        return list(self._verdicts.get(key, check))


def _request_to(match: RouteMatch, **rest: Any) -> MockRequest:
    """The request openapi-core checks: to the matched operation, with the path's values."""
    operation = match.operation
    return MockRequest(_SPEC_HOST, operation.method.lower(), operation.template,
                       path_pattern=operation.template, view_args=dict(match.path_params),
                       **rest)


class _Verdicts:
    """The checks already made, by what their outcome depends on (the description never
    changes). openapi-core takes 2 to 17 ms of CPU per check, and clients repeat requests
    (the same pull request and permission read again and again): a repeat of a checked
    GET of a pull request cost 1.6 ms instead of 7.2, of a permission 0.3 instead of 3.3.
    Bodies are keyed by digest and the oldest verdicts are dropped past ``size``, so a
    long soak does not grow with them. Only verdicts are remembered: every request is
    still recorded, and each one found wrong is a violation of its own."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._known: OrderedDict[tuple[object, ...], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...],
            check: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        verdict = check()
        with self._lock:
            self._known[key] = verdict
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return verdict


def _describe(error: Exception) -> str:
    """Flatten an openapi-core error (and its schema errors) into one line."""
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or ())
    if not schema_errors:
        return f"{error}" + (f": {cause}" if cause else "")
    details = "; ".join(_schema_error_text(e) for e in schema_errors if not _is_noise(e))
    return f"{error.__class__.__name__}: {details or schema_errors[0].message}"


def _schema_error_text(error: Any) -> str:
    location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    prefix = f"{location.lstrip('.')}: " if location else ""
    # For oneOf/anyOf the top message ("not valid under any of the given schemas") says
    # nothing; the per-alternative errors say what is actually missing.
    reasons = sorted({sub.message for sub in error.context or [] if not _is_noise(sub)})
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    return f"{prefix}{error.message}{detail}"


def _is_noise(error: Any) -> bool:
    return "could not be resolved" in str(error.message)


def _describe_response_error(error: Exception) -> Iterable[str]:
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or ())
    if not schema_errors:
        return [str(error)]
    # OAS 3.0.3 says a nullable enum must list null; GitHub's description often does
    # not (e.g. check-run ``conclusion``), yet null is what GitHub sends. Not a bug.
    real = [e for e in schema_errors if not _nullable_null(e)]
    return [f"response: {_schema_error_text(e)}" for e in real]


def _nullable_null(error: Any) -> bool:
    return error.instance is None and bool(getattr(error, "schema", {}).get("nullable"))


def _unknown_fields(spec: OpenApiSpec, schema: Any, value: Any, path: str) -> list[str]:
    """Dotted paths of object keys that no ``properties`` of the schema declares."""
    schema = spec.resolve(schema)
    if not isinstance(schema, dict):
        return []
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if isinstance(value, dict) and "properties" in schema:
        # Own properties win: where GitHub combines them with oneOf, the alternatives
        # only add constraints (e.g. check-runs: completed requires conclusion).
        if schema.get("additionalProperties") not in (None, False):
            return []
        found: list[str] = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(spec, schema["properties"][key], item, f"{path}.{key}")
        return found
    if alternatives:
        # The value only has to fit one alternative: report the best fit's leftovers.
        candidates = [_unknown_fields(spec, alt, value, path) for alt in alternatives]
        fitting = [
            found
            for alt, found in zip(alternatives, candidates, strict=True)
            if _fits(spec, alt, value)
        ]
        return min(fitting or candidates, key=len)
    if isinstance(value, list) and "items" in schema:
        found = []
        for index, item in enumerate(value):
            found += _unknown_fields(spec, schema["items"], item, f"{path}[{index}]")
        return found
    return []


def _fits(spec: OpenApiSpec, schema: Any, value: Any) -> bool:
    """Cheap JSON type check used to pick a ``oneOf`` alternative."""
    expected = spec.resolve(schema).get("type")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool}
    return expected is None or isinstance(value, kinds.get(expected, object))


@cache
def load_spec() -> OpenApiSpec:
    """The process-wide spec (parsing and checking the document takes ~0.2 s)."""
    return OpenApiSpec(_load_document())
