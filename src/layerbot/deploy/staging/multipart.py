"""Multipart uploads to S3, resumable.

The upload id and the ETags of finished parts are kept in a small JSON file in a caller-given
state directory, so an upload cut by a crash, a restart or a dead server resumes
(``list_parts``) instead of starting over. Several parts are sent at a time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from layerbot.deploy.staging.errors import ObjectNotFound, StagingError
from layerbot.deploy.staging.protocol import ProgressCallback, UploadProgress
from layerbot.deploy.staging.transfer import MAX_PARTS, TransferSettings, _integrity

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")


class _Bucket(Protocol):
    """What a multipart upload needs of its :class:`~layerbot.deploy.staging.s3.S3Staging`
    (a protocol, not an import: ``s3`` imports this module)."""

    bucket: str
    transfer: TransferSettings
    client: S3Client

    def _call(
        self, action: str, fn: Callable[[], T], cancel: threading.Event | None = None
    ) -> T: ...

    def state_file(self, key: str) -> Path: ...


@dataclass
class _MultipartState:
    """What is persisted between attempts of one multipart upload."""

    bucket: str
    key: str
    sha256: str
    size: int
    part_size: int
    upload_id: str
    #: The transfer's checksum mode: parts sent one way cannot complete an upload of the other.
    checksum: str = "md5"
    #: part number -> ETag, for parts the server acknowledged.
    parts: dict[int, str] = field(default_factory=dict)
    #: part number -> CRC32 (base64), needed again to complete a CRC32 upload.
    checksums: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            **self.__dict__,
            "parts": {str(n): e for n, e in sorted(self.parts.items())},
            "checksums": {str(n): c for n, c in sorted(self.checksums.items())},
        }
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> _MultipartState:
        raw = json.loads(text)
        raw["parts"] = {int(n): str(e) for n, e in raw.get("parts", {}).items()}
        raw["checksums"] = {int(n): str(c) for n, c in raw.get("checksums", {}).items()}
        return cls(**raw)


class _MultipartUpload:
    """One multipart upload, resumable through its state file."""

    def __init__(
        self,
        staging: _Bucket,
        artifact: Path,
        key: str,
        sha256: str,
        size: int,
        user_meta: dict[str, str],
        progress: ProgressCallback | None,
    ) -> None:
        self.s = staging
        self.artifact = artifact
        self.key = key
        self.sha256 = sha256
        self.size = size
        self.user_meta = user_meta
        self.progress = progress
        self.part_size = self._part_size()
        self.count = -(-size // self.part_size)
        self.path = staging.state_file(key)
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.sent = 0

    def _part_size(self) -> int:
        # Grow the part size when the file would need more than S3's 10,000 parts.
        wanted = self.s.transfer.part_size
        return max(wanted, -(-self.size // MAX_PARTS))

    def _length(self, number: int) -> int:
        return min(self.part_size, self.size - (number - 1) * self.part_size)

    def run(self) -> int:
        state = self._resume() or self._start()
        todo = [n for n in range(1, self.count + 1) if n not in state.parts]
        self._report(state, None)
        if todo:
            self._send_parts(state, todo)
        self._complete(state)
        self.path.unlink(missing_ok=True)
        return self.sent

    # -- state

    def _save(self, state: _MultipartState) -> None:
        """Atomically, so a crash leaves the old or the new state, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.path)

    def _load(self) -> _MultipartState | None:
        try:
            return _MultipartState.from_json(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            self.path.unlink(missing_ok=True)  # unreadable: start over, nothing is lost
            return None

    def _resume(self) -> _MultipartState | None:
        state = self._load()
        if state is None:
            return None
        same = (
            state.bucket == self.s.bucket
            and state.key == self.key
            and state.sha256 == self.sha256
            and state.size == self.size
            and state.part_size == self.part_size
            and state.checksum == self.s.transfer.checksum
        )
        if not same:
            self._abort(state)  # another file was being uploaded to this key: drop it
            return None
        server_parts = self._list_parts(state.upload_id)
        if server_parts is None:
            return None  # the server forgot the upload (expired or aborted)
        # Trust a part only when the server has it with the ETag and size we recorded.
        state.parts = {
            n: etag
            for n, etag in state.parts.items()
            if n in server_parts and server_parts[n] == (etag, self._length(n))
        }
        state.checksums = {n: c for n, c in state.checksums.items() if n in state.parts}
        self._save(state)
        return state

    def _list_parts(self, upload_id: str) -> dict[int, tuple[str, int]] | None:
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                page = self.s._call(
                    f"list parts of {self.key}",
                    functools.partial(
                        self.s.client.list_parts,
                        Bucket=self.s.bucket,
                        Key=self.key,
                        UploadId=upload_id,
                        PartNumberMarker=marker,
                    ),
                )
            except ObjectNotFound:
                return None
            except StagingError as exc:
                if "NoSuchUpload" in str(exc):
                    return None
                raise
            for p in page.get("Parts", []):
                parts[p["PartNumber"]] = (p["ETag"], p["Size"])
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    def _start(self) -> _MultipartState:
        response = self.s._call(
            f"start upload of {self.key}",
            lambda: self.s.client.create_multipart_upload(
                Bucket=self.s.bucket,
                Key=self.key,
                Metadata=self.user_meta,
                ContentType="application/octet-stream",
                **self._create_checksum(),  # type: ignore[arg-type]
            ),
        )
        state = _MultipartState(
            bucket=self.s.bucket,
            key=self.key,
            sha256=self.sha256,
            size=self.size,
            part_size=self.part_size,
            upload_id=response["UploadId"],
            checksum=self.s.transfer.checksum,
        )
        self._save(state)
        return state

    def _create_checksum(self) -> dict[str, str]:
        # AWS wants the algorithm announced up front when parts carry checksums.
        return {"ChecksumAlgorithm": "CRC32"} if self.s.transfer.checksum == "crc32" else {}

    def _abort(self, state: _MultipartState) -> None:
        with contextlib.suppress(StagingError):
            self.s._call(
                "abort old upload",
                lambda: self.s.client.abort_multipart_upload(
                    Bucket=state.bucket, Key=state.key, UploadId=state.upload_id
                ),
            )
        self.path.unlink(missing_ok=True)

    # -- parts

    def _send_parts(self, state: _MultipartState, todo: list[int]) -> None:
        workers = max(1, min(self.s.transfer.concurrency, len(todo)))
        with ThreadPoolExecutor(workers, thread_name_prefix="s3-part") as pool:
            futures: list[Future[None]] = [pool.submit(self._send_part, state, n) for n in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                # Stop the others: what finished is in the state file for the next try.
                self.cancel.set()
                for f in futures:
                    f.cancel()
                wait(futures)
                exc = failed[0].exception()
                assert exc is not None
                raise exc

    def _send_part(self, state: _MultipartState, number: int) -> None:
        if self.cancel.is_set():
            return
        length = self._length(number)
        with self.artifact.open("rb") as fh:
            data = os.pread(fh.fileno(), length, (number - 1) * self.part_size)
        response = self.s._call(
            f"upload part {number}/{self.count} of {self.key}",
            lambda: self.s.client.upload_part(
                Bucket=self.s.bucket,
                Key=self.key,
                UploadId=state.upload_id,
                PartNumber=number,
                Body=data,
                **_integrity(self.s.transfer.checksum, data),  # type: ignore[arg-type]
            ),
            self.cancel,
        )
        with self.lock:
            state.parts[number] = response["ETag"]
            if crc := response.get("ChecksumCRC32"):
                state.checksums[number] = crc
            self.sent += length
            self._save(state)
            self._report(state, number)

    def _report(self, state: _MultipartState, number: int | None) -> None:
        if self.progress is None:
            return
        done = sum(self._length(n) for n in state.parts)
        self.progress(UploadProgress(self.key, done, self.size, number))

    def _complete(self, state: _MultipartState) -> None:
        parts: list[dict[str, Any]] = []
        for n in sorted(state.parts):
            part: dict[str, Any] = {"PartNumber": n, "ETag": state.parts[n]}
            if n in state.checksums:
                part["ChecksumCRC32"] = state.checksums[n]
            parts.append(part)
        if len(parts) != self.count:
            raise StagingError(f"{self.key}: {len(parts)} of {self.count} parts uploaded")
        # NoSuchUpload after a retry: the first attempt completed it but its answer was lost.
        # The caller checks the stored object (size, sha256), which tells if that is so.
        with contextlib.suppress(ObjectNotFound):
            self.s._call(
                f"complete upload of {self.key}",
                lambda: self.s.client.complete_multipart_upload(
                    Bucket=self.s.bucket,
                    Key=self.key,
                    UploadId=state.upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
