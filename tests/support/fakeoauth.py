"""A fake GitHub OAuth server: the web flow's three endpoints, served on 127.0.0.1.

* ``GET /login/oauth/authorize``: GitHub's consent page; here it approves at once as
  :attr:`FakeOAuth.login` and redirects to ``redirect_uri`` with a one-time code.
* ``POST /login/oauth/access_token``: trades the code (with the client secret) for a token.
* ``GET /user``: the user the token belongs to.

Codes are single-use and bound to the client and the redirect URI, as on GitHub.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class FakeOAuth:
    client_id: str = "test-client"
    client_secret: str = "test-client-secret"
    #: Who "logs in" at the next authorization.
    login: str = "alice"
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (login, uri)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> login
    authorizations: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def web_config(self) -> dict[str, str]:
        """The ``[web]`` settings that point a bot at this server."""
        return {"oauth_client_id": self.client_id,
                "oauth_authorize_url": self.url + "/login/oauth/authorize",
                "oauth_token_url": self.url + "/login/oauth/access_token",
                "oauth_user_url": self.url + "/user"}

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or not q.get("redirect_uri"):
            return JSONResponse({"error": "bad client or redirect_uri"}, 400)
        self.authorizations += 1
        code = secrets.token_hex(10)
        self.codes[code] = (self.login, q["redirect_uri"])
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        return RedirectResponse(target, 302)

    async def access_token(self, request: Request) -> Response:
        form = await request.form()
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                  self.client_secret):
            return JSONResponse({"error": "incorrect_client_credentials"})
        entry = self.codes.pop(str(form.get("code")), None)
        if entry is None or entry[1] != form.get("redirect_uri"):
            return JSONResponse({"error": "bad_verification_code",
                                 "error_description": "The code is incorrect or expired."})
        token = "gho_" + secrets.token_hex(16)
        self.tokens[token] = entry[0]
        if "application/json" not in request.headers.get("accept", ""):
            return Response(urlencode({"access_token": token, "token_type": "bearer"}))
        return JSONResponse({"access_token": token, "token_type": "bearer", "scope": ""})

    async def user(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        login = self.tokens.get(token)
        if login is None:
            return JSONResponse({"message": "Bad credentials"}, 401)
        return JSONResponse({"login": login, "id": abs(hash(login)) % 10**8, "type": "User"})

    def start(self) -> FakeOAuth:
        app = Starlette(routes=[
            Route("/login/oauth/authorize", self.authorize),
            Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
            Route("/user", self.user)])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name="fake-oauth")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OAuth server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
