"""``S3Staging``: an S3 bucket (any S3-compatible server) as the staging area, with
resumable multipart uploads and retries of what is transient.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.exceptions as bce
from botocore.config import Config as BotoConfig
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from layerbot.config import S3Config
from layerbot.deploy.layout import (
    LAYERBOT,
    Layout,
)
from layerbot.deploy.staging.base import (
    _CHUNK,
    MAX_PARTS,
    MIN_PART_SIZE,
    SHA256_META,
    AccessDenied,
    ObjectNotFound,
    PendingArtifact,
    ProgressCallback,
    StagedObject,
    StagingError,
    T,
    UploadOutcome,
    UploadProgress,
)
from layerbot.deploy.staging.keys import (
    _pending_from,
    _sha256_stream,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# ----------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures: ``attempts`` tries within ``deadline_seconds``."""

    attempts: int = 10
    initial_seconds: float = 0.5
    max_seconds: float = 15.0
    deadline_seconds: float = 180.0


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


_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def _integrity(
    checksum: str, data: bytes | None = None, md5: bytes | None = None
) -> dict[str, str]:
    """Request parameters that make the server check the body it received."""
    if checksum == "crc32":
        return {"ChecksumAlgorithm": "CRC32"}  # botocore computes and sends it
    digest = md5 if md5 is not None else hashlib.md5(data or b"").digest()  # noqa: S324
    return {"ContentMD5": base64.b64encode(digest).decode()}


