"""Job directories: EESSI-compatible cfg/job.cfg, job.json, exportvariables, archives."""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import re
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbot.build.jobdir import (
    ExportVariablesRefused,
    archive,
    create_job_dir,
    filter_exportvariables,
    job_group_dir,
    read_facts,
    read_job_cfg,
    read_job_json,
    sanitise_ref,
    write_job_files,
    write_metadata,
)
from layerbot.build.workspace import Mirrors, Prepared
from layerbot.core.facts import JobFacts, RepoTargetFacts
from tests.build.test_workspace import Origin, git, worktrees

HEAD = "a" * 40
BASE = "b" * 40
MERGED = "c" * 40


def make_facts(**changes: Any) -> JobFacts:
    facts = JobFacts(
        job_id=42,
        instance="cluster-a",
        repo="EESSI/software-layer",
        pr=123,
        head_sha=HEAD,
        base_ref="main",
        base_sha=None,
        node_type="zen2",
        cpu_target="x86_64/amd/zen2",
        accelerator="nvidia/cc80",
        build_on="x86_64/amd/zen2",
        os="linux",
        repo_target=RepoTargetFacts(
            id="eessi.io-2023.06-software",
            name="software.eessi.io",
            version="2023.06",
            container="docker://ghcr.io/eessi/build-node:debian11",
            facts={"cvmfs_config": "eessi.io.conf"},
        ),
        requested_by="alice",
        command="bot: build for:arch=x86_64/amd/zen2 exportvariable:EESSI_DEBUG=1",
        comment_id=987654,
        exportvariables={"EESSI_DEBUG": "1"},
    )
    return dataclasses.replace(facts, **changes)


def prepared(path: Path) -> Prepared:
    return Prepared(head_sha=HEAD, base_sha=BASE, merged_sha=MERGED, path=path)


SITE = {
    "local_tmp": "/tmp/$USER/EESSI",
    "build_logs_dir": "/project/logs",
    "shared_fs_path": "/project/shared",
    "load_modules": ["EasyBuild/4.9.0", "Lmod"],
    "container_cachedir": None,  # unset: left out, as EESSI does
}


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    path = create_job_dir(tmp_path / "jobs", "EESSI/software-layer", 42, pr=123)
    (path / "bot").mkdir()
    (path / "bot" / "build.sh").write_text("#!/bin/bash\n")
    return path


# ---------------------------------------------------------------------------- layout


def test_layout(tmp_path: Path) -> None:
    assert job_group_dir(tmp_path, "EESSI/software-layer", pr=12) == (
        tmp_path / "EESSI" / "software-layer" / "pr-12"
    )
    assert job_group_dir(tmp_path, "o/n", ref="main") == tmp_path / "o" / "n" / "ref-main"
    run_dir = job_group_dir(tmp_path, "o/n", ref="feature/../x")
    assert run_dir.name.startswith("ref-feature-x-") and ".." not in run_dir.parts
    assert sanitise_ref("refs/heads/main") != sanitise_ref("main")  # distinct refs stay distinct
    assert sanitise_ref("a/b") != sanitise_ref("a-b")
    for bad in ("../x", "x", "o/..", "o/n/extra"):
        with pytest.raises(ValueError):
            job_group_dir(tmp_path, bad, pr=1)
    with pytest.raises(ValueError):
        job_group_dir(tmp_path, "o/n")


