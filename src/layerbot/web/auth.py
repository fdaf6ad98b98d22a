"""Who is asking, and whether they may: GitHub login, sessions, CSRF, API tokens.

* People log in with GitHub's OAuth web flow; the login is kept in a signed session cookie
  (itsdangerous), with a CSRF token that every form and cookie-authenticated API call
  must send back.
* Scripts send ``Authorization: Bearer <token>``; only the token's sha256 is stored, and its
  scopes name the actions it may take (the same names as the access policy's).
* A person's action is decided by the same policy as PR commands (``[access]``), through
  the GitHub App: so a maintainer who may ``bot: cancel`` may press Cancel, and nobody else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from layerbot import clock, log
from layerbot.config import Config
from layerbot.github.access import AccessChecker
from layerbot.store import repos
from layerbot.store.db import Store
from layerbot.store.models import ApiToken

_log = log.get("web")

#: Actions a token can be scoped to (reading needs no scope).
#: ``read_private`` lets a token read private repositories' PRs, jobs and logs.
SCOPES: tuple[str, ...] = ("build", "cancel", "deploy", "force_deploy", "pause",
                           "read_private")
SESSION_COOKIE = "layerbot_session"
OAUTH_COOKIE = "layerbot_oauth"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
TOKEN_PREFIX = "lbt_"  # noqa: S105 (a prefix that makes leaked tokens easy to find)
#: A token's last use is written at most this often (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthError(Exception):
    """401: who is asking is unknown; 403: known, but may not."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    kind: Literal["anonymous", "user", "token"]
    login: str = ""
    scopes: frozenset[str] = frozenset()
    csrf: str = ""
    token_name: str = ""

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal("anonymous")


