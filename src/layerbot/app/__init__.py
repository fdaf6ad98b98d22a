"""The application: every part built from the configuration and wired together.

``bot`` builds the parts and runs them (the HTTP app and the background loops);
``commands`` binds the grammar's commands to their handlers and merges the routers;
``workers`` builds the job, deploy and fleet loops; ``web`` adds the control center's
routes; ``supervisor`` runs the worker process of `serve`; ``hardening`` is what every
process does first; ``run`` is `layerbot run`, the pipeline without GitHub. Nothing below
the application imports it.

``Bot`` and ``asgi`` are loaded on first use: the CLI imports ``app.hardening`` for every
command, and must not build the whole bot's imports for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerbot.app.bot import Bot, asgi

__all__ = ["Bot", "asgi"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from layerbot.app import bot

        return getattr(bot, name)
    raise AttributeError(f"module 'layerbot.app' has no attribute {name!r}")
