"""The application: every part built from the configuration and wired together.

``bot`` builds the parts and runs them (the HTTP app and the background loops);
``commands`` binds the grammar's commands to their handlers and merges the routers;
``workers`` builds the job, deploy and fleet loops; ``web`` adds the control center's
routes. Nothing below the application imports it.
"""

from layerbot.app.bot import Bot, asgi

__all__ = ["Bot", "asgi"]
