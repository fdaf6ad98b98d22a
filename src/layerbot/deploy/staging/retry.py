"""Retries against S3: which failures are transient, and the backoff policy for them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import botocore.exceptions as bce
from tenacity import RetryCallState
from tenacity.stop import stop_base


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures: ``attempts`` tries within ``deadline_seconds``."""

    attempts: int = 10
    initial_seconds: float = 0.5
    max_seconds: float = 15.0
    deadline_seconds: float = 180.0


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
