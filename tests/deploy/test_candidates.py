"""Which artifacts a deploy request ships: ``plan_deploy`` is pure, so plain values suffice."""

from __future__ import annotations

from layerbot.core.commands import BuildFilters, Command, parse_line
from layerbot.core.deploy_plan import ArtifactView, DeploymentView, JobView, plan_deploy
from layerbot.handlers.deploy import describe_plan

HEAD = "h" * 40
OLD = "o" * 40
ZEN2, ZEN3 = "x86_64/amd/zen2", "x86_64/amd/zen3"


def job(id: int, state: str = "succeeded", sha: str = HEAD, cpu: str = ZEN2,
        accel: str | None = None, repo: str = "eessi-2023.06") -> JobView:
    return JobView(id, state, sha, cpu, accel, repo, cpu + (f" + {accel}" if accel else ""))


def art(id: int, job_id: int, name: str | None = None) -> ArtifactView:
    return ArtifactView(id, job_id, name or f"a{id}.tar.gz", 1000)


def picked(plan: object) -> list[int]:
    return [p.artifact.id for p in plan.queued]  # type: ignore[attr-defined]


def filters(line: str) -> BuildFilters:
    cmd = parse_line(line)
    assert isinstance(cmd, Command), cmd
    return cmd.filters


def test_only_succeeded_jobs_of_the_current_head_are_candidates() -> None:
    jobs = [job(1, sha=OLD), job(2, state="failed", cpu=ZEN3), job(3, state="running",
                                                                    repo="other"), job(4)]
    arts = [art(10, 1), art(20, 2), art(30, 3), art(40, 4)]
    plan = plan_deploy(jobs, arts, [], head_sha=HEAD, policy="all")
    assert picked(plan) == [40]
    reasons = {j.id: why for j, why in plan.left_out}
    assert "older commit" in reasons[1]
    assert "failed" in reasons[2] and "force job:2" in reasons[2]
    assert "running" in reasons[3]


def test_an_artifact_of_an_older_sha_is_never_a_candidate_whatever_the_policy() -> None:
    jobs = [job(1, sha=OLD)]
    for policy in ("all", "latest", "once"):
        plan = plan_deploy(jobs, [art(10, 1)], [], head_sha=HEAD, policy=policy)  # type: ignore[arg-type]
        assert plan.queued == ()


def test_latest_takes_the_newest_succeeded_job_per_target_and_repository() -> None:
    jobs = [job(1), job(2), job(3, cpu=ZEN3), job(4, repo="eessi-2025.06"),
            job(5, state="failed")]
    arts = [art(10, 1), art(20, 2), art(30, 3), art(40, 4), art(50, 5)]
    plan = plan_deploy(jobs, arts, [], head_sha=HEAD, policy="latest")
    assert sorted(picked(plan)) == [20, 30, 40]
    assert any(j.id == 1 and "job 2 is newer" in why for j, why in plan.left_out)


def test_an_accelerator_build_is_another_target() -> None:
    jobs = [job(1), job(2, accel="nvidia/cc80")]
    plan = plan_deploy(jobs, [art(10, 1), art(20, 2)], [], head_sha=HEAD, policy="latest")
    assert sorted(picked(plan)) == [10, 20]


def test_all_takes_every_succeeded_job_and_every_artifact() -> None:
    jobs = [job(1), job(2)]
    arts = [art(10, 1), art(11, 1), art(20, 2)]
    assert picked(plan_deploy(jobs, arts, [], head_sha=HEAD, policy="all")) == [10, 11, 20]


def test_a_repeated_request_queues_nothing_and_a_failed_deployment_again() -> None:
    jobs = [job(1), job(2, cpu=ZEN3)]
    arts = [art(10, 1), art(20, 2)]
    deployed = [DeploymentView(10, 1, "uploaded"), DeploymentView(20, 2, "failed")]
    plan = plan_deploy(jobs, arts, deployed, head_sha=HEAD, policy="latest")
    assert plan.new == ()
    assert [p.artifact.id for p in plan.retry] == [20]
    assert [(p.artifact.id, s) for p, s in plan.already] == [(10, "uploaded")]


