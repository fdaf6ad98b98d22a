"""The ``repositories`` table: visibility (public/private) and installation, per repository.

Written from every webhook event (``repository.private`` is in each payload), read by the
control center to decide what may be shown to whom.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from layerbot.store.db import Store
from layerbot.store.models import Build, Repository

__all__ = ["Visibility", "record", "visibility"]


def record(session: Session, name: str, private: bool, installation_id: int | None,
           now: datetime) -> None:
    """Keep what the latest event said (a repository can be made public or private).

    One statement (insert, or update on conflict): events of one repository are handled
    at once by several workers (and replicas), and each may be the first to see it.
    """
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    statement = insert(Repository).values(name=name, private=private,
                                          installation_id=installation_id, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=[Repository.name],
        set_={"private": statement.excluded.private, "updated_at": statement.excluded.updated_at,
              "installation_id": func.coalesce(statement.excluded.installation_id,
                                               Repository.installation_id)}))


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
