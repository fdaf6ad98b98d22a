"""Location of the shared reference data (GitHub OpenAPI subset, webhook examples)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides where the shared data lives.
SHARED_DIR_ENV = "LAYERBOT_SHARED_DIR"

# tests/support/shared.py -> parents[2] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """Return the ``shared/`` directory that sits beside the repository checkout.

    Locally and in CI the repository is cloned next to a copy of ``shared/`` (so it is
    ``<repo_root>/../shared``); ``LAYERBOT_SHARED_DIR`` overrides that for unusual layouts.
    """
    override = os.environ.get(SHARED_DIR_ENV)
    path = Path(override) if override else _REPO_ROOT.parent / "shared"
    if not (path / "github").is_dir():
        raise FileNotFoundError(
            f"shared data not found at {path} (expected a 'github' subdirectory); "
            f"set {SHARED_DIR_ENV} to the shared directory"
        )
    return path


def github_data_dir() -> Path:
    """``shared/github``: the GitHub OpenAPI subset and the webhook examples/schemas."""
    return shared_dir() / "github"
