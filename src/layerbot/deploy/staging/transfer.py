"""How bytes travel to S3: transfer settings, S3's part limits, and the request
parameters that make the server check what it received.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True)
class TransferSettings:
    multipart_threshold: int = 64 * 1024 * 1024
    part_size: int = 16 * 1024 * 1024
    #: Parts in flight at once (each holds one part in memory).
    concurrency: int = 8
    #: How the server checks what it received: "crc32" (x-amz-checksum-crc32, what boto3
    #: uses by default; cheap) or "md5" (Content-MD5, for servers without the newer
    #: checksum headers).
    checksum: Literal["crc32", "md5"] = "crc32"
    connect_timeout: float = 10.0
    read_timeout: float = 120.0


def _integrity(
    checksum: str, data: bytes | None = None, md5: bytes | None = None
) -> dict[str, str]:
    """Request parameters that make the server check the body it received."""
    if checksum == "crc32":
        return {"ChecksumAlgorithm": "CRC32"}  # botocore computes and sends it
    digest = md5 if md5 is not None else hashlib.md5(data or b"").digest()  # noqa: S324
    return {"ContentMD5": base64.b64encode(digest).decode()}
