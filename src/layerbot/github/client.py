"""GitHub App access: JWT for the App, an installation token per installation.

githubkit signs the App's JWT and makes the requests. Installation tokens are cached here
(rather than in githubkit's cache) so that they are renewed well before their hour runs
out, and dropped at once when GitHub answers 401 (a revoked or expired token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import RequestError, RequestFailed

from layerbot import log
from layerbot.config import GitHubConfig

#: Renew a token when less than this is left of its hour.
RENEW_MARGIN_SECONDS = 600

_log = log.get("github")


@dataclass(frozen=True)
class RateLimitInfo:
    resource: str
    limit: int
    remaining: int
    reset_at: datetime


class GitHubError(Exception):
    """A GitHub request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, method: str, url: str, status: int, message: str,
                 headers: httpx.Headers | None = None) -> None:
        super().__init__(f"{method} {url}: {status or 'no answer'} {message}".strip())
        self.status = status
        self.headers = headers or httpx.Headers()
        self.message = message


@dataclass
class _Token:
    value: str
    expires_at: float  # epoch seconds


class GitHubApp:
    """The bot's way to GitHub. One per process; shared by handlers and the sender."""

    def __init__(self, config: GitHubConfig,
                 on_rate_limit: Callable[[RateLimitInfo], None] | None = None) -> None:
        if config.app_id is None or config.private_key is None:
            raise ValueError("github.app_id and github.private_key_file are needed to reach GitHub")
        self.config = config
        # githubkit makes an httpx client (and a TLS context) per request unless the calling
        # task entered its context; one shared transport keeps connections and TLS setup.
        # Connections belong to an event loop: a new loop (a test client, `asyncio.run` in
        # the CLI) gets a new transport and clients.
        self._app_auth = AppAuthStrategy(str(config.app_id),
                                         config.private_key.get_secret_value())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport = _SharedTransport()
        self._app = self._client(self._app_auth)
        self._tokens: dict[int, _Token] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._clients: dict[str, GitHub[Any]] = {}
        self._on_rate_limit = on_rate_limit or (lambda _info: None)
        self.requests = 0  # count of requests made (metrics, benchmarks)
        #: The newest rate-limit headers per resource (the sender stores them).
        self.rate_limits: dict[str, RateLimitInfo] = {}

    async def installation_token(self, installation_id: int) -> str:
        token = self._tokens.get(installation_id)
        if token and token.expires_at - time.time() > RENEW_MARGIN_SECONDS:
            return token.value
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            token = self._tokens.get(installation_id)
            if token and token.expires_at - time.time() > RENEW_MARGIN_SECONDS:
                return token.value
            data = await self.app_request(
                "POST", f"/app/installations/{installation_id}/access_tokens")
            expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
            self._tokens[installation_id] = _Token(data["token"], expires.timestamp())
            _log.debug("installation token issued", installation_id=installation_id,
                       expires_at=data["expires_at"])
            return str(data["token"])

    def forget_token(self, installation_id: int) -> None:
        self._tokens.pop(installation_id, None)

    async def app_request(self, method: str, url: str, **kwargs: Any) -> Any:
        """A request as the App itself (JWT)."""
        return (await self._send(self._app_client(), method, url, **kwargs)).json() or {}

    async def app_request_raw(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self._send(self._app_client(), method, url, **kwargs)

    async def request(self, installation_id: int, method: str, url: str,
                      **kwargs: Any) -> httpx.Response:
        """A request as an installation; a 401 renews the token once and tries again."""
        for attempt in (1, 2):
            token = await self.installation_token(installation_id)
            client = self._client_for(token)
            try:
                return await self._send(client, method, url, **kwargs)
            except GitHubError as exc:
                if exc.status == 401 and attempt == 1:
                    _log.info("token refused; renewing", installation_id=installation_id)
                    self.forget_token(installation_id)
                    self._clients.pop(token, None)
                    continue
                raise
        raise AssertionError("unreachable")

    async def json(self, installation_id: int, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.request(installation_id, method, url, **kwargs)
        return response.json() if response.content else None

    def _on_this_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._transport = _SharedTransport()
            self._clients.clear()
            self._app = self._client(self._app_auth)

    def _app_client(self) -> GitHub[Any]:
        self._on_this_loop()
        return self._app

    def _client(self, auth: Any) -> GitHub[Any]:
        return GitHub(auth, base_url=self.config.api_url, auto_retry=False,
                      timeout=self.config.timeout_seconds,
                      http_cache=False, async_transport=self._transport)

    def _client_for(self, token: str) -> GitHub[Any]:
        """One client per installation token (they only differ in their auth)."""
        self._on_this_loop()
        client = self._clients.get(token)
        if client is None:
            if len(self._clients) > 64:
                self._clients.clear()
            client = self._clients[token] = self._client(TokenAuthStrategy(token))
        return client

    async def close(self) -> None:
        self._clients.clear()
        await self._transport.close_for_good()

    async def _send(self, client: GitHub[Any], method: str, url: str,
                    **kwargs: Any) -> httpx.Response:
        self.requests += 1
        try:
            response = await client.arequest(method, url, **kwargs)
        except RequestFailed as exc:
            raw = exc.response.raw_response
            self._note_rate_limit(raw.headers)
            raise GitHubError(method, url, raw.status_code, _error_message(raw),
                              raw.headers) from None
        except (httpx.HTTPError, RequestError) as exc:  # no answer at all
            raise GitHubError(method, url, 0, f"{type(exc).__name__}: {exc}") from None
        self._note_rate_limit(response.raw_response.headers)
        return response.raw_response

    def _note_rate_limit(self, headers: httpx.Headers) -> None:
        if "x-ratelimit-remaining" not in headers:
            return
        try:
            info = RateLimitInfo(
                resource=headers.get("x-ratelimit-resource", "core"),
                limit=int(headers.get("x-ratelimit-limit", "0")),
                remaining=int(headers["x-ratelimit-remaining"]),
                reset_at=datetime.fromtimestamp(int(headers.get("x-ratelimit-reset", "0")), UTC),
            )
        except ValueError:
            return
        self.rate_limits[info.resource] = info
        self._on_rate_limit(info)


class _SharedTransport(httpx.AsyncHTTPTransport):
    """A transport shared by every client: closing one client must not close it."""

    async def aclose(self) -> None:
        return None

    async def close_for_good(self) -> None:
        await super().aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("message", ""))[:500]
    return ""
