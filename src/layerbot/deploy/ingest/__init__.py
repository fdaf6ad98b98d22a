"""The core of ``layerbot ingest``, run on the repository server (e.g. a CernVM-FS Stratum 0).

Each poll it lists the staging area and, for every artifact it has not settled yet, in the
order the artifacts were staged:

1. reads the metadata and checks its signature (nothing in it is trusted before that);
2. downloads the tarball, checks its sha256 against the metadata and its signature;
3. checks that the tarball stays inside its tree (``tarsafety``);
4. asks the approval policy (automatic for allowed signers, or a maintainer on GitHub);
5. runs the ingest command (``cvmfs_server ingest ...`` by default), one artifact at a time
   per repository;
6. records the outcome in ``<state_dir>/ingest.sqlite`` and reports it through a callback.

Settled artifacts are never looked at again, and an artifact (its sha256, wherever it is
staged) that was ingested is never ingested twice, also across restarts, unless an admin
forces it. An artifact must be found under the key its signed metadata names, and a build
never follows a newer one of the same target (``binding``). An ingest cut short by a crash is
marked failed rather than run again: only the operator can tell whether it got applied.
Reports are delivered at least once: an outcome whose callback failed is re-sent next poll.

The package, one concern a module:

- ``policy``: approval (``Decision``, ``IngestItem``, ``ApprovalPolicy``, ``AutoApprove``);
- ``events``: the outcomes reported on the PR; ``errors``: ``IngestError``;
- ``store``: the durable state (``Record``, ``OutcomeStore``);
- ``command``: the ingest command's template and running it;
- ``ingestor``: ``Ingestor``, the poll that takes artifacts through all of it.
"""

from __future__ import annotations

from layerbot.deploy.ingest.command import COMMAND_FIELDS, DEFAULT_COMMAND
from layerbot.deploy.ingest.errors import IngestError
from layerbot.deploy.ingest.events import EventCallback, EventState, IngestEvent
from layerbot.deploy.ingest.ingestor import Ingestor
from layerbot.deploy.ingest.policy import (
    Approval,
    ApprovalPolicy,
    AutoApprove,
    Decision,
    IngestItem,
)
from layerbot.deploy.ingest.store import OutcomeStore, Record

__all__ = [
    "COMMAND_FIELDS",
    "DEFAULT_COMMAND",
    "Approval",
    "ApprovalPolicy",
    "AutoApprove",
    "Decision",
    "EventCallback",
    "EventState",
    "IngestError",
    "IngestEvent",
    "IngestItem",
    "Ingestor",
    "OutcomeStore",
    "Record",
]
