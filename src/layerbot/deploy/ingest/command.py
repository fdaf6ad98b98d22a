"""The ingest command a site runs for each artifact (``cvmfs_server ingest`` by default) and
the placeholders its templates may use.
"""

from __future__ import annotations

DEFAULT_COMMAND = (
    "cvmfs_server",
    "ingest",
    "--tar_file",
    "{tarball}",
    "--base_dir",
    "{base_dir}",
    "{repository}",
)
#: Placeholders of the command and base-dir templates.
COMMAND_FIELDS = (
    "tarball",
    "repository",
    "base_dir",
    "repo_target",
    "target",
    "key",
    "sha256",
    "repo",
    "pr",
    "instance",
)
_FINAL = ("ingested", "rejected", "failed", "duplicate")
_OUTPUT_TAIL_LINES = 15


