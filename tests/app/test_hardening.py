"""Process hardening: not dumpable, secret variables gone before any child starts."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import ctypes, os, subprocess
from layerbot.app.hardening import harden
harden()
libc = ctypes.CDLL(None)
print("dumpable", libc.prctl(3, 0, 0, 0, 0))
print(subprocess.run(["env"], capture_output=True, text=True).stdout)
"""


def test_harden_makes_the_process_undumpable_and_children_secret_free() -> None:
    env = {**os.environ, "LAYERBOT_WEBHOOK_SECRET": "hush-hush-1234567890",
           "LAYERBOT_SESSION_SECRET": "quiet-0987654321"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "dumpable 0" in out
    assert "hush-hush" not in out and "quiet-0987" not in out
    assert "PATH=" in out  # the child got an environment, just not the secrets
