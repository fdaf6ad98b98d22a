"""FakeGitHub: a real HTTP server on loopback that behaves like the GitHub REST API.

Every request goes through the same pipeline::

    route (OpenAPI subset) -> validate params/body -> injected fault? -> authenticate
    -> rate limit -> permission -> handler -> validate own response -> record

Anything a real GitHub would reject as malformed, or that only a buggy client would
send, is recorded in :attr:`FakeGitHub.violations`; the ``fake_github`` fixture fails
the test at teardown when that list is not empty.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.support.fakegithub.auth import (
    BAD_CREDENTIALS,
    JWT_UNDECODABLE,
    REQUIRES_AUTH,
    check_app_jwt,
    generate_app_key,
    parse_authorization,
    public_pem_of,
)
from tests.support.fakegithub.handlers import Call, Handlers, Reply
from tests.support.fakegithub.objects import AppInfo, Renderer
from tests.support.fakegithub.spec import RouteMatch, load_spec
from tests.support.fakegithub.state import Delivery, IssuedToken, utcnow
from tests.support.fakegithub.store import ApiError, Store

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

T = TypeVar("T")

DOCS_URL = "https://docs.github.com/rest"
_DEFAULT_FAULT_MESSAGES = {
    401: BAD_CREDENTIALS,
    403: "Forbidden",
    404: "Not Found",
    422: "Validation Failed",
    500: "Internal Server Error",
    502: "Server Error",
    503: "Service Unavailable",
}
_SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
_PRIMARY_LIMIT = "API rate limit exceeded for installation ID {}."
_RATE_WINDOW_S = 3600
_ANONYMOUS_LIMIT = 60


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received and what it answered."""

    method: str
    path: str  # decoded, without the query string
    operation_id: str | None  # None when no operation of the subset matched
    query: dict[str, str]
    json: Any
    headers: dict[str, str]  # lower-case names
    status: int
    time: float  # time.time() on arrival
    path_params: dict[str, str] = field(default_factory=dict)
    response: Any = None
    injected: bool = False  # answered by fail_next()
    note: str | None = None  # why a 401 happened, for debugging


@dataclass(frozen=True)
class Violation:
    """A request GitHub would reject as malformed (or a bug in the fake's response)."""

    method: str
    path: str
    operation_id: str | None
    # "route", "request", "auth", "semantic", "ignored-field", "response" or "fake-bug"
    kind: str
    message: str

    def __str__(self) -> str:
        operation = f" [{self.operation_id}]" if self.operation_id else ""
        return f"{self.method} {self.path}{operation}: {self.kind}: {self.message}"


@dataclass
class _Rule:
    """A fault or delay for requests whose method and path match."""

    method: str
    pattern: re.Pattern[str]
    remaining: int | None  # None = forever
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.method in ("*", method.upper())
        return method_ok and self.remaining != 0 and bool(self.pattern.search(path))

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class _Incoming:
    method: str
    raw_path: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received: float


def error_body(
    status: int, message: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": message,
        "documentation_url": DOCS_URL,
        "status": str(status),
    }
    if errors is not None:
        body["errors"] = errors
    return body


