"""The ``repositories`` table: visibility (public/private) and installation, per repository.

Written from every webhook event (``repository.private`` is in each payload), read by the
control center to decide what may be shown to whom.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerbot.store.db import Store
from layerbot.store.models import Build, Repository

__all__ = ["Visibility", "record", "visibility"]


def record(session: Session, name: str, private: bool, installation_id: int | None,
           now: datetime) -> None:
    """Keep what the latest event said (a repository can be made public or private)."""
    row = session.get(Repository, name)
    if row is None:
        session.add(Repository(name=name, private=private, installation_id=installation_id,
                               updated_at=now))
        return
    row.private = private
    if installation_id is not None:
        row.installation_id = installation_id
    row.updated_at = now


class Visibility:
    """Known repositories: the public ones, and the private ones with their installation."""

    def __init__(self, public: frozenset[str], private: dict[str, int | None]) -> None:
        self.public = public
        self.private = private


def visibility(store: Store) -> Visibility:
    """Repositories with builds but no row (built before the bot recorded visibility, or
    by `layerbot run`) count as private, with the installation their builds name."""
    with store.read() as s:
        rows = s.execute(select(Repository.name, Repository.private,
                                Repository.installation_id)).all()
        built = s.execute(select(Build.repo, func.max(Build.installation_id))
                          .group_by(Build.repo)).all()
    private = {r.name: r.installation_id for r in rows if r.private}
    known = {r.name for r in rows}
    private.update({repo: installation for repo, installation in built if repo not in known})
    return Visibility(frozenset(r.name for r in rows if not r.private), private)
