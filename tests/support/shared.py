"""Location of the GitHub reference data the tests use (OpenAPI subset, webhook examples).

The data lives inside the repository (``tests/data/github``, provenance in its README), so a
clean clone runs its tests with nothing beside it: no environment variable, no sibling
directory. ``tests/test_self_contained.py`` keeps it that way.
"""

from __future__ import annotations

from pathlib import Path

# tests/support/shared.py -> parents[1] is tests/.
_TESTS_DIR = Path(__file__).resolve().parents[1]

#: The in-repository copy of the GitHub reference data.
GITHUB_DATA_DIR = _TESTS_DIR / "data" / "github"


def github_data_dir() -> Path:
    """``tests/data/github``: the GitHub OpenAPI subset and the webhook examples/schemas."""
    return GITHUB_DATA_DIR
