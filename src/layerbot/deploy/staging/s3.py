"""Staging in an S3 bucket (``S3Staging``), on any S3-compatible server.

Uploads above a threshold go multipart (``multipart``). An object already there with the same
sha256 (kept as object metadata) is not uploaded again. Transient failures (connection errors,
5xx, throttling) are retried with exponential backoff (``retry``); permanent ones become a
``StagingError`` that says what to fix.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions as bce
from botocore.config import Config as BotoConfig
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_exponential,
    wait_random,
)

from layerbot.config import S3Config
from layerbot.deploy.layout import LAYERBOT, Layout
from layerbot.deploy.staging.errors import AccessDenied, ObjectNotFound, StagingError
from layerbot.deploy.staging.keys import check_key
from layerbot.deploy.staging.listing import _pending_from
from layerbot.deploy.staging.multipart import _MultipartUpload
from layerbot.deploy.staging.protocol import (
    SHA256_META,
    PendingArtifact,
    ProgressCallback,
    StagedObject,
    UploadOutcome,
    UploadProgress,
)
from layerbot.deploy.staging.retry import RetryPolicy, _code, _status, _StopWhenSet, is_transient
from layerbot.deploy.staging.streams import _CHUNK, _sha256_stream
from layerbot.deploy.staging.transfer import MIN_PART_SIZE, TransferSettings, _integrity

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


T = TypeVar("T")


_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


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

    def download(self, key: str, dest: Path, max_bytes: int | None = None) -> str:
        def fetch() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return _sha256_stream(iter(lambda: body.read(_CHUNK), b""), dest, max_bytes)

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
