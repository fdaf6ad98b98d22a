"""Cached step artifacts shared through the staging area (``agent/step_cache.py``): staged
once, fetched into another agent's store only when it is what was staged, and unpacked as
hostile input."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbot.agent import step_cache
from layerbot.agent.step_cache import CacheSpec, FetchFailed, StepCache, cache_spec
from layerbot.config import Config, load
from layerbot.core.pipeline import UNFETCHED
from layerbot.deploy.metadata import file_sha256
from layerbot.deploy.signing import allowed_signers_line, generate_keypair
from layerbot.deploy.staging import DirStaging

INSTANCE = "fleet"
SPEC = CacheSpec(repo="org/layer", repo_target="eessi-2023.06", target="x86_64/amd/zen2",
                 node_type="zen2", cache_key="GCC-13.2.0", instance=INSTANCE)


def config(tmp: Path, name: str, *, staging: Path, deploy: bool = True,
           **pipelines: Any) -> Config:
    overrides: dict[str, Any] = {
        "instance": {"name": name, "data_dir": str(tmp / name)},
        "pipelines": {"artifacts_dir": str(tmp / name / "store"), **pipelines}}
    if deploy:
        overrides["deploy"] = {"staging": "dir", "staging_dir": str(staging),
                               **({"signing_key_file": pipelines.pop("key")}
                                  if "key" in pipelines else {})}
        overrides["pipelines"].pop("key", None)
    return load(None, overrides=overrides)


def artifact(store: Path, job_id: int) -> Path:
    root = store / str(job_id)
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libgcc.so").write_bytes(b"\x7fELF" + b"x" * 1000)
    (root / "bin").mkdir()
    (root / "bin" / "gcc").write_text("#!/bin/sh\necho gcc\n")
    (root / "bin" / "gcc").chmod(0o755)
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = Path(dirpath, f).read_bytes()
    return out


@pytest.fixture
def agents(tmp_path: Path) -> tuple[Config, Config, Path]:
    staging = tmp_path / "staging"
    return (config(tmp_path, "a", staging=staging), config(tmp_path, "b", staging=staging),
            staging)


def staged(a: Config, job_id: int = 10) -> dict[str, Any]:
    record = StepCache.of(a).stage(SPEC, artifact(a.step_artifacts_dir, job_id), job_id)
    assert record is not None
    return record


def test_a_cached_step_staged_by_one_agent_is_fetched_into_anothers_store(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, _ = agents
    record = staged(a)
    assert record["key"].startswith("cache/org/layer/eessi-2023.06/x86_64/amd/zen2/")
    assert record["key"].endswith("/10.tar") and record["signed"] is False
    path = StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    assert path == b.step_artifacts_dir / "10"
    assert tree(path) == tree(a.step_artifacts_dir / "10")
    assert os.stat(path / "bin" / "gcc").st_mode & 0o111
    # Already in the store: not fetched again (the staging area is not even asked).
    assert StepCache(b, enabled=True, staging=lambda _t: pytest.fail("asked")).fetch(
        10, "eessi-2023.06", record, INSTANCE) == path


def test_staging_again_uploads_nothing_and_another_job_of_the_key_is_not_staged(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, staging = agents
    first = staged(a)
    mtime = (staging / first["key"]).stat().st_mtime_ns
    # The same job again (a reconciler reading it twice): the same bytes, not uploaded.
    assert StepCache.of(a).stage(SPEC, a.step_artifacts_dir / "10", 10) == first
    assert (staging / first["key"]).stat().st_mtime_ns == mtime
    # Another job of the same key (built meanwhile on agent b): the one staged stands.
    assert StepCache.of(b).stage(SPEC, artifact(b.step_artifacts_dir, 11), 11) is None
    assert [o.key for o in DirStaging(staging).list_objects("cache/")] == [first["key"]]


def test_an_agent_without_a_deploy_section_stages_nothing_and_cannot_fetch(
        tmp_path: Path, agents: tuple[Config, Config, Path]) -> None:
    a, _, staging = agents
    record = staged(a)
    bare = config(tmp_path, "c", staging=staging, deploy=False)
    assert StepCache.of(bare).stage(SPEC, artifact(bare.step_artifacts_dir, 12), 12) is None
    with pytest.raises(FetchFailed, match="agent c has no \\[deploy\\] section"):
        StepCache.of(bare).fetch(10, "eessi-2023.06", record, INSTANCE)


def test_the_cache_spec_comes_from_the_control_planes_facts() -> None:
    facts = {"role": "step", "repo": "org/layer", "instance": INSTANCE, "node_type": "zen2",
             "cpu_target": "x86_64/amd/zen2", "accelerator": "nvidia/cc80",
             "repo_target": {"id": "eessi-2023.06"}, "step": {"cache_key": "GCC-13.2.0"}}
    spec = cache_spec(facts)
    assert spec is not None and spec.target == "x86_64/amd/zen2/accel/nvidia/cc80"
    assert cache_spec({**facts, "step": {"cache_key": None}}) is None
    assert cache_spec({**facts, "role": "build"}) is None


# --- hostile staging areas ------------------------------------------------------------------

def test_a_tampered_artifact_is_refused_and_nothing_is_kept(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, staging = agents
    record = staged(a)
    obj = staging / record["key"]
    data = bytearray(obj.read_bytes())
    data[600] ^= 0xFF  # same size, other content
    obj.write_bytes(bytes(data))
    with pytest.raises(FetchFailed, match=f"^{UNFETCHED}10: .*not what its agent staged"):
        StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    assert not (b.step_artifacts_dir / "10").exists()


def test_an_artifact_larger_than_recorded_is_not_downloaded_past_its_size(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, staging = agents
    record = staged(a)
    obj = staging / record["key"]
    obj.write_bytes(obj.read_bytes() + b"\0" * 10 * 1024 * 1024)
    with pytest.raises(FetchFailed, match="larger than the"):
        StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    assert not (b.step_artifacts_dir / "10").exists()
    assert list(StepCache.of(b).work_dir.iterdir()) == []  # the download was removed


def test_a_record_of_an_oversized_artifact_is_refused_before_downloading(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, _ = agents
    record = {**staged(a), "size": step_cache.MAX_TAR_BYTES + 1}
    with pytest.raises(FetchFailed, match="more than a step's artifact may be"):
        StepCache(b, enabled=True, staging=lambda _t: pytest.fail("asked")).fetch(
            10, "eessi-2023.06", record, INSTANCE)


def test_a_record_that_is_not_a_cache_key_is_refused(
        agents: tuple[Config, Config, Path]) -> None:
    a, b, _ = agents
    record = staged(a)
    for bad in ({**record, "key": "org/layer/pr-1/x86_64/hello.tar"},
                {**record, "key": "cache/../../etc/passwd.tar"},
                {**record, "sha256": "abc"}, {**record, "size": True}, "cache/x.tar"):
        with pytest.raises(FetchFailed, match="record of it is not usable"):
            StepCache.of(b).fetch(10, "eessi-2023.06", bad, INSTANCE)  # type: ignore[arg-type]


def hostile_tar(staging: Path, key: str, build: Any) -> dict[str, Any]:
    """A tar made by ``build(tar)`` staged at ``key`` as if its agent had staged it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        build(tar)
    path = staging / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return {"key": key, "sha256": file_sha256(path), "size": path.stat().st_size,
            "signed": False}


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    tar.addfile(info)


