"""The gate every event passes before its handlers: is its repository one the bot serves?

A public App can be installed by anyone; without this gate, anyone who installs it gets
builds on the bot's machines. Events of repositories outside ``github.repositories`` are
ignored (the inbox records why), logged and counted. So are bodies that lack what the
handlers read (``core/payloads.py``). Events that pass record what GitHub
says of the repository's visibility, so the control center knows what it may show.
"""

from __future__ import annotations

from layerbot import log, metrics
from layerbot.core import payloads
from layerbot.core.repos import is_allowed
from layerbot.handlers.base import Context, Event
from layerbot.store import repos

_log = log.get("inbox")


def admit(event: Event, ctx: Context) -> str | None:
    """None if the handlers may run; else why the event is ignored."""
    why = payloads.malformed(event.name, event.payload)
    if why is not None:  # signed, yet not what the handlers read: said, not crashed on
        metrics.EVENTS_MALFORMED.labels(event=event.name).inc()
        _log.warning("event with a malformed body ignored", reason=why)
        return f"malformed body: {why}"
    repository = event.payload.get("repository")
    if not isinstance(repository, dict):
        return None  # installation events and the like: no handler builds from them
    name = event.repo
    if not is_allowed(ctx.config.github.repositories, name):
        metrics.EVENTS_NOT_ALLOWED.labels(event=event.name).inc()
        _log.warning("event of a repository not in github.repositories ignored",
                     repo=name, installation_id=event.installation_id)
        return (f"repository {name or '(unnamed)'} is not in github.repositories "
                f"(installation {event.installation_id})")
    # Unknown visibility counts as private: nothing is shown without login by accident.
    private = repository.get("private") is not False
    installation = event.installation_id
    ctx.write(lambda s: repos.record(s, name, private, installation, ctx.now))
    return None