class FakeGitHub(Store):
    """A fake GitHub API for one GitHub App, served on ``127.0.0.1:<free port>``.

    Use as a context manager (or ``start()``/``stop()``) and point the client at
    :attr:`url` (``GitHub(..., base_url=fake.url)``).
    """

    def __init__(
        self,
        app_id: int,
        private_key_pem: str | None = None,
        *,
        app_slug: str = "layerbot",
        app_name: str = "layerbot (fake)",
        client_id: str | None = None,
        app_owner: str = "layerbot-dev",
    ) -> None:
        self._init_store()
        self.app_id = app_id
        if private_key_pem is None:
            private_key_pem, _ = generate_app_key()
        self.private_key_pem = private_key_pem
        self.public_key_pem = public_pem_of(private_key_pem)
        self.app = AppInfo(
            app_id, app_slug, app_name, client_id or f"Iv23li{app_id:014d}", app_owner
        )
        self.spec = load_spec()
        #: Lifetime of newly issued installation tokens (GitHub: one hour).
        self.token_lifetime = timedelta(hours=1)
        #: Issue 2026-style long ``ghs_<app id>_...`` tokens instead of 40-char ones.
        self.stateless_tokens = False
        self.tokens_issued = 0
        #: ``(status_code, status)`` logged for each redelivery; ``None`` logs nothing.
        self.redelivery_outcome: tuple[int, str] | None = (200, "OK")
        #: Called (in a thread of its own) with each delivery the App asks to redeliver:
        #: a harness that keeps the bodies sends it again, as GitHub would.
        self.on_redeliver: Callable[[Delivery], None] | None = None
        #: Primary rate limit per installation (and for the app JWT).
        self.rate_limit_limit = 5000
        #: Check the fake's own responses against the response schemas.
        self.validate_responses = True
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self._faults: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._rate_used: dict[str, int] = {}
        self._rate_reset = int(time.time()) + _RATE_WINDOW_S
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._handlers: Handlers | None = None

    # == lifecycle ========================================================================

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:54321`` (use as ``base_url``)."""
        if self._port is None:
            raise RuntimeError("FakeGitHub is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeGitHub:
        if self._thread is not None:
            return self
        # Let uvicorn bind port 0 itself: handing it a pre-bound socket works too, but
        # then every keep-alive response waits ~40 ms (Nagle vs. delayed ACK).
        config = uvicorn.Config(
            self._asgi,
            host="127.0.0.1",
            port=0,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        # uvicorn only installs signal handlers on the main thread, so this is safe.
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fake-github")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("FakeGitHub server did not start")
            time.sleep(0.005)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]
        self._handlers = Handlers(self, Renderer(self.spec, self.url, self.app, self.user_type))
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop serving; state and recordings stay available for inspection.

        uvicorn needs ~0.2 s to wind down; ``wait=False`` lets that happen in the
        background (the port is not reused: every server binds a fresh one).
        """
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and wait:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # == test controls ====================================================================

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead.

        ``method`` may be ``"*"``; ``path_regex`` is searched in the decoded path.
        Examples: ``fail_next("POST", r"/comments$", 502)``;
        ``fail_next("*", ".", 403, headers={"retry-after": "1"})`` (secondary limit);
        ``fail_next("GET", "/pulls/", 429, headers={"x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(time.time()) + 1)})`` (primary limit).
        """
        rule = _Rule(
            method.upper(),
            re.compile(path_regex),
            times,
            status,
            {k.lower(): v for k, v in (headers or {}).items()},
            body,
        )
        with self._lock:
            self._faults.append(rule)

    def delay(self, method: str, path_regex: str, seconds: float, times: int | None = None) -> None:
        """Hold matching requests for ``seconds`` (other requests proceed meanwhile)."""
        with self._lock:
            self._delays.append(
                _Rule(method.upper(), re.compile(path_regex), times, seconds=seconds)
            )

    def expire_tokens(self) -> None:
        """Make every installation token issued so far expired: next use gets 401."""
        with self._lock:
            for token in self.tokens.values():
                token.expires_at = utcnow() - timedelta(seconds=1)

    def take_violations(self) -> list[Violation]:
        """Return and forget the violations (for tests that provoke them on purpose)."""
        with self._lock:
            taken, self.violations = self.violations, []
            return taken

    def assert_no_violations(self) -> None:
        with self._lock:
            found = list(self.violations)
        if found:
            lines = "\n".join(f"  - {v}" for v in found)
            raise AssertionError(f"FakeGitHub saw {len(found)} API violation(s):\n{lines}")

    # == recorded traffic =================================================================

    def calls(self, operation_id: str) -> list[RecordedRequest]:
        """Requests for one operation, e.g. ``calls("issues/create-comment")``."""
        with self._lock:
            return [r for r in self.requests if r.operation_id == operation_id]

    def count(self, operation_id: str | None = None) -> int:
        with self._lock:
            if operation_id is None:
                return len(self.requests)
            return sum(1 for r in self.requests if r.operation_id == operation_id)

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10.0,
        interval: float = 0.02,
        message: str | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                recent = "\n".join(
                    f"  {r.method} {r.path} -> {r.status}" for r in self.requests[-10:]
                )
                raise AssertionError(
                    f"{message or 'condition'} not met within {timeout}s; "
                    f"last requests:\n{recent or '  (none)'}"
                )
            time.sleep(interval)

    # == githubkit convenience ============================================================

    def app_client(self, **options: Any) -> Any:
        """A githubkit ``GitHub`` authenticated as the app (JWT), talking to this fake."""
        from githubkit import AppAuthStrategy

        return self._client(AppAuthStrategy(self.app_id, self.private_key_pem), options)

    def installation_client(self, installation_id: int, **options: Any) -> Any:
        """A githubkit ``GitHub`` authenticated as an installation of the app."""
        from githubkit import AppInstallationAuthStrategy

        strategy = AppInstallationAuthStrategy(self.app_id, self.private_key_pem, installation_id)
        return self._client(strategy, options)

    def _client(self, strategy: Any, options: dict[str, Any]) -> Any:
        from githubkit import GitHub
        from githubkit.cache import MemCacheStrategy

        # githubkit's default token/JWT cache is process-global and keyed only by app
        # and installation id: without a private cache a client would reuse tokens
        # issued by another FakeGitHub (another test) and get 401s.
        options.setdefault("cache_strategy", MemCacheStrategy())
        options.setdefault("http_cache", False)
        # The fake speaks plain HTTP. Not loading the CA bundle saves ~35 ms per request
        # when the client is not used as a context manager (githubkit then builds a new
        # httpx client, and so an SSL context, for every request).
        options.setdefault("ssl_verify", False)
        return GitHub(strategy, base_url=self.url, **options)

    # == the ASGI app =====================================================================

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        incoming = _Incoming(
            method=request.method.upper(),
            raw_path=raw_path,
            path=unquote(raw_path),
            query=dict(
                parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            ),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            received=time.time(),
        )
        seconds = self._take_delay(incoming)
        if seconds:
            await asyncio.sleep(seconds)
        status, content, headers = self._handle(incoming)
        await Response(content, status, headers)(scope, receive, send)

    def _take_delay(self, incoming: _Incoming) -> float:
        with self._lock:
            for rule in self._delays:
                if rule.matches(incoming.method, incoming.path):
                    rule.consume()
                    return rule.seconds
        return 0.0

    def _handle(self, incoming: _Incoming) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            outcome = _Outcome()
            try:
                reply = self._pipeline(incoming, outcome)
            except ApiError as exc:
                reply = self._error_reply(incoming, outcome, exc)
            except Exception as exc:  # a bug in the fake: make it loud, not a bare 500
                detail = "".join(traceback.format_exception_only(exc)).strip()
                self._violate(incoming, outcome.match, "fake-bug", detail)
                reply = Reply(500, error_body(500, f"FakeGitHub bug: {detail}"))
            headers = self._response_headers(incoming, outcome, reply)
            content = b"" if reply.body is None else json.dumps(reply.body).encode()
            self._check_response(incoming, outcome, reply.status, content, headers)
            self.requests.append(self._record(incoming, outcome, reply))
            return reply.status, content, headers

    def _pipeline(self, incoming: _Incoming, outcome: _Outcome) -> Reply:
        match = self.spec.match(incoming.method, incoming.raw_path)
        if match is None:
            where = (
                "exists, but not for this method"
                if self.spec.path_exists(incoming.raw_path)
                else "is not"
            )
            self._violate(incoming, None, "route", f"path {where} in the OpenAPI subset")
            return Reply(404, error_body(404, "Not Found"))
        outcome.match = match
        problems = self.spec.request_errors(
            match, incoming.query, incoming.body, incoming.headers.get("content-type")
        )
        for problem in problems:
            self._violate(incoming, match, "request", problem)
        fault = self._take_fault(incoming)
        if fault is not None:
            outcome.injected = True
            outcome.bucket = self._guess_bucket(incoming)
            return fault
        token = self._authenticate(match, incoming, outcome)
        if problems:
            return self._invalid_request_reply(problems)
        body = _parse_json(incoming.body)
        for unknown in self.spec.unknown_fields(match, body):
            self._violate(incoming, match, "ignored-field", unknown)
        self._enforce_rate_limit(outcome)
        call = Call(
            match.operation.operation_id,
            incoming.method,
            incoming.path,
            match.path_params,
            incoming.query,
            body,
            token,
        )
        assert self._handlers is not None
        return self._handlers.dispatch(call)

    # -- steps -----------------------------------------------------------------------------

    def _take_fault(self, incoming: _Incoming) -> Reply | None:
        for rule in self._faults:
            if rule.matches(incoming.method, incoming.path):
                rule.consume()
                message = self._fault_message(rule, incoming)
                body = rule.body if rule.body is not None else error_body(rule.status, message)
                return Reply(rule.status, body, dict(rule.headers))
        return None

    def _fault_message(self, rule: _Rule, incoming: _Incoming) -> str:
        """GitHub's wording, which clients use to tell primary from secondary limits."""
        if rule.status in (403, 429):
            if rule.headers.get("x-ratelimit-remaining") == "0":
                bucket = self._guess_bucket(incoming).removeprefix("installation:")
                return _PRIMARY_LIMIT.format(bucket)
            if rule.status == 429 or "retry-after" in rule.headers:
                return _SECONDARY_LIMIT
        return _DEFAULT_FAULT_MESSAGES.get(rule.status, "Error")

    def _authenticate(
        self, match: RouteMatch, incoming: _Incoming, outcome: _Outcome
    ) -> IssuedToken | None:
        operation_id = match.operation.operation_id
        credentials = parse_authorization(incoming.headers.get("authorization"))
        if credentials is None:
            outcome.bucket = "anonymous"
            raise ApiError(401, REQUIRES_AUTH)
        scheme, secret = credentials
        if operation_id.startswith("apps/") or (
            operation_id == "rate-limit/get" and secret not in self.tokens
        ):
            self._check_jwt(scheme, secret, outcome)
            return None
        return self._check_installation_token(secret, outcome)

    def _check_jwt(self, scheme: str, secret: str, outcome: _Outcome) -> None:
        outcome.bucket = "app"
        if scheme != "bearer":
            raise ApiError(
                401, f"{JWT_UNDECODABLE} (an app JWT must be sent as 'Bearer')", misuse=True
            )
        if secret in self.tokens:
            raise ApiError(
                401,
                f"{JWT_UNDECODABLE} (an installation token cannot call app endpoints)",
                misuse=True,
            )
        problem = check_app_jwt(secret, self.public_key_pem, self.app_id, self.app.client_id)
        if problem is not None:
            outcome.note = problem.message
            raise ApiError(401, problem.message, misuse=problem.misuse)

    def _check_installation_token(self, secret: str, outcome: _Outcome) -> IssuedToken:
        token = self.tokens.get(secret)
        if token is None:
            outcome.bucket = "anonymous"
            looks_like_jwt = secret.startswith("eyJ") and secret.count(".") == 2
            outcome.note = (
                "an app JWT was sent where an installation token is required"
                if looks_like_jwt
                else "token was never issued by this fake (stale githubkit token cache?)"
            )
            raise ApiError(401, BAD_CREDENTIALS, misuse=looks_like_jwt)
        outcome.bucket = f"installation:{token.installation_id}"
        if token.expires_at <= utcnow():
            outcome.note = "installation token expired"
            raise ApiError(401, BAD_CREDENTIALS)
        return token

    def _enforce_rate_limit(self, outcome: _Outcome) -> None:
        limit, used = self._bucket_usage(outcome.bucket)
        if used >= limit:
            outcome.counted = False
            subject = outcome.bucket.replace("installation:", "installation ID ")
            raise ApiError(
                403,
                f"API rate limit exceeded for {subject}.",
                headers={"x-ratelimit-remaining": "0"},
            )

    @staticmethod
    def _invalid_request_reply(problems: list[str]) -> Reply:
        # Mirror GitHub: unparsable JSON is a 400, a bad path parameter a 404
        # (the URL names nothing), anything else a 422.
        if any("Failed to deserialize" in p for p in problems):
            return Reply(400, error_body(400, "Problems parsing JSON"))
        if any(p.startswith("Path parameter") for p in problems):
            return Reply(404, error_body(404, "Not Found"))
        return Reply(422, error_body(422, "Invalid request.\n\n" + "\n".join(problems)))

    def _error_reply(self, incoming: _Incoming, outcome: _Outcome, exc: ApiError) -> Reply:
        if exc.misuse:
            kind = "auth" if exc.status == 401 else "semantic"
            self._violate(incoming, outcome.match, kind, f"{exc.status} {exc.message}")
        return Reply(exc.status, error_body(exc.status, exc.message, exc.errors), exc.headers)

    # -- rate limit ---------------------------------------------------------------------------

    def _bucket_usage(self, bucket: str) -> tuple[int, int]:
        now = int(time.time())
        if now >= self._rate_reset:
            self._rate_used.clear()
            self._rate_reset = now + _RATE_WINDOW_S
        limit = _ANONYMOUS_LIMIT if bucket == "anonymous" else self.rate_limit_limit
        return limit, self._rate_used.get(bucket, 0)

    def rate_limit_state(self, call: Call) -> tuple[int, int, int]:
        """``(limit, used, reset)`` of the caller's bucket (for ``GET /rate_limit``)."""
        bucket = f"installation:{call.token.installation_id}" if call.token else "app"
        limit, used = self._bucket_usage(bucket)
        return limit, used, self._rate_reset

    def _guess_bucket(self, incoming: _Incoming) -> str:
        credentials = parse_authorization(incoming.headers.get("authorization"))
        if credentials is None:
            return "anonymous"
        token = self.tokens.get(credentials[1])
        return f"installation:{token.installation_id}" if token else "app"

    def _response_headers(
        self, incoming: _Incoming, outcome: _Outcome, reply: Reply
    ) -> dict[str, str]:
        operation = outcome.match.operation.operation_id if outcome.match else None
        # GET /rate_limit does not count against the primary limit (GitHub Docs).
        if outcome.counted and operation != "rate-limit/get":
            self._rate_used[outcome.bucket] = self._rate_used.get(outcome.bucket, 0) + 1
        limit, used = self._bucket_usage(outcome.bucket)
        headers = {
            "content-type": "application/json; charset=utf-8",
            "x-github-media-type": "github.v3; format=json",
            "x-github-api-version-selected": incoming.headers.get(
                "x-github-api-version", "2022-11-28"
            ),
            "x-github-request-id": uuid.uuid4().hex[:20].upper(),
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(limit - used, 0)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(self._rate_reset),
            "x-ratelimit-resource": "core",
        }
        headers.update({k.lower(): v for k, v in reply.headers.items()})
        return headers

    # -- bookkeeping --------------------------------------------------------------------------

    def _check_response(
        self,
        incoming: _Incoming,
        outcome: _Outcome,
        status: int,
        content: bytes,
        headers: dict[str, str],
    ) -> None:
        if not self.validate_responses or outcome.match is None or outcome.injected:
            return
        for problem in self.spec.response_errors(outcome.match, status, content, headers):
            self._violate(incoming, outcome.match, "response", f"{status} {problem}")

    def _violate(
        self, incoming: _Incoming, match: RouteMatch | None, kind: str, message: str
    ) -> None:
        operation_id = match.operation.operation_id if match else None
        self.violations.append(
            Violation(incoming.method, incoming.path, operation_id, kind, message)
        )

    @staticmethod
    def _record(incoming: _Incoming, outcome: _Outcome, reply: Reply) -> RecordedRequest:
        match = outcome.match
        return RecordedRequest(
            method=incoming.method,
            path=incoming.path,
            operation_id=match.operation.operation_id if match else None,
            query=dict(incoming.query),
            json=_parse_json(incoming.body),
            headers=dict(incoming.headers),
            status=reply.status,
            time=incoming.received,
            path_params=dict(match.path_params) if match else {},
            response=reply.body,
            injected=outcome.injected,
            note=outcome.note,
        )


@dataclass
class _Outcome:
    """What the pipeline learnt about a request (filled in as it goes)."""

    match: RouteMatch | None = None
    bucket: str = "anonymous"
    injected: bool = False
    counted: bool = True
    note: str | None = None


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