HOSTILE = {
    "symlink": (lambda t: (add_file(t, "ok"), add_special(t, "lib", tarfile.SYMTYPE, "/etc")),
                "is a symlink"),
    "relative symlink": (lambda t: add_special(t, "up", tarfile.SYMTYPE, "../../.."),
                         "is a symlink"),
    "hard link": (lambda t: (add_file(t, "a"), add_special(t, "b", tarfile.LNKTYPE, "a")),
                  "is a hard link"),
    "hard link out": (lambda t: add_special(t, "shadow", tarfile.LNKTYPE, "/etc/shadow"),
                      "is a hard link"),
    "device": (lambda t: add_special(t, "null", tarfile.CHRTYPE), "is a device"),
    "fifo": (lambda t: add_special(t, "pipe", tarfile.FIFOTYPE), "is a FIFO"),
    "absolute": (lambda t: add_file(t, "/tmp/layerbot-step-cache-escape"), "leaves the artifact"),
    "dot-dot": (lambda t: add_file(t, "lib/../../escape"), "leaves the artifact"),
    "twice": (lambda t: (add_file(t, "a", b"1"), add_file(t, "a", b"2")), "is in it twice"),
    "not a tar": (lambda t: None, "not a readable tar"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_tar_is_refused_and_nothing_is_kept(
        case: str, agents: tuple[Config, Config, Path]) -> None:
    _, b, staging = agents
    build, message = HOSTILE[case]
    key = "cache/org/layer/eessi-2023.06/x86_64/amd/zen2/abc/10.tar"
    record = hostile_tar(staging, key, build)
    if case == "not a tar":
        (staging / key).write_bytes(b"this is not a tar" * 100)
        record = {**record, "sha256": file_sha256(staging / key),
                  "size": (staging / key).stat().st_size}
    with pytest.raises(FetchFailed, match=message):
        StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    assert not (b.step_artifacts_dir / "10").exists()
    assert not Path("/tmp/layerbot-step-cache-escape").exists()
    assert not (b.step_artifacts_dir.parent / "escape").exists()
    assert [p.name for p in b.step_artifacts_dir.iterdir()] == []  # no partial left


def test_a_tar_holding_more_than_a_steps_output_may_is_refused(
        agents: tuple[Config, Config, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, b, staging = agents
    monkeypatch.setattr(step_cache, "MAX_BYTES", 1000)
    record = hostile_tar(staging, "cache/o/r/t/abc/10.tar",
                         lambda t: [add_file(t, f"f{i}", b"x" * 400) for i in range(3)])
    with pytest.raises(FetchFailed, match="more than 1,000 bytes"):
        StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    monkeypatch.setattr(step_cache, "MAX_MEMBERS", 2)
    with pytest.raises(FetchFailed, match="more than 2 members"):
        StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE)
    assert not (b.step_artifacts_dir / "10").exists()


# --- signatures -----------------------------------------------------------------------------

def test_with_allowed_signers_only_a_good_signature_is_accepted(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    good = generate_keypair(tmp_path / "keys" / "a", comment="agent-a")
    other = generate_keypair(tmp_path / "keys" / "x", comment="stranger")
    signers = tmp_path / "allowed_signers"
    signers.write_text(allowed_signers_line("agent-a", good.public_key(), [INSTANCE]))
    a = config(tmp_path, "a", staging=staging, key=str(good.private))
    b = config(tmp_path, "b", staging=staging, allowed_signers_file=str(signers))
    unsigned = config(tmp_path, "u", staging=staging)
    stranger = config(tmp_path, "s", staging=staging, key=str(other.private))

    record = staged(a, 10)
    assert record["signed"] is True
    assert StepCache.of(b).fetch(10, "eessi-2023.06", record, INSTANCE).is_dir()
    # Another namespace (an artifact of another instance) does not verify.
    with pytest.raises(FetchFailed, match="signature does not verify"):
        StepCache.of(config(tmp_path, "b2", staging=staging, allowed_signers_file=str(
            signers))).fetch(10, "eessi-2023.06", record, "other-instance")

    spec2 = SPEC.__class__(**{**SPEC.__dict__, "cache_key": "other"})
    rec_u = StepCache.of(unsigned).stage(spec2, artifact(unsigned.step_artifacts_dir, 20), 20)
    assert rec_u is not None
    with pytest.raises(FetchFailed, match="is not signed"):
        StepCache.of(b).fetch(20, "eessi-2023.06", rec_u, INSTANCE)

    spec3 = SPEC.__class__(**{**SPEC.__dict__, "cache_key": "third"})
    rec_s = StepCache.of(stranger).stage(spec3, artifact(stranger.step_artifacts_dir, 30), 30)
    assert rec_s is not None
    with pytest.raises(FetchFailed, match="not in allowed signers"):
        StepCache.of(b).fetch(30, "eessi-2023.06", rec_s, INSTANCE)
    assert sorted(p.name for p in b.step_artifacts_dir.iterdir()) == ["10"]
