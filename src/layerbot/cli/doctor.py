"""`layerbot doctor`: reach every configured part and say how to fix what fails."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from layerbot.backends.base import Check
from layerbot.config import Config


async def run_checks(config: Config) -> list[Check]:
    checks = [_check_config(config), await _check_database(config), _check_data_dir(config)]
    checks.extend(await _check_github(config))
    checks.extend(await _check_backend(config))
    checks.extend(_check_file_exposure(config))
    return checks


def _check_file_exposure(config: Config) -> list[Check]:
    """Each bot file the job user could read or write, named with its remedy."""
    from layerbot.build.identity import IsolationRefused, resolve
    from layerbot.cli.file_exposure import exposure, remedy

    try:
        user = resolve(config.build.run_as, config.build.allow_unisolated)
    except IsolationRefused as exc:
        return [Check("job isolation", False, str(exc), "see docs/security.md")]
    if user is None:
        return [Check("job isolation", False, "jobs run as the bot's own user "
                      "(build.allow_unisolated)", "run the bot as root or see docs/security.md")]
    gh, web = config.github, config.web
    files = [(config.source, "configuration"), (gh.private_key_file, "App private key"),
             (gh.webhook_secret_file, "webhook secret"),
             (web.session_secret_file, "session secret"),
             (web.oauth_client_secret_file, "OAuth client secret"),
             (config.deploy.signing_key_file, "deploy signing key")]
    url = config.store_url
    if url.startswith("sqlite:///"):
        files.append((Path(url[len("sqlite:///"):]), "database"))
    found = [e for path, what in files if path is not None
             if (e := exposure(Path(path), what, user)) is not None]
    if (e := exposure(config.instance.data_dir, "data directory", user, directory=True)):
        found.append(e)
    checks = [Check(f"{e.what} closed to {user.name}", False,
                    f"{e.path}: the job user can {e.access} it", remedy(e)) for e in found]
    return checks or [Check("job isolation", True, f"jobs run as {user.name}; the bot's "
                            "files are closed to it")]


def _check_config(config: Config) -> Check:
    source = str(config.source) if config.source else "embedded defaults"
    return Check("configuration", True, f"read from {source}")


async def _check_database(config: Config) -> Check:
    from layerbot.store.db import Store

    def ping() -> None:
        store = Store(config.store_url)
        try:
            store.ping()
        finally:
            store.close()

    try:
        await asyncio.to_thread(ping)
    except Exception as exc:
        return Check("database", False, _short(exc),
                     "check store.url, that the server runs and the user may connect")
    return Check("database", True, _redact_url(config.store_url) + " (migrations applied)")


def _check_data_dir(config: Config) -> Check:
    path = Path(config.instance.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        ok = os.access(path, os.W_OK)
    except OSError as exc:
        return Check("data directory", False, f"{path}: {exc.strerror}",
                     "set instance.data_dir to a directory the bot may write")
    return Check("data directory", ok, str(path),
                 "" if ok else "make it writable by the bot's user")


async def _check_github(config: Config) -> list[Check]:
    gh = config.github
    secret = Check("webhook secret", gh.webhook_secret is not None,
                   "configured" if gh.webhook_secret else "missing",
                   "" if gh.webhook_secret else
                   "set github.webhook_secret_file or LAYERBOT_WEBHOOK_SECRET; without it every "
                   "delivery is refused")
    if gh.app_id is None or gh.private_key is None:
        return [secret, Check("GitHub App", False, "app_id or private key missing",
                              "set github.app_id and github.private_key_file "
                              "(or LAYERBOT_GITHUB_PRIVATE_KEY)")]
    from layerbot.github.client import GitHubApp, GitHubError

    app = GitHubApp(gh)
    try:
        info = await app.app_request("GET", "/app")
        installs = await app.app_request("GET", "/app/installations")
    except GitHubError as exc:
        remedy = ("the App id or private key is wrong, or the key was revoked"
                  if exc.status == 401 else f"check github.api_url ({gh.api_url})")
        return [secret, Check("GitHub App", False, str(exc), remedy)]
    names = ", ".join(str((i.get("account") or {}).get("login")) for i in installs) or "none"
    return [secret, Check("GitHub App", True,
                          f"{info.get('slug') or info.get('name')} at {gh.api_url}; "
                          f"installed on: {names}")]


async def _check_backend(config: Config) -> list[Check]:
    from layerbot.backends import make_backend

    try:
        backend = make_backend(config)
        return await backend.check()
    except Exception as exc:
        return [Check(f"backend {config.backend.kind}", False, _short(exc),
                      "see docs/configuration.md, section [backend]")]


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
