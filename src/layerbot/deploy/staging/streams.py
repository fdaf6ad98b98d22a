"""Reading in chunks, and hashing a download while writing it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from layerbot.deploy.staging.errors import StagingError

_CHUNK = 4 * 1024 * 1024


def _sha256_stream(chunks: Iterator[bytes], dest: Path, max_bytes: int | None = None) -> str:
    """Write ``chunks`` to ``dest``; their sha256. More than ``max_bytes`` is refused (the
    download stops there: a staging area cannot fill the disk)."""
    digest = hashlib.sha256()
    done = 0
    with dest.open("wb") as fh:
        for chunk in chunks:
            done += len(chunk)
            if max_bytes is not None and done > max_bytes:
                raise StagingError(f"the object is larger than the {max_bytes:,} bytes expected")
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()
