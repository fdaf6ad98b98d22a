"""Process hardening of the bot: not dumpable, no secrets left in the environment.

Why: a job that runs on the same machine must not find the bot's secrets in
``/proc/<bot pid>/environ`` or in a core dump, and must not be able to attach to the bot.
``PR_SET_DUMPABLE = 0`` makes ``/proc/<pid>/environ``, ``mem`` and ptrace root-only for the
bot's processes; removing the ``LAYERBOT_*`` secret variables once they are read keeps them
out of every child the bot starts (git, ssh-keygen, launchers) and out of ``environ`` of a
process started later. Both are applied right after the configuration is read, before any
child is started (``cli.load_config``) and again in the worker process.
"""

from __future__ import annotations

import ctypes
import os

from layerbot.config import (
    OAUTH_SECRET_ENV,
    PRIVATE_KEY_ENV,
    SESSION_SECRET_ENV,
    WEBHOOK_SECRET_ENV,
)

#: The environment variables that carry secrets; removed once the configuration has them.
#: (Not the AWS_* variables: boto3 reads those itself when it makes a client.)
SECRET_ENV_VARS = (PRIVATE_KEY_ENV, WEBHOOK_SECRET_ENV, SESSION_SECRET_ENV, OAUTH_SECRET_ENV)
PR_SET_DUMPABLE = 4


def scrub_secret_env() -> list[str]:
    """Remove the secret variables from ``os.environ`` (and so from the C environment)."""
    removed = [name for name in SECRET_ENV_VARS if name in os.environ]
    for name in removed:
        del os.environ[name]
    return removed


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``; False where the call is not available (not Linux)."""
    try:
        # The C library the interpreter already uses (find_library would spawn ldconfig).
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def harden() -> None:
    make_undumpable()
    scrub_secret_env()
