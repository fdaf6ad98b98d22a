"""Staging in a directory (``DirStaging``), the embedded default."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from layerbot.deploy.layout import LAYERBOT, Layout
from layerbot.deploy.staging.errors import ObjectNotFound
from layerbot.deploy.staging.keys import check_key
from layerbot.deploy.staging.listing import _pending_from
from layerbot.deploy.staging.protocol import (
    SHA256_META,
    PendingArtifact,
    ProgressCallback,
    StagedObject,
    UploadOutcome,
    UploadProgress,
)
from layerbot.deploy.staging.streams import _CHUNK, _sha256_stream


class DirStaging:
    """Staging in a directory. Object metadata lives in ``<root>/.objects/<key>.json``.

    Writes go to a temporary file in the same directory and are renamed into place, so a
    reader (the ingestion side, maybe on another host over a shared file system) sees a
    file whole or not at all.
    """

    _META_DIR = ".objects"

    def __init__(self, root: Path, *, layout: Layout = LAYERBOT) -> None:
        self.root = root
        self.location = str(root)
        self.layout = layout

    def url_for(self, key: str) -> str:
        return (self.root / check_key(key)).absolute().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / self._META_DIR / (check_key(key) + ".json")

    def object_metadata(self, key: str) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self._meta_path(key).read_text())
            return data
        except (OSError, ValueError):
            return {}

    def upload(
        self,
        artifact: Path,
        key: str,
        sha256: str,
        metadata: Mapping[str, str],
        progress: ProgressCallback | None = None,
    ) -> UploadOutcome:
        dest = self._path(key)
        size = artifact.stat().st_size
        if self._same(dest, key, sha256, size):
            return UploadOutcome("skipped", key, self.url_for(key), 0)
        with self._atomic(dest) as tmp, artifact.open("rb") as src, tmp.open("wb") as out:
            done = 0
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(UploadProgress(key, done, size))
            out.flush()
            os.fsync(out.fileno())
        self._write_meta(key, {**metadata, SHA256_META: sha256, "size": str(size)})
        return UploadOutcome("uploaded", key, self.url_for(key), size)

    def _same(self, dest: Path, key: str, sha256: str, size: int) -> bool:
        meta = self.object_metadata(key)
        return (
            dest.is_file()
            and dest.stat().st_size == size
            and meta.get(SHA256_META) == sha256
            and meta.get("size") == str(size)
        )

    @contextlib.contextmanager
    def _atomic(self, dest: Path) -> Iterator[Path]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_meta(self, key: str, meta: Mapping[str, str]) -> None:
        path = self._meta_path(key)
        with self._atomic(path) as tmp:
            tmp.write_text(json.dumps(dict(meta), sort_keys=True))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self._atomic(self._path(key)) as tmp:
            tmp.write_bytes(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} is not in {self.location}") from None

    def download(self, key: str, dest: Path, max_bytes: int | None = None) -> str:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"{key} is not in {self.location}")

        def chunks() -> Iterator[bytes]:
            with src.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk

        return _sha256_stream(chunks(), dest, max_bytes)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    def list_objects(self, prefix: str = "") -> Iterator[StagedObject]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            # Our own bookkeeping and temporary files are not objects.
            dirnames[:] = sorted(d for d in dirnames if d != self._META_DIR)
            for name in sorted(filenames):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    yield StagedObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list_pending(self, prefix: str = "") -> list[PendingArtifact]:
        return _pending_from({o.key: o for o in self.list_objects(prefix)}, self.layout)
