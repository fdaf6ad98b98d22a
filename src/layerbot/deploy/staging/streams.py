"""Reading in chunks, and hashing a download while writing it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 4 * 1024 * 1024


def _sha256_stream(chunks: Iterator[bytes], dest: Path) -> str:
    digest = hashlib.sha256()
    with dest.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()
