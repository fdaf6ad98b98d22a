"""Durable state: one row per staged metadata file, in ``<state_dir>/ingest.sqlite``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from layerbot.deploy.metadata import ArtifactMetadata, MetadataError, parse_metadata


@dataclass
class Record:
    id: str
    key: str
    meta_key: str
    state: str
    reason: str = ""
    sha256: str | None = None
    repository: str | None = None
    staged_at: str = ""
    metadata: str | None = None
    #: 1 once the metadata's signature was checked; until then ``metadata`` is a claim.
    metadata_verified: int = 0
    decided_by: str | None = None
    reported_state: str | None = None
    updated_at: str = ""

    @property
    def parsed_metadata(self) -> ArtifactMetadata | None:
        if not self.metadata:
            return None
        try:
            return parse_metadata(self.metadata.encode())
        except MetadataError:
            return None


class OutcomeStore:
    """One row per staged metadata file (``<meta key>@<modification time>``)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS items (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        meta_key TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        sha256 TEXT,
        repository TEXT,
        staged_at TEXT NOT NULL DEFAULT '',
        metadata TEXT,
        metadata_verified INTEGER NOT NULL DEFAULT 0,
        decided_by TEXT,
        reported_state TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS items_key_sha ON items (key, sha256, state);
    """
    _COLUMNS = tuple(Record.__dataclass_fields__)

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(self._SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, item_id: str) -> Record | None:
        row = self.db.execute(
            f"SELECT {', '.join(self._COLUMNS)} FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        return Record(*row) if row else None

    def save(self, record: Record) -> None:
        record.updated_at = datetime.now(UTC).isoformat()
        values = [getattr(record, c) for c in self._COLUMNS]
        marks = ", ".join("?" for _ in self._COLUMNS)
        self.db.execute(
            f"INSERT OR REPLACE INTO items ({', '.join(self._COLUMNS)}) VALUES ({marks})",
            values,
        )

    def ingested_before(self, sha256: str) -> Record | None:
        """The content counts, not the key: a copy elsewhere is the same artifact."""
        row = self.db.execute(
            f"SELECT {', '.join(self._COLUMNS)} FROM items "
            "WHERE sha256 = ? AND state = 'ingested' LIMIT 1",
            (sha256,),
        ).fetchone()
        return Record(*row) if row else None

    def newest_sequence(self, instance: str, repo_target: str, target: str) -> int | None:
        """The highest build sequence ingested for a target (read from the verified
        metadata kept with each record, so no schema change was needed)."""
        row = self.db.execute(
            "SELECT MAX(CAST(json_extract(metadata, '$.layerbot.sequence') AS INTEGER)) "
            "FROM items WHERE state = 'ingested' AND metadata_verified = 1 "
            "AND json_extract(metadata, '$.layerbot.instance') = ? "
            "AND json_extract(metadata, '$.layerbot.repo_target') = ? "
            "AND json_extract(metadata, '$.layerbot.target') = ?",
            (instance, repo_target, target),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def unsettle_duplicates(self, sha256: str) -> int:
        """Make the artifacts refused as duplicates of ``sha256`` new again (a forced run)."""
        return self.db.execute(
            "DELETE FROM items WHERE sha256 = ? AND state = 'duplicate'", (sha256,)
        ).rowcount

    def records(self, where: str = "1 = 1", args: Sequence[object] = ()) -> list[Record]:
        rows = self.db.execute(
            f"SELECT {', '.join(self._COLUMNS)} FROM items WHERE {where} ORDER BY staged_at, id",
            tuple(args),
        ).fetchall()
        return [Record(*r) for r in rows]

    def forget(self, key: str) -> int:
        """Make the artifacts at ``key`` new again (an operator's retry)."""
        return self.db.execute("DELETE FROM items WHERE key = ?", (key,)).rowcount