def _status(exc: bce.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the network or the server failed, not our request."""
    if isinstance(
        exc,
        bce.EndpointConnectionError
        | bce.ConnectionClosedError
        | bce.ReadTimeoutError
        | bce.ConnectTimeoutError
        | bce.ResponseStreamingError
        | bce.IncompleteReadError,
    ):
        return True
    if isinstance(exc, bce.ClientError):
        return _status(exc) >= 500 or _code(exc) in _TRANSIENT_CODES
    return isinstance(exc, ConnectionError | TimeoutError)


class _StopWhenSet(stop_base):
    """Stop retrying once another part failed for good: its upload is given up anyway."""

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event is not None and self.event.is_set()


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


class S3Staging:
    """Staging in one S3 bucket.

    ``settings`` is ``deploy.s3`` (endpoint, region, credentials); ``bucket`` the bucket of
    the repository target (see ``bucket_for``). ``state_dir`` keeps multipart progress.
    """

    def __init__(
        self,
        settings: S3Config,
        bucket: str,
        *,
        state_dir: Path,
        transfer: TransferSettings | None = None,
        retry: RetryPolicy | None = None,
        layout: Layout = LAYERBOT,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.bucket = bucket
        self.state_dir = state_dir
        self.transfer = transfer or TransferSettings()
        self.retry = retry or RetryPolicy()
        self.endpoint = settings.endpoint_url or f"https://s3.{settings.region}.amazonaws.com"
        self.location = f"s3://{bucket} at {self.endpoint}"
        if self.transfer.part_size < MIN_PART_SIZE:
            raise StagingError(f"part size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.client: S3Client = self._make_client()

    def _make_client(self) -> S3Client:
        secret = self.settings.secret_access_key
        config = BotoConfig(
            region_name=self.settings.region,
            # Path-style works with every S3-compatible server, virtual hosts need DNS.
            s3={"addressing_style": "path"},
            connect_timeout=self.transfer.connect_timeout,
            read_timeout=self.transfer.read_timeout,
            # One retry layer only (ours, with a deadline and resume); botocore's would nest.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self.transfer.concurrency + 4,
            # Checksums only where we ask for them (TransferSettings.checksum): some
            # S3-compatible servers lack the newer ones, and then md5 is the way.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=config,
        )
        return client

    # -------------------------------------------------------------- errors and retries

    def _explain(self, exc: BaseException, action: str) -> StagingError:
        """A message an operator can act on, naming the setting to check."""
        where = self.endpoint
        if isinstance(exc, bce.ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _CREDENTIAL_CODES:
                return StagingError(
                    f"the S3 credentials were refused by {where}: check "
                    "deploy.s3.access_key_id and deploy.s3.secret_access_key "
                    f"({code}: {message})"
                )
            if code == "NoSuchBucket":
                return StagingError(
                    f"the bucket '{self.bucket}' does not exist at {where}: create it or "
                    "fix deploy.s3.buckets"
                )
            if code in ("AccessDenied", "403") or status == 403:
                return AccessDenied(
                    f"{where} denied {action} on bucket '{self.bucket}': the credentials "
                    "(deploy.s3.access_key_id) lack permission, or the key is wrong"
                )
            if code in ("NoSuchKey", "404") or status == 404:
                return ObjectNotFound(f"{action}: not found in {self.location}")
            return StagingError(f"{action} failed at {where}: {code or status}: {message}")
        if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
            return StagingError(
                f"cannot reach the S3 endpoint {where} (deploy.s3.endpoint_url) to {action}: {exc}"
            )
        if isinstance(exc, bce.NoCredentialsError):
            return StagingError(
                f"no S3 credentials: set deploy.s3.access_key_id and "
                f"deploy.s3.secret_access_key to reach {where}"
            )
        return StagingError(f"{action} at {where} failed: {exc}")

    def _call(self, action: str, fn: Callable[[], T], cancel: threading.Event | None = None) -> T:
        """``fn()`` with backoff on transient failures, or a clear ``StagingError``."""

        policy = self.retry
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_any(
                stop_after_attempt(policy.attempts),
                stop_after_delay(policy.deadline_seconds),
                _StopWhenSet(cancel),
            ),
            # Exponential with a little jitter, so parallel parts do not retry in lockstep.
            wait=wait_exponential(
                multiplier=policy.initial_seconds,
                min=policy.initial_seconds,
                max=policy.max_seconds,
            )
            + wait_random(0, policy.initial_seconds),
            reraise=True,
        )
        try:
            return retrying(fn)
        except (bce.BotoCoreError, bce.ClientError, ConnectionError, TimeoutError) as exc:
            raise self._explain(exc, action) from exc

    def check(self) -> None:
        """Fail early, with the precise reason, when the bucket cannot be used.

        A HEAD request on a refused key gets a bare 403; a listing gets the error code
        that tells wrong credentials from a missing bucket.
        """
        self._call(
            f"list bucket '{self.bucket}'",
            lambda: self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (for tests and first setup; the bot never does)."""
        try:
            self._call("head bucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except ObjectNotFound:
            self._call("create bucket", lambda: self.client.create_bucket(Bucket=self.bucket))

    # -------------------------------------------------------------- small objects

    def url_for(self, key: str) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.bucket}/{check_key(key)}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self._call(
            f"upload {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=check_key(key),
                Body=data,
                ContentType=content_type,
                **_integrity(self.transfer.checksum, data),  # type: ignore[arg-type]
            ),
        )

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body

        return self._call(f"read {key}", get)

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD response, None when it does not exist."""
        try:
            head = self._call(
                f"check {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
            return dict(head)
        except ObjectNotFound:
            return None

    def download(self, key: str, dest: Path) -> str:
        def fetch() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return _sha256_stream(iter(lambda: body.read(_CHUNK), b""), dest)

        return self._call(f"download {key}", fetch)

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def list_objects(self, prefix: str = "") -> Iterator[StagedObject]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(
                f"list {prefix or '/'}", functools.partial(self.client.list_objects_v2, **kwargs)
            )
            for obj in page.get("Contents", []):
                yield StagedObject(obj["Key"], obj["Size"], obj["LastModified"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list_pending(self, prefix: str = "") -> list[PendingArtifact]:
        return _pending_from({o.key: o for o in self.list_objects(prefix)}, self.layout)

    # -------------------------------------------------------------- upload

    def upload(
        self,
        artifact: Path,
        key: str,
        sha256: str,
        metadata: Mapping[str, str],
        progress: ProgressCallback | None = None,
    ) -> UploadOutcome:
        check_key(key)
        size = artifact.stat().st_size
        user_meta = _object_metadata(metadata, sha256)
        if self._already_there(key, sha256, size):
            self.state_file(key).unlink(missing_ok=True)
            return UploadOutcome("skipped", key, self.url_for(key), 0)
        if size < self.transfer.multipart_threshold:
            sent = self._put_single(artifact, key, size, user_meta, progress)
        else:
            sent = _MultipartUpload(self, artifact, key, sha256, size, user_meta, progress).run()
        self._verify_stored(key, sha256, size)
        return UploadOutcome("uploaded", key, self.url_for(key), sent)

    def _already_there(self, key: str, sha256: str, size: int) -> bool:
        try:
            head = self.head(key)
        except AccessDenied:
            # A HEAD gets a bare 403: a listing tells wrong keys from missing permission.
            self.check()
            raise
        if head is None:
            self.check()  # a missing bucket also answers 404 to HEAD
            return False
        stored = head.get("Metadata", {}).get(SHA256_META)
        return stored == sha256 and head.get("ContentLength") == size

    def _verify_stored(self, key: str, sha256: str, size: int) -> None:
        head = self.head(key)
        if head is None or head.get("ContentLength") != size:
            got = None if head is None else head.get("ContentLength")
            raise StagingError(f"{key}: the server has {got} bytes after upload, expected {size}")
        if head.get("Metadata", {}).get(SHA256_META) != sha256:
            raise StagingError(f"{key}: the server did not keep the sha256 object metadata")

    def _put_single(
        self,
        artifact: Path,
        key: str,
        size: int,
        user_meta: dict[str, str],
        progress: ProgressCallback | None,
    ) -> int:
        checksum = self.transfer.checksum
        md5 = None
        if checksum == "md5":
            digest = hashlib.md5()  # noqa: S324 (integrity check by the server, not security)
            with artifact.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
            md5 = digest.digest()

        def put() -> None:
            with artifact.open("rb") as fh:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=fh,
                    ContentLength=size,
                    Metadata=user_meta,
                    **_integrity(checksum, md5=md5),  # type: ignore[arg-type]
                )

        self._call(f"upload {key}", put)
        if progress:
            progress(UploadProgress(key, size, size))
        return size

    def state_file(self, key: str) -> Path:
        """Where the progress of a multipart upload to ``key`` is kept."""
        digest = hashlib.sha256(f"{self.endpoint}\0{self.bucket}\0{key}".encode()).hexdigest()
        return self.state_dir / f"upload-{digest[:24]}.json"


def _object_metadata(metadata: Mapping[str, str], sha256: str) -> dict[str, str]:
    """S3 user metadata travels in HTTP headers: lower-case keys, ASCII values."""
    out: dict[str, str] = {}
    for name, value in metadata.items():
        key = name.lower()
        if not re.fullmatch(r"[a-z0-9\-_]+", key) or not str(value).isascii():
            raise StagingError(f"object metadata {name!r}={value!r}: keys [a-z0-9-_], ASCII values")
        out[key] = str(value)
    out[SHA256_META] = sha256
    return out


class _MultipartUpload:
    """One multipart upload, resumable through its state file."""

    def __init__(
        self,
        staging: S3Staging,
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


