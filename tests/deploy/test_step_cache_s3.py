"""Cached step artifacts through a real S3 bucket (``agent/step_cache.py`` on S3Staging):
staged once, fetched by another agent, and a download never goes past the size recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbot.agent.step_cache import FetchFailed, StepCache
from layerbot.config import load
from layerbot.deploy.staging import StagingError
from tests.agent.test_step_cache import INSTANCE, SPEC, artifact, tree

from .conftest import S3Server, make_s3_staging


def test_a_cached_step_goes_through_a_bucket_once_and_comes_back_whole(
        s3_server: S3Server, tmp_path: Path) -> None:
    staging = make_s3_staging(s3_server, tmp_path / "state")
    a = load(None, overrides={"instance": {"name": "a", "data_dir": str(tmp_path / "a")}})
    b = load(None, overrides={"instance": {"name": "b", "data_dir": str(tmp_path / "b")}})
    alpha = StepCache(a, enabled=True, staging=lambda _t: staging)
    beta = StepCache(b, enabled=True, staging=lambda _t: staging)
    record = alpha.stage(SPEC, artifact(a.step_artifacts_dir, 10), 10)
    assert record is not None
    assert alpha.stage(SPEC, a.step_artifacts_dir / "10", 10) == record  # not again
    assert beta.stage(SPEC, artifact(b.step_artifacts_dir, 11), 11) is None  # one per key
    assert [o.key for o in staging.list_objects("cache/")] == [record["key"]]
    got = beta.fetch(10, SPEC.repo_target, record, INSTANCE)
    assert tree(got) == tree(a.step_artifacts_dir / "10")

    staging.put_bytes(record["key"], b"x" * (record["size"] + 1), "application/x-tar")
    with pytest.raises(StagingError, match="larger than the"):
        staging.download(record["key"], tmp_path / "big", max_bytes=record["size"])
    with pytest.raises(FetchFailed, match="larger than the"):
        StepCache(b, enabled=True, staging=lambda _t: staging).fetch(
            12, SPEC.repo_target, record, INSTANCE)