# --------------------------------------------------------------------------------------------
# API tokens (store functions, also used by `layerbot token`)
# --------------------------------------------------------------------------------------------


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(store: Store, name: str, scopes: list[str], login: str, now: datetime,
                 expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token; the secret is returned once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; scopes are "
                         + ", ".join(SCOPES))
    if not name.strip():
        raise ValueError("a token needs a name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as s:
        token = ApiToken(name=name.strip(), prefix=secret[:12], token_hash=hash_token(secret),
                         scopes=sorted(set(scopes)), created_by=login, created_at=now,
                         expires_at=expires_at)
        s.add(token)
        s.flush()
    return token, secret


def list_tokens(store: Store) -> list[ApiToken]:
    with store.read() as s:
        return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(store: Store, ident: str, now: datetime) -> int:
    """Revoke tokens by id or by name; returns how many were revoked."""
    with store.transaction() as s:
        query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
        query = (query.where(ApiToken.id == int(ident)) if ident.isdigit()
                 else query.where(ApiToken.name == ident))
        tokens = list(s.scalars(query))
        for t in tokens:
            t.revoked_at = now
    return len(tokens)


def lookup_token(store: Store, secret: str, now: datetime) -> ApiToken | None:
    digest = hash_token(secret)
    with store.read() as s:
        token = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        with store.transaction() as s:
            row = s.get(ApiToken, token.id)
            if row is not None:
                row.last_used_at = now
    return token


# --------------------------------------------------------------------------------------------
# Sessions, CSRF and decisions
# --------------------------------------------------------------------------------------------


def session_secret(config: Config) -> str:
    """The configured secret, else one generated once and kept beside the database."""
    if config.web.session_secret is not None:
        return config.web.session_secret.get_secret_value()
    path = config.instance.data_dir / "web-session-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value


class Auth:
    def __init__(self, config: Config, store: Store, access: AccessChecker,
                 secret: str | None = None) -> None:
        self.config = config
        self.web = config.web
        self.store = store
        self.access = access
        key = self.key = secret or session_secret(config)
        self._sessions = URLSafeTimedSerializer(key, salt="layerbot-session")
        self._states = URLSafeTimedSerializer(key, salt="layerbot-oauth-state")
        self.secure = self.web.base_url.startswith("https://")

    # --- who is asking ---

    async def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = await asyncio.to_thread(lookup_token, self.store, header[7:].strip(),
                                            clock.now())
            if token is None:
                raise AuthError(401, "the API token is unknown, revoked or expired")
            return Principal("token", login=token.created_by, scopes=frozenset(token.scopes),
                             token_name=token.name)
        return self.session(request)

    def session(self, request: Request) -> Principal:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return ANONYMOUS
        try:
            data = self._sessions.loads(raw, max_age=int(self.web.session_hours * 3600))
        except BadSignature:
            return ANONYMOUS
        if not isinstance(data, dict) or not data.get("login") or not data.get("csrf"):
            return ANONYMOUS
        return Principal("user", login=str(data["login"]), csrf=str(data["csrf"]))

    def may_read(self, who: Principal) -> None:
        if who.anonymous and not self.web.public_read:
            raise AuthError(401, "log in to see this instance's builds")

    def check_csrf(self, who: Principal, sent: str | None) -> None:
        """Cookie-authenticated writes must echo the session's CSRF token."""
        if who.kind != "user":
            return
        if not sent or not hmac.compare_digest(sent, who.csrf):
            raise AuthError(403, "the form is stale or came from another site (CSRF token "
                                 "missing or wrong); reload the page and try again")

    async def authorize(self, who: Principal, action: str, repo: str,
                        installation_id: int | None) -> None:
        """Raise AuthError unless ``who`` may take ``action`` on ``repo``."""
        if who.anonymous:
            raise AuthError(401, f"log in (or send an API token) to {action.replace('_', ' ')}")
        if who.kind == "token":
            if action not in who.scopes:
                raise AuthError(403, f"the token {who.token_name!r} has no {action!r} scope "
                                     f"(it has: {', '.join(sorted(who.scopes)) or 'none'})")
            return
        try:
            decision = await self.access.check(action, repo, who.login, installation_id)
        except Exception as exc:  # GitHub down: refuse rather than guess
            _log.warning("access check failed", error=str(exc), login=who.login)
            raise AuthError(403, f"could not check your access on GitHub: {exc}") from None
        if not decision.allowed:
            raise AuthError(403, f"not allowed: {decision.reason}. "
                                 + decision.who_may.replace("`", ""))

    async def authorize_instance(self, who: Principal, action: str,
                                 scopes: list[tuple[str, int | None]]) -> None:
        """Instance-wide actions: allowed when ``who`` may take ``action`` on one of the
        configured repositories (``control.instance_scopes``); else the first refusal.
        Tokens are decided by their scopes alone, as for every action."""
        if who.kind != "user":
            await self.authorize(who, action, "", None)
            return
        refusal: AuthError | None = None
        for repo, installation in scopes:
            try:
                await self.authorize(who, action, repo, installation)
                return
            except AuthError as exc:
                if exc.status == 401:
                    raise
                refusal = refusal or exc
        raise refusal or AuthError(403, "no repository decides instance-wide actions on "
                                        "this instance: set web.repository (or name "
                                        "repositories in github.repositories)")

    async def readable(self, who: Principal) -> frozenset[str] | None:
        """The repositories whose PRs, jobs and logs ``who`` may see (None: all).

        Public repositories for everyone; private ones for a person who can read them on
        GitHub (their permission, asked through the App and cached like access decisions)
        and for tokens with the ``read_private`` scope. A repository the bot never saw an
        event of counts as private.
        """
        if who.kind == "token" and "read_private" in who.scopes:
            return None
        known = await asyncio.to_thread(repos.visibility, self.store)
        if who.kind != "user" or not known.private:
            return known.public
        allowed = set(known.public)
        for repo, installation in known.private.items():
            if await self._can_read(who.login, repo, installation):
                allowed.add(repo)
        return frozenset(allowed)

    async def must_see(self, who: Principal, repo: str, missing: str) -> None:
        """Acting on a job of a repository one cannot read answers as for a job that does
        not exist (404 with ``missing``), before any permission is looked up: a 403 would
        tell that the private repository has this job."""
        visible = await self.readable(who)
        if visible is not None and repo not in visible:
            raise AuthError(404, missing)

    async def _can_read(self, login: str, repo: str, installation: int | None) -> bool:
        try:
            permission = await self.access.permission(repo, login, installation)
        except Exception as exc:  # GitHub down: show less rather than guess
            _log.warning("read access check failed", error=str(exc), login=login, repo=repo)
            return False
        return permission not in ("none", None)

    # --- login ---

    def issue(self, login: str) -> tuple[str, str]:
        """A session cookie's value for ``login``, and its CSRF token."""
        csrf = secrets.token_urlsafe(24)
        return self._sessions.dumps({"login": login, "csrf": csrf}), csrf

    def _base(self, request: Request) -> str:
        return self.web.base_url or str(request.base_url).rstrip("/")

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get("/login")
        async def login(request: Request, next: str = "/") -> Response:
            if not self.web.oauth_client_id:
                return Response("Logging in is not configured on this instance (set "
                                "web.oauth_client_id and web.oauth_client_secret_file).",
                                status_code=503, media_type="text/plain")
            state = secrets.token_urlsafe(24)
            query = urlencode({"client_id": self.web.oauth_client_id,
                               "redirect_uri": self._base(request) + "/auth/callback",
                               "state": state, "allow_signup": "false"})
            response = RedirectResponse(f"{self.web.oauth_authorize_url}?{query}", 303)
            response.set_cookie(OAUTH_COOKIE, self._states.dumps({"state": state,
                                                                  "next": _local(next)}),
                                max_age=600, httponly=True, samesite="lax", secure=self.secure)
            return response

        @router.get("/auth/callback")
        async def callback(request: Request, code: str = "", state: str = "") -> Response:
            try:
                saved = self._states.loads(request.cookies.get(OAUTH_COOKIE, ""), max_age=600)
            except BadSignature:
                saved = None
            if not saved or not code or not hmac.compare_digest(str(saved.get("state")), state):
                return Response("The login expired or did not start here; try again.",
                                status_code=400, media_type="text/plain")
            try:
                login_name = await self._github_login(request, code)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                _log.warning("login failed", error=str(exc))
                return Response(f"GitHub did not confirm the login: {exc}", status_code=502,
                                media_type="text/plain")
            _log.info("logged in", login=login_name)
            response = RedirectResponse(_local(str(saved.get("next", "/"))), 303)
            response.delete_cookie(OAUTH_COOKIE)
            self.set_session(response, login_name)
            return response

        @router.post("/logout")
        async def logout(request: Request) -> Response:
            who = self.session(request)
            form = await request.form()
            try:
                self.check_csrf(who, str(form.get(CSRF_FIELD) or ""))
            except AuthError as exc:
                return Response(exc.message, status_code=403, media_type="text/plain")
            response = RedirectResponse("/", 303)
            response.delete_cookie(SESSION_COOKIE)
            return response

        return router

    def set_session(self, response: Response, login: str) -> None:
        response.set_cookie(SESSION_COOKIE, self.issue(login)[0],
                            max_age=int(self.web.session_hours * 3600), httponly=True,
                            samesite="lax", secure=self.secure)

    async def _github_login(self, request: Request, code: str) -> str:
        secret = self.web.oauth_client_secret
        async with httpx.AsyncClient(timeout=15) as client:
            answer = await client.post(self.web.oauth_token_url, headers={
                "Accept": "application/json"}, data={
                "client_id": self.web.oauth_client_id,
                "client_secret": secret.get_secret_value() if secret else "",
                "code": code, "redirect_uri": self._base(request) + "/auth/callback"})
            answer.raise_for_status()
            data: dict[str, Any] = answer.json()
            if "access_token" not in data:
                raise ValueError(data.get("error_description") or data.get("error")
                                 or "no access token")
            user = await client.get(self.web.oauth_user_url, headers={
                "Authorization": f"Bearer {data['access_token']}",
                "Accept": "application/vnd.github+json"})
            user.raise_for_status()
            return str(user.json()["login"])


def _local(path: str) -> str:
    """Only paths on this site: never redirect to another host after login."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


__all__ = ["ANONYMOUS", "SCOPES", "Auth", "AuthError", "Principal", "create_token",
           "list_tokens", "lookup_token", "revoke_token"]