def test_once_never_deploys_a_target_again() -> None:
    jobs = [job(1, sha=OLD), job(2), job(3, cpu=ZEN3)]
    arts = [art(10, 1), art(20, 2), art(30, 3)]
    # The old commit's job 1 was deployed for zen2 before the PR moved on.
    plan = plan_deploy(jobs, arts, [DeploymentView(10, 1, "ingested")], head_sha=HEAD,
                       policy="once")
    assert picked(plan) == [30]
    assert any(j.id == 2 and "policy once" in why for j, why in plan.left_out)
    # latest would ship job 2: it is the newest at the head.
    assert 20 in picked(plan_deploy(jobs, arts, [DeploymentView(10, 1, "ingested")],
                                    head_sha=HEAD, policy="latest"))


def test_once_tries_again_when_the_earlier_deployment_failed() -> None:
    jobs = [job(1, sha=OLD), job(2)]
    plan = plan_deploy(jobs, [art(10, 1), art(20, 2)], [DeploymentView(10, 1, "failed")],
                       head_sha=HEAD, policy="once")
    assert picked(plan) == [20]


def test_filters_select_jobs_like_the_build_command_selects_targets() -> None:
    jobs = [job(1), job(2, cpu=ZEN3), job(3, accel="nvidia/cc80"),
            job(4, repo="eessi-2025.06")]
    arts = [art(10, 1), art(20, 2), art(30, 3), art(40, 4)]

    def chosen(line: str) -> list[int]:
        return picked(plan_deploy(jobs, arts, [], head_sha=HEAD, policy="all",
                                  filters=filters(line)))

    assert chosen("bot: deploy for:arch=x86_64/amd/zen3") == [20]
    assert chosen("bot: deploy for:arch=x86_64/amd/zen2") == [10, 40]  # CPU-only target
    assert chosen("bot: deploy for:arch=x86_64/amd/zen2,accel=nvidia/cc80") == [30]
    assert chosen("bot: deploy arch:x86_64/amd/zen2") == [10, 30, 40]  # older syntax: any
    assert chosen("bot: deploy repo:eessi-2025.*") == [40]


def test_force_ships_a_failed_job_at_the_current_head() -> None:
    jobs = [job(1, state="failed"), job(2)]
    plan = plan_deploy(jobs, [art(10, 1), art(20, 2)], [], head_sha=HEAD, policy="latest",
                       force_job=1)
    assert picked(plan) == [10] and plan.refusal is None


def test_force_refuses_what_it_must() -> None:
    jobs = [job(1, sha=OLD, state="failed"), job(2, state="running"), job(3, state="failed")]
    arts = [art(10, 1), art(20, 2)]

    def refusal(job_id: int) -> str:
        plan = plan_deploy(jobs, arts, [], head_sha=HEAD, policy="all", force_job=job_id)
        assert plan.queued == () and plan.refusal is not None
        return plan.refusal

    assert "no job 9" in refusal(9)
    assert "older commits are never deployed" in refusal(1)
    assert "running" in refusal(2)
    assert "no artifacts" in refusal(3)


def test_describe_plan_lists_what_a_dry_run_would_ship() -> None:
    jobs = [job(1), job(2, sha=OLD, cpu=ZEN3)]
    plan = plan_deploy(jobs, [art(10, 1, "hello.tar.gz"), art(20, 2)], [], head_sha=HEAD,
                       policy="latest")
    text = describe_plan("cluster-a", plan, HEAD, dry_run=True)
    assert "would deploy" in text and "`hello.tar.gz`" in text
    assert "job 2" in text and "older commit" in text
    assert "nothing was recorded" in text
    nothing = describe_plan("cluster-a", plan_deploy([], [], [], head_sha=HEAD,
                                                     policy="all"), HEAD, dry_run=False)
    assert "nothing new to deploy" in nothing
