"""What the command handlers and the control center both do, written once, below both.

``handlers/`` (commands and events from GitHub) and ``control/`` (API, dashboard, CLI) call
these; neither imports the other. Each module is one concern: reading a PR's head
(``pulls``), recording builds and redoing jobs (``builds``), cancelling (``cancelling``),
planning and recording deployments (``deployments``). Functions that write take the
caller's session, so the caller's transaction holds the change and its PR report together.
"""
