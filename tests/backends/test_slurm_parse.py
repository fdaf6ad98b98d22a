"""The Slurm backend's pure parsing and mapping, on output captured from Slurm 22.05.8.

Every SQUEUE/SACCT/SINFO text below was printed by the cluster of scripts/slurm.sh
(squeue entries trimmed to the keys the backend reads); the comment above each says how
the job was made.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from layerbot.backends import slurm_parse as sp
from layerbot.backends.base import BackendState, JobStatus

# squeue --json, one job per line (keys trimmed):
#  44 `true`; 46 --mem=100M, allocates 400 MB; 51 scancel while running; 59 node set DOWN;
#  60 --time=1, sleep 300; 64 --hold then scancel; 73 `exit 3`; 74 like 46, our tags;
#  75 running; 76 held; 77 scancel while running.
SQUEUE_JOBS = """
{"job_id": 44, "cluster": "layerbot", "name": "wrap", "comment": "", "job_state": "COMPLETED", "state_reason": "None", "exit_code": 0, "derived_exit_code": 0, "submit_time": 1795791439, "start_time": 1795791439, "end_time": 1795791443, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 46, "cluster": "layerbot", "name": "wrap", "comment": "", "job_state": "FAILED", "state_reason": "JobLaunchFailure", "exit_code": 9, "derived_exit_code": 0, "submit_time": 1795791439, "start_time": 1795791440, "end_time": 1795791442, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=100M,node=1,billing=1", "partition": "debug"}
{"job_id": 51, "cluster": "layerbot", "name": "wrap", "comment": "", "job_state": "CANCELLED", "state_reason": "None", "exit_code": 15, "derived_exit_code": 0, "submit_time": 1795791448, "start_time": 1795791552, "end_time": 1795791639, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 59, "cluster": "layerbot", "name": "wrap", "comment": "", "job_state": "NODE_FAIL", "state_reason": "NodeDown", "exit_code": 0, "derived_exit_code": 0, "submit_time": 1795791674, "start_time": 1795791674, "end_time": 1795791676, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 60, "cluster": "layerbot", "name": "wrap", "comment": "", "job_state": "TIMEOUT", "state_reason": "TimeLimit", "exit_code": 15, "derived_exit_code": 0, "submit_time": 1795791678, "start_time": 1795791680, "end_time": 1795791740, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 1, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 64, "cluster": "layerbot", "name": "lbtest-x", "comment": "layerbot:test:1", "job_state": "CANCELLED", "state_reason": "None", "exit_code": 0, "derived_exit_code": 0, "submit_time": 1795792166, "start_time": 1795792169, "end_time": 1795792169, "cpus": null, "nodes": "", "batch_host": "", "time_limit": 60, "standard_output": "/tmp/sx/o.log", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 73, "cluster": "layerbot", "name": "layerbot-cap-1", "comment": "layerbot:cap:1", "job_state": "FAILED", "state_reason": "NonZeroExitCode", "exit_code": 768, "derived_exit_code": 0, "submit_time": 1795792623, "start_time": 1795792623, "end_time": 1795792623, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 74, "cluster": "layerbot", "name": "layerbot-cap-2", "comment": "layerbot:cap:2", "job_state": "FAILED", "state_reason": "JobLaunchFailure", "exit_code": 9, "derived_exit_code": 0, "submit_time": 1795792623, "start_time": 1795792623, "end_time": 1795792625, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/tmp/sx/oom.log", "tres_req_str": "cpu=1,mem=100M,node=1,billing=1", "partition": "debug"}
{"job_id": 75, "cluster": "layerbot", "name": "layerbot-cap-3", "comment": "layerbot:cap:3", "job_state": "RUNNING", "state_reason": "None", "exit_code": 0, "derived_exit_code": 0, "submit_time": 1795792623, "start_time": 1795792626, "end_time": 1795796226, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 76, "cluster": "layerbot", "name": "layerbot-cap-4", "comment": "layerbot:cap:4", "job_state": "PENDING", "state_reason": "JobHeldUser", "exit_code": 0, "derived_exit_code": 0, "submit_time": 1795792623, "start_time": 0, "end_time": 0, "cpus": 1, "nodes": "", "batch_host": "", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
{"job_id": 77, "cluster": "layerbot", "name": "layerbot-cap-5", "comment": "layerbot:cap:5", "job_state": "CANCELLED", "state_reason": "None", "exit_code": 15, "derived_exit_code": 0, "submit_time": 1795792623, "start_time": 1795792626, "end_time": 1795792631, "cpus": 1, "nodes": "vm", "batch_host": "vm", "time_limit": 60, "standard_output": "/dev/null", "tres_req_str": "cpu=1,mem=2G,node=1,billing=1", "partition": "debug"}
"""  # noqa: E501

META = ('"meta": {"plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"}, '
        '"Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"}}')

SQUEUE = ("{" + META + ', "errors": [], "jobs": ['
          + ",".join(line for line in SQUEUE_JOBS.strip().splitlines()) + "]}")

# `squeue --json` with slurmctld SIGKILLed: exit code 0 (!), no jobs, one error.
SQUEUE_CTLD_DOWN = "{" + META + """, "errors": [{"description": "Failed while looking for jobs",
 "error_number": -1, "error": "Unspecified error", "source": "slurm_load_jobs"}], "jobs": []}"""

# SLURM_TIME_FORMAT=%s sacct -P -n -D -o <sp.SACCT_FIELDS> -j 29,44,46,51,59,60,64,73,...
# Job 29 twice: the first one was lost by slurmctld (SIGKILLed 1 s after the submit) and
# its id went to the next submission.
SACCT = """\
29|layerbot|allocation|PENDING|0:0|1392|0|16?||vm|None|1795791247|1795791247|Unknown||
29.batch|layerbot|batch|RUNNING|0:0|1392|1|||vm||1795791247|1795791247|Unknown||
29|layerbot|wrap|COMPLETED|0:0|0|1|1G||vm|None|1795791264|1795791265|1795791265|01:00:00|
29.batch|layerbot|batch|COMPLETED|0:0|0|1|||vm||1795791265|1795791265|1795791265||
44|layerbot|wrap|COMPLETED|0:0|4|1|2G||vm|None|1795791439|1795791439|1795791443|01:00:00|
44.batch|layerbot|batch|COMPLETED|0:0|4|1||168388K|vm||1795791439|1795791439|1795791443||
46|layerbot|wrap|FAILED|0:9|2|1|100M||vm|None|1795791439|1795791440|1795791442|01:00:00|
46.batch|layerbot|batch|CANCELLED by 0|0:9|2|1||424536K|vm||1795791440|1795791440|1795791442||
51|layerbot|wrap|CANCELLED|0:15|87|1|2G||vm|None|1795791448|1795791552|1795791639|01:00:00|
51.batch|layerbot|batch|CANCELLED|0:15|87|1||3088K|vm||1795791552|1795791552|1795791639||
59|layerbot|wrap|NODE_FAIL|0:0|2|1|2G||vm|None|1795791674|1795791674|1795791676|01:00:00|
59.batch|layerbot|batch|CANCELLED||2|1|||vm||1795791674|1795791674|1795791676||
60|layerbot|wrap|TIMEOUT|0:15|60|1|2G||vm|None|1795791678|1795791680|1795791740|00:01:00|
60.batch|layerbot|batch|CANCELLED|0:15|60|1||3092K|vm||1795791680|1795791680|1795791740||
64|layerbot|lbtest-x|CANCELLED by 0|0:0|0|1|2G||None assigned|JobHeldUser|1795792166|1795792169|1795792169|Partition_Limit|layerbot:test:1
73|layerbot|layerbot-cap-1|FAILED|3:0|0|1|2G||vm|None|1795792623|1795792623|1795792623|01:00:00|layerbot:cap:1
73.batch|layerbot|batch|FAILED|3:0|0|1|||vm||1795792623|1795792623|1795792623||
74|layerbot|layerbot-cap-2|FAILED|0:9|2|1|100M||vm|None|1795792623|1795792623|1795792625|01:00:00|layerbot:cap:2
74.batch|layerbot|batch|CANCELLED by 0|0:9|2|1||424580K|vm||1795792623|1795792623|1795792625||
75|layerbot|layerbot-cap-3|RUNNING|0:0|13|1|2G||vm|None|1795792623|1795792626|Unknown|01:00:00|
75.batch|layerbot|batch|RUNNING|0:0|13|1|||vm||1795792626|1795792626|Unknown||
76|layerbot|layerbot-cap-4|PENDING|0:0|0|1|2G||None assigned|JobHeldUser|1795792623|Unknown|Unknown|Partition_Limit|
77|layerbot|layerbot-cap-5|CANCELLED by 0|0:0|5|1|2G||vm|None|1795792623|1795792626|1795792631|01:00:00|layerbot:cap:5
77.batch|layerbot|batch|CANCELLED|0:15|5|1||3248K|vm||1795792626|1795792626|1795792631||
"""  # noqa: E501

# sinfo -o "%P|%a|%l|%F|%C|%f" while one job ran; then with -M layerbot.
SINFO = """\
PARTITION|AVAIL|TIMELIMIT|NODES(A/I/O/T)|CPUS(A/I/O/T)|AVAIL_FEATURES
debug*|up|1:00:00|1/0/0/1|1/1/0/2|zen2,x86_64
build|up|infinite|1/0/0/1|1/1/0/2|zen2,x86_64
"""
SINFO_CLUSTERS = "CLUSTER: layerbot\n" + SINFO

# The end of a job's log after OverMemoryKill (no cgroups) killed it.
OOM_LOG = """\
slurmstepd-vm: error: StepId=74.batch exceeded memory limit (434769920 > 104857600), being killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 74 ON vm CANCELLED AT 2026-11-27T15:17:05 ***
"""

LATER = 1795800000.0  # long after every job above ended


def queue() -> dict[str, sp.QueueJob]:
    return {j.job_id: j for j in sp.parse_squeue_json(SQUEUE)}


def acct() -> list[sp.AcctJob]:
    return sp.parse_sacct(SACCT)


def maybe_status(backend_id: str, *, in_queue: bool = True, in_acct: bool = True,
                 now: float = LATER, acct_answered: bool = True,
                 accounting_disabled: bool = False, log_says_oom: bool = False
                 ) -> JobStatus | None:
    sid = sp.parse_backend_id(backend_id)
    assert sid is not None
    seen = sp.Observed(
        queued=sp.pick_queued(queue().values(), sid) if in_queue else None,
        acct=sp.pick_acct(acct(), sid) if in_acct else None,
        acct_answered=acct_answered, accounting_disabled=accounting_disabled,
        log_says_oom=log_says_oom, user_name=lambda uid: "root" if uid == 0 else None)
    return sp.job_status(backend_id, seen, now)


def status(backend_id: str, **kwargs: Any) -> JobStatus:
    result = maybe_status(backend_id, **kwargs)
    assert result is not None
    return result


# --- ids and tags --------------------------------------------------------------------------


def test_backend_ids_round_trip_and_reject_foreign_ones() -> None:
    assert sp.parse_parsable("123\n") == ("123", None)
    assert sp.parse_parsable("64;layerbot\n") == ("64", "layerbot")
    with pytest.raises(ValueError, match="no job id"):
        sp.parse_parsable("Submitted batch job 5")
    for text in ("77/5", "64;layerbot/4", "44"):
        parsed = sp.parse_backend_id(text)
        assert parsed is not None and str(parsed) == text
    assert sp.parse_backend_id("64;layerbot/4") == sp.SlurmId("64", "layerbot", 4)
    assert sp.parse_backend_id("/var/lib/layerbot/jobs/1") is None
    assert sp.parse_backend_id("12/x") is None


def test_tags_name_the_instance_and_job() -> None:
    assert sp.job_tag("cluster-a", 7) == "layerbot:cluster-a:7"
    assert sp.job_name("cluster-a", 7) == "layerbot-cluster-a-7"
    assert sp.names_job("layerbot-cluster-a-7", "", 7)  # a site without job_comment
    assert sp.names_job("whatever", "layerbot:cluster-a:7", 7)
    assert not sp.names_job("layerbot-cluster-a-7", "layerbot:cluster-a:17", 7)
    assert not sp.names_job("wrap", "", 7)


# --- sbatch arguments ----------------------------------------------------------------------


def test_options_merge_defaults_then_node_type_then_allowed_overrides() -> None:
    merged = sp.merge_options({"account": "eessi", "time": "04:00:00", "qos": "normal"},
                              {"partition": "zen2", "cpus": "16", "time": "08:00:00"},
                              {"time": "01:00:00"}, overridable=["time"])
    assert merged == {"account": "eessi", "time": "01:00:00", "qos": "normal",
                      "partition": "zen2", "cpus-per-task": "16"}
    with pytest.raises(sp.OptionError, match="may not be overridden"):
        sp.merge_options({}, {"partition": "a"}, {"partition": "b"}, overridable=["time"])


def test_option_args_use_long_names_aliases_and_flags() -> None:
    args = sp.option_args({"partition": "build", "cpus": "4", "memory": "8G", "gres": "gpu:1",
                           "cpus_per_task": "2", "exclusive": "", "requeue": "false"})
    assert args == ["--partition=build", "--cpus-per-task=4", "--mem=8G", "--gres=gpu:1",
                    "--cpus-per-task=2", "--exclusive"]
    for reserved in ("job-name", "comment", "output", "export", "hold", "begin"):
        with pytest.raises(sp.OptionError, match="set by layerbot"):
            sp.option_args({reserved: "x"})
    with pytest.raises(sp.OptionError, match="long option"):
        sp.option_args({"p": "debug"})


def test_time_limits_round_up_to_minutes() -> None:
    assert [sp.time_minutes(s) for s in (1, 60, 61, 3600)] == ["1", "1", "2", "60"]
    assert sp.output_path("/jobs/100%/log") == "/jobs/100%%/log"


def test_batch_script_runs_the_job_with_exactly_its_environment() -> None:
    script = sp.batch_script("/jobs/7/bot/build.sh", {"A": "x,y", "B": "it's\nmulti"},
                             "layerbot:a:7")
    assert script.startswith("#!/bin/sh\n")
    last = script.strip().splitlines()[-2:]
    assert last[0].startswith('exec /usr/bin/env -i "$@" A=x,y ')
    assert "'B=it'\"'\"'s" in script and last[-1] == "multi' /jobs/7/bot/build.sh"
    with pytest.raises(sp.OptionError, match="SLURM_CONF"):
        sp.batch_script("/s", {"SLURM_CONF": "/x"}, "t")
    with pytest.raises(sp.OptionError, match="not a valid"):
        sp.batch_script("/s", {"A-B": "1"}, "t")
    with pytest.raises(sp.OptionError, match="="):
        sp.batch_script("/a=b/s", {}, "t")


# --- errors --------------------------------------------------------------------------------


def test_sbatch_refusals_keep_slurms_words_and_outages_are_told_apart() -> None:
    refused = ("sbatch: error: invalid partition specified: nope\n"
               "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert sp.clean_error(refused) == ("invalid partition specified: nope; Batch job submission "
                                       "failed: Invalid partition name specified")
    assert not sp.is_unavailable(refused)
    for down in (
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)",
        "scancel: error: Kill job error on job id 76: Unable to contact slurm controller "
        "(connect failure)",
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)",
        "Unexpected message received for job 76\nslurm_suspend error: Unexpected message received",
        "Job update not available right now, the DB index is being set, try again in a bit for "
        "job 617\nslurm_suspend error: Job update not available right now, the DB index is "
        "being set, try again in a bit",
    ):
        assert sp.is_unavailable(down), down
    assert sp.accounting_disabled("sacct: error: Slurm accounting storage is disabled")


def test_squeue_with_slurmctld_down_is_an_error_not_an_empty_queue() -> None:
    with pytest.raises(ValueError, match="Failed while looking for jobs"):
        sp.parse_squeue_json(SQUEUE_CTLD_DOWN)
    with pytest.raises(ValueError, match="no JSON"):
        sp.parse_squeue_json("")


# --- parsing -------------------------------------------------------------------------------


def test_squeue_json_is_read_per_job() -> None:
    jobs = queue()
    assert len(jobs) == 11
    held, failed, running = jobs["76"], jobs["73"], jobs["75"]
    assert (held.state, held.reason, held.start, held.cpus) == ("PENDING", "JobHeldUser", None, 1)
    assert (failed.wait_status, failed.comment, failed.name) == (768, "layerbot:cap:1",
                                                                  "layerbot-cap-1")
    assert (running.node, running.time_limit_minutes, running.memory_bytes) == ("vm", 60, 2 << 30)
    assert jobs["74"].memory_bytes == 100 << 20


def test_squeue_json_of_several_clusters_is_read_document_by_document() -> None:
    text = f"CLUSTER: a\n{SQUEUE}\nCLUSTER: b\n{SQUEUE}\n"
    assert len(sp.parse_squeue_json(text)) == 22


def test_squeue_json_of_later_versions_is_tolerated() -> None:
    job = json.loads(SQUEUE_JOBS.strip().splitlines()[6])  # job 73, exit 3
    job.update({"job_state": ["FAILED"], "exit_code": {"status": ["FAILED"], "return_code":
                {"set": True, "infinite": False, "number": 3}},
                "start_time": {"set": True, "infinite": False, "number": 1795792623},
                "comment": {"job": "layerbot:cap:1"}})
    parsed = sp.parse_squeue_json(json.dumps({"errors": [], "jobs": [job]}))[0]
    assert (parsed.state, parsed.wait_status, parsed.start, parsed.comment) == (
        "FAILED", 768, 1795792623, "layerbot:cap:1")


def test_squeue_by_name_gives_tagged_jobs() -> None:
    # SLURM_TIME_FORMAT=%s squeue [-M layerbot] -t all --name=... --user=... -o
    # "%i|%j|%V|%u|%Z|%k"
    text = ("CLUSTER: layerbot\nJOBID|NAME|SUBMIT_TIME|USER|WORK_DIR|COMMENT\n"
            "71|layerbot-try-1001|1795792614|layerbot-job|/d/job-1001-ab|layerbot:try:1001\n"
            "73|layerbot-cap-1|1795792623|layerbot-job|/d/job-1-cd|layerbot:cap:1\n")
    assert sp.parse_squeue_tagged(text) == [
        sp.TaggedJob("71", "layerbot", "layerbot-try-1001", "layerbot:try:1001", 1795792614,
                     "layerbot-job", "/d/job-1001-ab"),
        sp.TaggedJob("73", "layerbot", "layerbot-cap-1", "layerbot:cap:1", 1795792623,
                     "layerbot-job", "/d/job-1-cd")]
    plain = "JOBID|NAME|SUBMIT_TIME|USER|WORK_DIR|COMMENT\n34|wrap|1795791325|root|/tmp|(null)\n"
    assert sp.parse_squeue_tagged(plain) == [
        sp.TaggedJob("34", None, "wrap", "", 1795791325, "root", "/tmp")]


def test_sacct_by_name_gives_tagged_jobs_without_steps() -> None:
    # SLURM_TIME_FORMAT=%s sacct -P -n -X -D --name=... --user=... -o <SACCT_TAG_FIELDS>
    text = ("161|layerbot|layerbot-e2e-11|1796408752|layerbot-job|/d/job-11-ab|COMPLETED|"
            "layerbot:e2e:11\n161.batch|layerbot|batch|1796408752||/d|COMPLETED|\n"
            "163|layerbot|probe|1796409791|root|/tmp|CANCELLED by 0|\n")
    assert sp.parse_sacct_tagged(text) == [
        sp.TaggedJob("161", "layerbot", "layerbot-e2e-11", "layerbot:e2e:11", 1796408752,
                     "layerbot-job", "/d/job-11-ab", "COMPLETED"),
        sp.TaggedJob("163", "layerbot", "probe", "", 1796409791, "root", "/tmp",
                     "CANCELLED by 0")]


@pytest.mark.parametrize(("change", "proves"), [
    ({}, True),
    ({"comment": ""}, True),  # a site that keeps no comments in accounting
    ({"user": "mallory"}, False),  # another user chose our name and comment
    ({"work_dir": "/d/job-7-other"}, False),  # the job user, but not in our directory
    ({"work_dir": "/d/job-7-ab/sub"}, False),
    ({"name": "layerbot-i-70"}, False),
    ({"comment": "layerbot:i:70"}, False),
    # a "|" in the working directory shifts the comment: never a match
    ({"work_dir": "/d/job-7-ab", "comment": "layerbot:i:7|x"}, False),
])
def test_a_job_is_adopted_only_with_proof(change: dict[str, str], proves: bool) -> None:
    job = sp.TaggedJob("5", None, "layerbot-i-7", "layerbot:i:7", 1, "layerbot-job",
                       "/d/job-7-ab")
    job = dataclasses.replace(job, **change)  # type: ignore[arg-type]
    assert sp.proves_job(job, "i", 7, "layerbot-job", "/d/job-7-ab") is proves


def test_sacct_lines_are_grouped_per_incarnation_with_max_rss_from_steps() -> None:
    jobs = acct()
    assert [j.job_id for j in jobs] == ["29", "29", "44", "46", "51", "59", "60", "64", "73",
                                        "74", "75", "76", "77"]
    lost, reused = jobs[0], jobs[1]
    assert (lost.state, lost.end, lost.req_mem_bytes) == ("PENDING", None, None)
    assert (reused.state, reused.end) == ("COMPLETED", 1795791265)
    oom = jobs[3]
    assert (oom.exit_code, oom.exit_signal, oom.max_rss_bytes, oom.req_mem_bytes) == (
        0, 9, 424536 * 1024, 100 << 20)
    assert jobs[7].node is None and jobs[7].reason == "JobHeldUser"
    assert jobs[7].time_limit_minutes is None  # Partition_Limit
    assert jobs[8].exit_code == 3 and jobs[6].time_limit_minutes == 1


def test_sizes_and_limits() -> None:
    assert sp.parse_size("168388K") == 168388 * 1024
    assert sp.parse_size("2G", default_unit="M") == 2 << 30
    assert sp.parse_size("4000Mn") == 4000 << 20
    assert sp.parse_size("16?") is None
    assert [sp.parse_limit_minutes(t) for t in
            ("60", "1:30", "00:01:00", "01:00:00", "1-00:00:00", "2-12", "UNLIMITED")] == [
        60, 2, 1, 60, 1440, 3600, None]


def test_sinfo_gives_partitions_with_nodes_cpus_and_features() -> None:
    debug, build = sp.parse_sinfo(SINFO)
    assert debug.name == "debug" and debug.default and debug.max_time == "1:00:00"
    assert (debug.nodes_allocated, debug.nodes_idle, debug.nodes_down) == (1, 0, 0)
    assert (debug.cpus_total, debug.cpus_idle, debug.features) == (2, 1, ("zen2", "x86_64"))
    assert build.name == "build" and not build.default and build.max_time is None
    assert [p.name for p in sp.parse_sinfo(SINFO_CLUSTERS)] == ["layerbot:debug",
                                                                "layerbot:build"]


def test_clusters_named_in_the_configuration_and_options() -> None:
    assert sp.clusters_of([], [{"partition": "a"}]) == []
    assert sp.clusters_of(["a"], [{"cluster": "b"}, {"clusters": "a,c"}]) == ["a", "b", "c"]


def test_partitions_named_in_options() -> None:
    assert sp.partitions_of([{"partition": "a,b"}, {"Partition": "c"}, {"qos": "x"}]) == {
        "a", "b", "c"}


# --- states --------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "state"), [
    ("PENDING", BackendState.PENDING), ("COMPLETING", BackendState.RUNNING),
    ("CANCELLED by 0", BackendState.CANCELLED), ("TIMEOUT", BackendState.TIMEOUT),
    ("OUT_OF_MEMORY", BackendState.OUT_OF_MEMORY), ("NODE_FAIL", BackendState.NODE_FAIL),
    ("BOOT_FAIL", BackendState.NODE_FAIL), ("PREEMPTED", BackendState.PREEMPTED),
    ("REQUEUED", BackendState.PENDING), ("DEADLINE", BackendState.TIMEOUT),
])
def test_slurm_states_map_to_backend_states(word: str, state: BackendState) -> None:
    assert sp.map_state(word) is state
    assert sp.map_state("SOMETHING_NEW") is None


def test_held_and_running_jobs_come_from_squeue_alone() -> None:
    held = status("76/4", in_acct=False)
    assert held.state is BackendState.PENDING and held.reason == "JobHeldUser"
    running = status("75/3", in_acct=False, now=1795792636.0)
    assert running.state is BackendState.RUNNING
    assert running.elapsed_seconds == 10 and running.node == "vm" and running.cpus == 1


def test_final_states_with_exit_codes_and_reasons() -> None:
    done = status("44")
    assert done.state is BackendState.COMPLETED and done.exit_code == 0
    assert done.max_rss_bytes == 168388 * 1024 and done.elapsed_seconds == 4
    assert done.started_at == datetime.fromtimestamp(1795791439, UTC)
    failed = status("73/1")
    assert failed.state is BackendState.FAILED and failed.exit_code == 3
    assert failed.reason == "exit code 3 (Slurm: NonZeroExitCode)"
    timeout = status("60")
    assert timeout.state is BackendState.TIMEOUT and timeout.exit_code == 128 + 15
    assert timeout.reason == "1 min, Slurm: TIMEOUT"
    cancelled = status("77/5")
    assert cancelled.state is BackendState.CANCELLED and cancelled.reason == "by root, uid 0"
    node = status("59")
    assert node.state is BackendState.NODE_FAIL and node.reason == "Slurm: NODE_FAIL, NodeDown"


def test_memory_limit_kill_without_cgroups_is_out_of_memory() -> None:
    oom = status("74/2")
    assert oom.state is BackendState.OUT_OF_MEMORY and oom.exit_code == 137
    assert oom.reason == "MaxRSS 415 MiB over the 100 MiB memory limit"
    # Without sacct's MaxRSS (sampled every 30 s at many sites), slurmstepd's log line.
    assert status("74/2", in_acct=False).state is BackendState.FAILED
    by_log = status("74/2", in_acct=False, log_says_oom=True)
    assert by_log.state is BackendState.OUT_OF_MEMORY
    assert sp.OOM_LOG_LINE in OOM_LOG


def test_a_job_just_ended_waits_for_accounting_for_a_moment() -> None:
    # squeue says FAILED, sacct does not know yet: ask again (for MaxRSS, the uid, ...)
    assert maybe_status("74/2", in_acct=False, now=1795792625.0 + 1) is None
    assert maybe_status("74/2", in_acct=False, now=1795792625.0 + 60) is not None


def test_jobs_that_left_the_queue_come_from_accounting() -> None:
    assert status("44", in_queue=False).state is BackendState.COMPLETED
    lost = status("75/3", in_queue=False)  # RUNNING in accounting, unknown to slurmctld
    assert lost.state is BackendState.UNKNOWN and "lost" in (lost.reason or "")
    gone = status("12345/9", in_queue=False)
    assert gone.state is BackendState.UNKNOWN and "no job 12345" in (gone.reason or "")
    # sacct failed: no news rather than a wrong "lost"
    assert maybe_status("12345/9", in_queue=False, acct_answered=False) is None
    disabled = status("12345/9", in_queue=False, acct_answered=False, accounting_disabled=True)
    assert disabled.state is BackendState.UNKNOWN


def test_a_slurm_id_reused_after_a_crash_is_not_taken_for_our_job() -> None:
    sid = sp.SlurmId("73", None, 99)  # layerbot job 99 once had Slurm id 73
    assert sp.pick_queued(queue().values(), sid) is None
    assert sp.pick_acct(acct(), sid) is None
    # the id of a lost job given to a later job: each incarnation by its tag
    jobs = acct()
    lost_then_reused = [jobs[0], jobs[1]]
    named = [sp.AcctJob(**{**j.__dict__, "name": f"layerbot-i-{n}"})
             for j, n in zip(lost_then_reused, (1, 2), strict=True)]
    first = sp.pick_acct(named, sp.SlurmId("29", None, 1))
    second = sp.pick_acct(named, sp.SlurmId("29", None, 2))
    assert first is not None and first.state == "PENDING"
    assert second is not None and second.state == "COMPLETED"


def test_a_state_this_version_does_not_know_is_no_news() -> None:
    job = sp.QueueJob("1", None, "layerbot-a-1", "", "BRAND_NEW", None, None, None, None,
                      None, None, None, None, None, None)
    result = sp.job_status("1/1", sp.Observed(queued=job), LATER)
    assert result is not None and result.state is BackendState.PENDING


# --- dependencies (after_ok) ---------------------------------------------------------------


def test_dependency_options_and_squeue_dependency_text() -> None:
    assert sp.dependency_args([]) == []
    assert sp.dependency_args(["73/1", "74;c/2"]) == [
        "--dependency=afterok:73:74", "--kill-on-invalid-dep=yes"]
    # Measured (22.05): satisfied ones are dropped, the failed one stays.
    assert sp.failed_dependencies("afterok:1152(failed)") == ["1152"]
    assert sp.failed_dependencies("afterok:1(unfulfilled),afterok:2_3+5(failed)") == ["2"]
    assert sp.failed_dependencies(None) == []


def test_dependency_states_name_the_job_that_did_not_succeed() -> None:
    jobs = queue()
    held = jobs["76"]  # layerbot job 4, waiting for layerbot job 1 (Slurm 73, FAILED)
    released = dataclasses.replace(held, reason=None, dependency="afterok:73(unfulfilled)")
    waiting = sp.job_status("76/4", sp.Observed(queued=released, acct_answered=False), LATER)
    assert waiting is not None
    assert waiting.state is BackendState.PENDING and waiting.reason == "Dependency"
    killed = dataclasses.replace(held, state="CANCELLED", reason="DependencyNeverSatisfied",
                                 dependency="afterok:73(failed)", end=int(LATER) - 100)
    seen = sp.Observed(queued=killed, acct_answered=False, needed=(jobs["73"],))
    cancelled = sp.job_status("76/4", seen, LATER)
    assert cancelled is not None and cancelled.state is BackendState.CANCELLED
    assert cancelled.reason == "not started: job 73/1 it needs did not succeed (FAILED)"
    unnamed = sp.job_status("76/4", dataclasses.replace(seen, needed=()), LATER)
    assert unnamed is not None
    assert unnamed.reason == "not started: job 73 it needs did not succeed (Slurm: failed)"
