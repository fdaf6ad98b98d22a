"""Batch-system backends behind one port (see base.py): local executor and Slurm."""

from __future__ import annotations

from pathlib import Path

from layerbot.backends.base import Backend
from layerbot.build.identity import JobUser
from layerbot.config import Config


def make_backend(config: Config) -> Backend:
    """The configured backend (imports only the one in use); jobs never run as the bot."""
    user = job_user(config)
    if config.backend.kind == "slurm":
        from layerbot.backends.slurm import SlurmBackend

        return SlurmBackend(config.backend.slurm, config.node_types, job_user=user)
    from layerbot.backends.local import LocalBackend

    return LocalBackend(config.backend.local, config.instance.data_dir / "local-backend",
                        job_user=user)


def job_user(config: Config) -> JobUser | None:
    """Who jobs run as (None: the bot's own user, allowed explicitly); the data directory
    and database are closed to that user first."""
    from layerbot.build import handover, identity
    from layerbot.config import ConfigError

    try:
        user = identity.resolve(config.build.run_as, config.build.allow_unisolated)
    except identity.IsolationRefused as exc:
        raise ConfigError("(job isolation)", [f"build.run_as: {exc}"]) from None
    handover.secure_data_dir(config.instance.data_dir, _sqlite_files(config.store.url))
    return user


def _sqlite_files(url: str) -> list[Path]:
    """The database files of a SQLite store (made 0600); none for PostgreSQL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return []
    db = Path(url[len(prefix):])
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