def test_job_dirs_are_new_unpredictable_and_not_listable(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    first = create_job_dir(jobs, "o/n", 7, pr=12)
    again = create_job_dir(jobs, "o/n", 7, pr=12)  # a second attempt of the same job
    assert first != again and first.parent == again.parent == job_group_dir(jobs, "o/n", pr=12)
    assert re.fullmatch(r"job-7-[0-9a-f]{16}", first.name)
    assert stat.S_IMODE(first.stat().st_mode) == 0o700 and not any(first.iterdir())
    # Traversable, not listable: a job cannot learn other jobs' directory names.
    for directory in (jobs, jobs / "o", jobs / "o" / "n", first.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o711, directory


def test_job_dirs_are_never_made_through_a_link(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    (jobs / "o").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (jobs / "o" / "n").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotADirectoryError):
        create_job_dir(jobs, "o/n", 1, pr=1)
    assert not any((tmp_path / "elsewhere").iterdir())


# ---------------------------------------------------------------------------- job.cfg / job.json


def test_job_cfg_has_eessis_sections_and_keys(job_dir: Path) -> None:
    written = write_job_files(
        job_dir,
        make_facts(),
        prepared=prepared(job_dir),
        site_config=SITE,
        allowed_exportvars=["EESSI_DEBUG"],
    )
    cfg = configparser.ConfigParser()  # as EESSI reads it: defaults, interpolation and all
    cfg.read(written.cfg_file)

    assert written.cfg_file == job_dir / "cfg" / "job.cfg"
    assert dict(cfg["site_config"]) == {
        "local_tmp": "/tmp/$USER/EESSI",
        "build_logs_dir": "/project/logs",
        "shared_fs_path": "/project/shared",
        "load_modules": "EasyBuild/4.9.0,Lmod",
    }
    assert dict(cfg["repository"]) == {
        "repos_cfg_dir": str(job_dir / "cfg"),
        "repo_id": "eessi.io-2023.06-software",
        "repo_name": "software.eessi.io",
        "repo_version": "2023.06",
        "container": "docker://ghcr.io/eessi/build-node:debian11",
        "cvmfs_config": "eessi.io.conf",
    }
    assert dict(cfg["architecture"]) == {
        "node_type": "zen2",
        "software_subdir": "x86_64/amd/zen2",
        "os_type": "linux",
        "accelerator": "nvidia/cc80",
    }
    assert cfg["layerbot"]["head_sha"] == HEAD
    assert cfg["layerbot"]["base_sha"] == BASE
    assert cfg["layerbot"]["merged_sha"] == MERGED
    assert read_job_cfg(job_dir)["exportvariables"]["EESSI_DEBUG"] == "1"  # case kept


def test_no_accelerator_is_written_empty(job_dir: Path) -> None:
    write_job_files(job_dir, make_facts(accelerator=None, exportvariables={}))
    assert read_job_cfg(job_dir)["architecture"]["accelerator"] == ""


def test_job_json_round_trips_to_job_facts(job_dir: Path) -> None:
    facts = make_facts()
    written = write_job_files(
        job_dir, facts, prepared=prepared(job_dir), allowed_exportvars=["EESSI_DEBUG=1"]
    )
    expected = dataclasses.replace(facts, base_sha=BASE)

    assert read_facts(job_dir) == expected == written.facts
    data = read_job_json(job_dir)
    assert (data["head_sha"], data["base_sha"], data["merged_sha"]) == (HEAD, BASE, MERGED)
    assert data["exportvariables"] == {"EESSI_DEBUG": "1"}
    assert JobFacts.from_json(facts.to_json()) == facts


def test_metadata_and_diff_for_eessi(job_dir: Path) -> None:
    written = write_job_files(
        job_dir, make_facts(exportvariables={}), pr_diff=b"--- a/x\n+++ b/x\n"
    )
    assert written.metadata_file == job_dir / "_bot_job42.metadata"
    meta = configparser.ConfigParser()
    meta.read(written.metadata_file)
    assert dict(meta["PR"]) == {
        "repo": "EESSI/software-layer",
        "pr_number": "123",
        "pr_comment_id": "987654",
    }
    assert (job_dir / "123.diff").read_bytes() == b"--- a/x\n+++ b/x\n"
    # Once submitted, EESSI's tools know the job by the backend's id.
    again = write_metadata(job_dir, make_facts(), "5551212")
    assert again.name == "_bot_job5551212.metadata"


def test_prepared_tree_must_be_for_the_jobs_head(job_dir: Path) -> None:
    other = Prepared(head_sha="d" * 40, base_sha=BASE, merged_sha=MERGED, path=job_dir)
    with pytest.raises(ValueError, match="prepared for"):
        write_job_files(job_dir, make_facts(exportvariables={}), prepared=other)


def test_multi_line_values_are_refused(job_dir: Path) -> None:
    with pytest.raises(ValueError, match="one line"):
        write_job_files(
            job_dir,
            make_facts(exportvariables={}),
            site_config={"local_tmp": "/tmp\n[architecture]"},
        )
    assert not (job_dir / "cfg").exists()  # refused before anything was written


def test_repos_cfg_dir_is_copied_into_cfg(job_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "repos"
    (site / "eessi.io").mkdir(parents=True)
    (site / "repos.cfg").write_text("[eessi.io-2023.06-software]\nrepo_name = x\n")
    (site / "eessi.io" / "eessi.io.conf").write_text("CVMFS_SERVER_URL=x\n")
    write_job_files(job_dir, make_facts(exportvariables={}), repos_cfg_dir=site)
    assert (job_dir / "cfg" / "repos.cfg").read_text().startswith("[eessi.io-2023.06")
    assert (job_dir / "cfg" / "eessi.io" / "eessi.io.conf").is_file()


# ---------------------------------------------------------------------------- PR content


def test_pr_cfg_directory_is_merged_and_bot_files_win(job_dir: Path) -> None:
    (job_dir / "cfg").mkdir()
    (job_dir / "cfg" / "mine.txt").write_text("PR file\n")
    (job_dir / "cfg" / "job.cfg").write_text("[architecture]\nsoftware_subdir = evil\n")
    (job_dir / "cfg" / "export_vars.sh").write_text("export LD_PRELOAD=/evil.so\n")

    written = write_job_files(job_dir, make_facts(exportvariables={}))

    assert (job_dir / "cfg" / "mine.txt").read_text() == "PR file\n"
    assert read_job_cfg(job_dir)["architecture"]["software_subdir"] == "x86_64/amd/zen2"
    assert "LD_PRELOAD" not in (job_dir / "cfg" / "export_vars.sh").read_text()
    assert sorted(written.overwritten) == ["cfg/export_vars.sh", "cfg/job.cfg"]


def test_symlinks_in_pr_content_are_replaced_not_followed(job_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    (job_dir / "cfg").symlink_to(outside)
    (job_dir / "_bot_job42.metadata").symlink_to(outside / "precious")

    written = write_job_files(job_dir, make_facts(exportvariables={}))

    assert (outside / "precious").read_text() == "keep me\n"
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (job_dir / "cfg").is_dir() and not (job_dir / "cfg").is_symlink()
    assert not written.metadata_file.is_symlink()
    assert set(written.overwritten) == {"cfg", "_bot_job42.metadata"}


# ---------------------------------------------------------------------------- exportvariables


def test_filter_exportvariables() -> None:
    requested = {"EESSI_DEBUG": "1", "FOO": "bar", "PICKY": "no", "bad-name": "x", "NL": "a\nb"}
    result = filter_exportvariables(requested, ["EESSI_DEBUG", "PICKY=yes", "bad-name", "NL"])
    assert result.accepted == {"EESSI_DEBUG": "1"}
    assert set(result.refused) == {"FOO", "PICKY", "bad-name", "NL"}
    # EESSI's format: exact VAR=value pairs; a mapping works too.
    assert filter_exportvariables({"PICKY": "yes"}, ["PICKY=yes", "PICKY=maybe"]).accepted
    mapping = {"A": None, "B": "1", "C": ["x", "y"]}
    assert filter_exportvariables({"A": "anything", "B": "1", "C": "y"}, mapping).refused == {}
    assert filter_exportvariables({"B": "2"}, mapping).refused == {"B": "2"}


def test_only_allowlisted_exportvariables_reach_the_job(job_dir: Path) -> None:
    value = "two words 'quoted' $(touch /tmp/pwned)"
    facts = make_facts(exportvariables={"EESSI_DEBUG": "1", "EB_ARGS": value})
    written = write_job_files(job_dir, facts, allowed_exportvars=["EESSI_DEBUG", "EB_ARGS"])
    assert written.env == {"EESSI_DEBUG": "1", "EB_ARGS": value}
    shown = subprocess.run(
        ["bash", "-c", f'source {written.export_vars_file}; printf %s "$EB_ARGS"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == value


def test_refused_exportvariables_fail_closed(job_dir: Path) -> None:
    facts = make_facts(exportvariables={"EESSI_DEBUG": "1", "LD_PRELOAD": "/evil.so"})
    with pytest.raises(ExportVariablesRefused) as caught:
        write_job_files(job_dir, facts, allowed_exportvars=["EESSI_DEBUG"])
    assert caught.value.refused == {"LD_PRELOAD": "/evil.so"}
    assert not (job_dir / "cfg").exists()


# ---------------------------------------------------------------------------- archive


def test_archive_of_a_real_job_dir(tmp_path: Path) -> None:
    origin = Origin(tmp_path / "origin")
    origin.commit({"README": "r\n", "bot/build.sh": "#!/bin/bash\n"})
    head = origin.open_pr(123, {"easystacks/new.yml": "x\n"})
    mirrors = Mirrors(tmp_path / "mirrors")
    dest = create_job_dir(tmp_path / "jobs", "EESSI/software-layer", 42, pr=123)

    async def go() -> Prepared:
        mirror = await mirrors.fetch_pr(origin.path, "main", 123)
        return await mirrors.prepare(mirror, head, "main", dest)

    tree = asyncio.run(go())
    write_job_files(dest, make_facts(head_sha=head, exportvariables={}), prepared=tree)
    (dest / "_bot_job42.result").write_text("[RESULT]\nstatus = SUCCESS\n")
    (dest / "link").symlink_to("/etc/passwd")

    target = archive(dest, tmp_path / "archive")

    assert target == (tmp_path / "archive" / "EESSI" / "software-layer" / "pr-123"
                      / f"{dest.name}.tar.gz")
    assert not dest.exists()
    top = dest.name
    with tarfile.open(target) as tar:
        names = set(tar.getnames())
        link = tar.getmember(f"{top}/link")
    assert f"{top}/.git" not in names
    assert {f"{top}/cfg/job.json", f"{top}/easystacks/new.yml", f"{top}/_bot_job42.result"} <= names
    assert link.issym() and link.linkname == "/etc/passwd"
    mirror = mirrors.mirror(origin.path).path
    asyncio.run(mirrors.prune())
    assert worktrees(mirror) == [str(mirror)]
    assert git(mirror, "rev-parse", "--is-bare-repository") == "true"
