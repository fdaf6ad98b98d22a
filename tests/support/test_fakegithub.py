"""The fake GitHub server, exercised through githubkit (the client the bot uses)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import (
    PrimaryRateLimitExceeded,
    RequestFailed,
    SecondaryRateLimitExceeded,
)
from githubkit.retry import RetryOption

from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.fakegithub.spec import load_spec
from tests.support.fixtures import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_ORG,
    fake_github,
    github_app_key,
)

__all__ = ["fake_github", "github_app_key"]  # fixtures used by name below

OWNER, REPO = DEFAULT_ORG, "stack"
HEAD = "a1" * 20


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.add_pull(OWNER, REPO, 7, HEAD, "feature", "main", title="Add zlib")
    return fake_github


@pytest.fixture
def gh(fake: FakeGitHub) -> Iterator[Any]:
    """An installation client the way the bot builds one (own cache, fake base URL)."""
    client = GitHub(
        AppInstallationAuthStrategy(DEFAULT_APP_ID, fake.private_key_pem, DEFAULT_INSTALLATION_ID),
        base_url=fake.url,
        cache_strategy=MemCacheStrategy(),  # githubkit's default token cache is global
        auto_retry=False,  # tests below inspect the first failure
    )
    with client:  # one HTTP connection for the whole test instead of one per call
        yield client


def raw_token(fake: FakeGitHub) -> str:
    # Keep the client in a variable: githubkit's ``rest`` namespace only holds a weak
    # reference, so ``fake.app_client().rest.apps...`` fails once the client is collected.
    app = fake.app_client()
    return app.rest.apps.create_installation_access_token(DEFAULT_INSTALLATION_ID).parsed_data.token


def app_jwt(fake: FakeGitHub, key: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": str(fake.app_id), "iat": now - 60, "exp": now + 540, **claims}
    return jwt.encode(payload, key or fake.private_key_pem, algorithm="RS256")


# == the happy path through githubkit =========================================================


def test_comment_edit_and_react_through_githubkit(fake: FakeGitHub, gh: Any) -> None:
    created = gh.rest.issues.create_comment(OWNER, REPO, 7, body="Build queued")
    comment_id = created.parsed_data.id
    gh.rest.issues.update_comment(OWNER, REPO, comment_id, body="Build running")
    first = gh.rest.reactions.create_for_issue_comment(OWNER, REPO, comment_id, content="rocket")
    again = gh.rest.reactions.create_for_issue_comment(OWNER, REPO, comment_id, content="rocket")
    fetched = gh.rest.issues.get_comment(OWNER, REPO, comment_id).parsed_data

    assert created.status_code == 201 and comment_id >= 1000
    assert created.headers["location"].endswith(f"/issues/comments/{comment_id}")
    assert (first.status_code, again.status_code) == (201, 200)  # GitHub: 200 = existed
    assert fetched.body == "Build running"
    assert fetched.user.login == "layerbot[bot]" and fetched.user.type == "Bot"
    [comment] = fake.comments(OWNER, REPO, 7)
    assert comment.history == ["Build queued", "Build running"]
    assert fake.reactions(comment_id) == ["rocket"]
    assert fake.tokens_issued == 1
    token_call = fake.calls("apps/create-installation-access-token")[0]
    assert token_call.headers["authorization"].startswith("Bearer ey")
    assert fake.calls("issues/create-comment")[0].headers["authorization"].startswith("token ghs_")


def test_each_response_carries_rate_limit_headers(fake: FakeGitHub, gh: Any) -> None:
    first = gh.rest.pulls.get(OWNER, REPO, 7)
    second = gh.rest.pulls.get(OWNER, REPO, 7)

    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in (first, second)]
    assert remaining[1] == remaining[0] - 1
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert int(second.headers["x-ratelimit-used"]) == 5000 - remaining[1]
    assert int(first.headers["x-ratelimit-reset"]) > time.time()
    assert first.headers["x-ratelimit-resource"] == "core"
    assert first.parsed_data.head.sha == HEAD and first.parsed_data.base.ref == "main"


def test_check_run_keeps_every_state(fake: FakeGitHub, gh: Any) -> None:
    run = gh.rest.checks.create(
        OWNER, REPO, name="build", head_sha=HEAD, status="in_progress", external_id="job-1"
    ).parsed_data
    done = gh.rest.checks.update(
        OWNER, REPO, run.id, conclusion="failure", output={"title": "Failed", "summary": "log"}
    ).parsed_data

    assert run.status == "in_progress" and run.conclusion is None
    assert [pr.number for pr in run.pull_requests] == [7]
    assert (done.status, done.conclusion) == ("completed", "failure")
    [stored] = fake.check_runs(OWNER, REPO)
    assert [(h["status"], h["conclusion"]) for h in stored.history] == [
        ("in_progress", None),
        ("completed", "failure"),
    ]
    assert stored.history[-1]["title"] == "Failed"


def test_comments_are_paginated_with_link_headers(fake: FakeGitHub, gh: Any) -> None:
    ids = [fake.add_comment(OWNER, REPO, 7, f"comment {n}") for n in range(5)]

    page = gh.rest.issues.list_comments(OWNER, REPO, 7, per_page=2, page=2)
    every = list(
        gh.rest.paginate(
            gh.rest.issues.list_comments, owner=OWNER, repo=REPO, issue_number=7, per_page=2
        )
    )

    assert [c.id for c in page.parsed_data] == ids[2:4]
    assert 'rel="next"' in page.headers["link"] and 'rel="prev"' in page.headers["link"]
    assert [c.id for c in every] == ids
    assert fake.count("issues/list-comments") == 1 + 3


def test_labels_statuses_permissions_and_teams(fake: FakeGitHub, gh: Any) -> None:
    fake.set_permission(OWNER, REPO, "maint", "maintain")
    fake.add_team_member(OWNER, "stack-admins", "maint")

    labels = gh.rest.issues.add_labels(OWNER, REPO, 7, labels=["bot:build", "arch:x86"])
    remaining = gh.rest.issues.remove_label(OWNER, REPO, 7, "bot:build")
    gh.rest.repos.create_commit_status(OWNER, REPO, HEAD, state="pending", context="layerbot")
    maint = gh.rest.repos.get_collaborator_permission_level(OWNER, REPO, "maint").parsed_data
    other = gh.rest.repos.get_collaborator_permission_level(OWNER, REPO, "someone").parsed_data
    team = gh.rest.teams.get_membership_for_user_in_org(OWNER, "stack-admins", "maint")
    with pytest.raises(RequestFailed) as missing:
        gh.rest.teams.get_membership_for_user_in_org(OWNER, "stack-admins", "someone")

    assert [label.name for label in labels.parsed_data] == ["bot:build", "arch:x86"]
    assert [label.name for label in remaining.parsed_data] == ["arch:x86"]
    assert fake.labels(OWNER, REPO, 7) == ["arch:x86"]
    assert [(s.state, s.context) for s in fake.statuses(OWNER, REPO, HEAD)] == [
        ("pending", "layerbot")
    ]
    assert (maint.permission, maint.role_name) == ("write", "maintain")  # legacy mapping
    assert maint.user is not None and maint.user.login == "maint"
    assert other.permission == "read"  # public repository
    assert team.parsed_data.state == "active"
    assert missing.value.response.status_code == 404


def test_git_refs_contents_and_pull_creation(fake: FakeGitHub, gh: Any) -> None:
    main_sha = gh.rest.git.get_ref(OWNER, REPO, "heads/main").parsed_data.object_.sha
    gh.rest.git.create_ref(OWNER, REPO, ref="refs/heads/ingest/zlib-1.3", sha=main_sha)
    put = gh.rest.repos.create_or_update_file_contents(
        OWNER,
        REPO,
        "easystacks/2024/zlib.yml",
        message="Add zlib",
        content="bmFtZTogemxpYgo=",
        branch="ingest/zlib-1.3",
    )
    branch = gh.rest.git.get_ref(OWNER, REPO, "heads/ingest/zlib-1.3").parsed_data
    pull = gh.rest.pulls.create(
        OWNER, REPO, title="Ingest zlib", head="ingest/zlib-1.3", base="main"
    ).parsed_data

    assert put.status_code == 201 and branch.object_.sha == put.parsed_data.commit.sha
    assert fake.file_content(OWNER, REPO, "easystacks/2024/zlib.yml", "ingest/zlib-1.3") == (
        b"name: zlib\n"
    )
    assert fake.file_content(OWNER, REPO, "easystacks/2024/zlib.yml") is None  # not on main
    assert pull.number == 8 and pull.head.sha == branch.object_.sha
    assert fake.pull(OWNER, REPO, 8).user == "layerbot[bot]"


def test_pull_files_rate_limit_and_token_expiry(fake: FakeGitHub, gh: Any) -> None:
    fake.token_lifetime = timedelta(minutes=30)
    fake.add_pull(OWNER, REPO, 9, "c3" * 20, files=[f"easystacks/f{n}.yml" for n in range(3)])
    token = raw_token(fake)

    page = gh.rest.pulls.list_files(OWNER, REPO, 9, per_page=2)
    files = list(
        gh.rest.paginate(
            gh.rest.pulls.list_files, owner=OWNER, repo=REPO, pull_number=9, per_page=2
        )
    )
    limits = gh.rest.rate_limit.get()

    assert [f.filename for f in files] == [f"easystacks/f{n}.yml" for n in range(3)]
    assert 'rel="last"' in page.headers["link"]
    core = limits.parsed_data.resources.core
    assert core.limit == 5000 and core.used == int(limits.headers["x-ratelimit-used"])
    issued = fake.tokens[token].expires_at - datetime.now(UTC)
    assert timedelta(minutes=29) < issued <= timedelta(minutes=30)


# == app (JWT) endpoints ======================================================================


def test_app_endpoints_deliveries_and_redelivery(fake: FakeGitHub) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(5):
        fake.add_delivery(
            100 + n,
            f"guid-{n}",
            "issue_comment",
            "created",
            502 if n % 2 else 200,
            "Bad Gateway" if n % 2 else "OK",
            start + timedelta(minutes=n),
        )
    with fake.app_client() as app:
        first = app.rest.apps.list_webhook_deliveries(per_page=2)
        every = list(app.rest.paginate(app.rest.apps.list_webhook_deliveries, per_page=2))
        failed = app.rest.apps.list_webhook_deliveries(status="failure").parsed_data
        accepted = app.rest.apps.redeliver_webhook_delivery(103)
        newest = app.rest.apps.list_webhook_deliveries(per_page=1).parsed_data[0]
        installation = app.rest.apps.get_repo_installation(OWNER, REPO).parsed_data
        me = app.rest.apps.get_authenticated().parsed_data
        installations = app.rest.apps.list_installations().parsed_data

    assert [d.id for d in first.parsed_data] == [104, 103]  # newest first
    assert "cursor=" in first.headers["link"]
    assert [d.id for d in every] == [104, 103, 102, 101, 100]
    assert {d.id for d in failed} == {101, 103}
    assert accepted.status_code == 202 and fake.redeliveries == [103]
    assert (newest.guid, newest.redelivery) == ("guid-3", True)  # logged as a new delivery
    assert installation.id == DEFAULT_INSTALLATION_ID
    assert (me.id, me.slug) == (DEFAULT_APP_ID, "layerbot")
    assert [i.id for i in installations] == [DEFAULT_INSTALLATION_ID]


def test_bad_app_jwts_are_refused(fake: FakeGitHub) -> None:
    other_key, _ = generate_app_key()
    now = int(time.time())
    cases = {
        "too long": app_jwt(fake, exp=now + 3600),
        "wrong key": app_jwt(fake, key=other_key),
        "wrong iss": app_jwt(fake, iss="999"),
    }
    with httpx.Client(base_url=fake.url) as client:
        statuses = {
            name: client.get("/app", headers={"Authorization": f"Bearer {token}"}).status_code
            for name, token in cases.items()
        }
        expired = client.get(
            "/app", headers={"Authorization": f"Bearer {app_jwt(fake, exp=now - 5)}"}
        )
        good = client.get("/app", headers={"Authorization": f"Bearer {app_jwt(fake)}"})

    assert statuses == {name: 401 for name in cases}
    assert expired.status_code == 401 and good.status_code == 200
    violations = fake.take_violations()
    # An expired JWT happens to correct clients; the other three are client bugs.
    assert [v.kind for v in violations] == ["auth"] * 3
    assert "too far in the future" in violations[0].message


def test_token_narrowing(fake: FakeGitHub) -> None:
    app = fake.app_client()
    fake.add_repo(OWNER, "other")
    narrow = app.rest.apps.create_installation_access_token(
        DEFAULT_INSTALLATION_ID, repositories=[REPO], permissions={"issues": "read"}
    ).parsed_data
    with pytest.raises(RequestFailed) as refused:
        app.rest.apps.create_installation_access_token(
            DEFAULT_INSTALLATION_ID, permissions={"administration": "write"}
        )
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"token {narrow.token}"}) as c:
        read = c.get(f"/repos/{OWNER}/{REPO}/issues/7/comments")
        write = c.post(f"/repos/{OWNER}/{REPO}/issues/7/comments", json={"body": "x"})
        elsewhere = c.get(f"/repos/{OWNER}/other/git/ref/heads/main")

    assert narrow.repository_selection == "selected"
    assert refused.value.response.status_code == 422
    assert (read.status_code, write.status_code, elsewhere.status_code) == (200, 403, 404)
    assert write.json()["message"] == "Resource not accessible by integration"


# == violations ===============================================================================


def test_invalid_requests_are_recorded_as_violations(fake: FakeGitHub) -> None:
    token = raw_token(fake)
    fake.add_comment(OWNER, REPO, 7, "hi")
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"token {token}"}) as c:
        no_body = c.post(f"/repos/{OWNER}/{REPO}/issues/7/comments", json={"text": "x"})
        bad_enum = c.post(
            f"/repos/{OWNER}/{REPO}/issues/comments/1000/reactions", json={"content": "thumbsup"}
        )
        bad_type = c.get(f"/repos/{OWNER}/{REPO}/pulls/seven")
        unknown = c.get(f"/repos/{OWNER}/{REPO}/branches")
        typo = c.patch(f"/repos/{OWNER}/{REPO}/issues/comments/1000", json={"body": "x"})
        incomplete = c.post(
            f"/repos/{OWNER}/{REPO}/check-runs",
            json={"name": "b", "head_sha": HEAD, "status": "completed"},
        )

    assert (no_body.status_code, bad_enum.status_code) == (422, 422)
    assert (bad_type.status_code, unknown.status_code, incomplete.status_code) == (404, 404, 422)
    assert typo.status_code == 403  # a human's comment: valid request, but not ours to edit
    violations = fake.take_violations()
    text = "\n".join(str(v) for v in violations)
    assert "'body' is a required property" in text
    assert "body.text: unknown field" not in text  # the request was already rejected
    assert "'thumbsup' is not one of" in text
    assert "pull_number" in text
    assert "GET /repos/octo-org/stack/branches: route" in text
    assert "conclusion" in text
    assert len(violations) == 5
    assert fake.comments(OWNER, REPO, 7)[0].history == ["hi"]  # nothing was changed


def test_a_repeated_request_is_judged_alike_each_time(fake: FakeGitHub) -> None:
    # The checks are remembered per distinct request: a repeat must still be a violation
    # of its own, and a request differing only in its body must be judged on that body.
    token = raw_token(fake)
    comment = fake.add_comment(OWNER, REPO, 7, "hi")
    path = f"/repos/{OWNER}/{REPO}/issues/comments/{comment}/reactions"
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"token {token}"}) as c:
        answers = [c.post(path, json={"content": "thumbsup"}).status_code for _ in range(2)]
        answers.append(c.post(path, json={"content": "eyes"}).status_code)

    assert answers == [422, 422, 201]
    violations = fake.take_violations()
    assert [v.kind for v in violations] == ["request", "request"]
    assert violations[0].message == violations[1].message


def test_ignored_fields_and_githubkit_client_side_validation(fake: FakeGitHub, gh: Any) -> None:
    run = gh.rest.checks.create(OWNER, REPO, name="b", head_sha=HEAD).parsed_data
    response = gh.request(
        "PATCH", f"/repos/{OWNER}/{REPO}/check-runs/{run.id}", json={"conclsion": "success"}
    )
    with pytest.raises(Exception, match="thumbsup"):  # pydantic rejects it before sending
        gh.rest.reactions.create_for_issue_comment(OWNER, REPO, 1, content="thumbsup")

    assert response.status_code == 200  # GitHub ignores unknown fields...
    [violation] = fake.take_violations()  # ...but the fake reports the typo
    assert violation.kind == "ignored-field" and "body.conclsion" in violation.message


def test_a_bug_in_the_fake_is_reported_not_hidden(fake: FakeGitHub, gh: Any) -> None:
    def broken(call: Any) -> Any:
        raise KeyError("oops")

    assert fake._handlers is not None
    fake._handlers.pulls_get = broken  # type: ignore[method-assign]
    with pytest.raises(RequestFailed) as failed:
        gh.rest.pulls.get(OWNER, REPO, 7)

    assert failed.value.response.status_code == 500
    [violation] = fake.take_violations()
    assert violation.kind == "fake-bug" and "KeyError" in violation.message


def test_fake_checks_its_own_responses() -> None:
    spec = load_spec()
    match = spec.match("GET", "/repos/o/r/issues/comments/1")
    assert match is not None
    errors = spec.response_errors(match, 200, b'{"id": 1}', {"content-type": "application/json"})
    assert any("'node_id' is a required property" in e for e in errors)


def test_routing_handles_multi_segment_parameters() -> None:
    spec = load_spec()
    ref = spec.match("GET", "/repos/o/r/git/ref/heads/feature/x%2By")
    contents = spec.match("PUT", "/repos/o/r/contents/a/b/c.yml")
    comment = spec.match("GET", "/repos/o/r/issues/comments/5")

    assert ref is not None and ref.path_params["ref"] == "heads/feature/x+y"
    assert contents is not None and contents.path_params["path"] == "a/b/c.yml"
    assert comment is not None and comment.operation.operation_id == "issues/get-comment"
    assert spec.match("GET", "/repos/o/r/issues/1/labels/a/b") is None  # name: one segment


# == auth failures and faults =================================================================


def test_expired_token_gives_401_and_githubkit_does_not_refresh(fake: FakeGitHub, gh: Any) -> None:
    gh.rest.pulls.get(OWNER, REPO, 7)
    fake.expire_tokens()
    with pytest.raises(RequestFailed) as failed:
        gh.rest.pulls.get(OWNER, REPO, 7)
    fresh = fake.installation_client(DEFAULT_INSTALLATION_ID)

    assert failed.value.response.status_code == 401
    assert failed.value.response.json()["message"] == "Bad credentials"
    assert fake.tokens_issued == 1  # githubkit kept using its cached token
    assert fresh.rest.pulls.get(OWNER, REPO, 7).status_code == 200
    assert fake.tokens_issued == 2


def test_requests_without_credentials_get_401(fake: FakeGitHub) -> None:
    response = httpx.get(f"{fake.url}/repos/{OWNER}/{REPO}/pulls/7")
    assert response.status_code == 401
    assert response.json()["message"] == "Requires authentication"
    assert response.headers["x-ratelimit-limit"] == "60"


def test_injected_502_is_retried_by_githubkit(fake: FakeGitHub) -> None:
    def retry_5xx_now(exc: Exception, count: int) -> RetryOption:
        failed = isinstance(exc, RequestFailed) and exc.response.status_code >= 500
        # Beware: githubkit sleeps 60 s when retry_after is falsy, e.g. timedelta(0).
        return RetryOption(failed and count < 3, timedelta(milliseconds=1))

    fake.fail_next("POST", r"/issues/7/comments$", 502)
    client = fake.installation_client(DEFAULT_INSTALLATION_ID, auto_retry=retry_5xx_now)

    client.rest.issues.create_comment(OWNER, REPO, 7, body="hello")

    calls = fake.calls("issues/create-comment")
    assert [(c.status, c.injected) for c in calls] == [(502, True), (201, False)]
    assert len(fake.comments(OWNER, REPO, 7)) == 1


def test_injected_rate_limits_raise_githubkit_errors(fake: FakeGitHub, gh: Any) -> None:
    reset = str(int(time.time()) + 30)
    fake.fail_next(
        "GET", "/pulls/", 429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    )
    fake.fail_next("GET", "/pulls/", 403, headers={"retry-after": "1"})

    with pytest.raises(PrimaryRateLimitExceeded) as primary:
        gh.rest.pulls.get(OWNER, REPO, 7)
    with pytest.raises(SecondaryRateLimitExceeded) as secondary:
        gh.rest.pulls.get(OWNER, REPO, 7)

    assert primary.value.retry_after > timedelta(seconds=20)
    assert secondary.value.retry_after == timedelta(seconds=1)
    assert gh.rest.pulls.get(OWNER, REPO, 7).status_code == 200  # faults are used up


def test_primary_rate_limit_is_enforced(fake: FakeGitHub, gh: Any) -> None:
    fake.rate_limit_limit = 3  # the token request counts against the app's own bucket
    for _ in range(3):
        gh.rest.pulls.get(OWNER, REPO, 7)
    with pytest.raises(PrimaryRateLimitExceeded):
        gh.rest.pulls.get(OWNER, REPO, 7)
    assert fake.calls("pulls/get")[-1].status == 403


def test_delay_and_wait_for(fake: FakeGitHub, gh: Any) -> None:
    fake.delay("GET", r"/pulls/7$", 0.3, times=1)
    worker = threading.Thread(target=gh.rest.pulls.get, args=(OWNER, REPO, 7))
    started = time.monotonic()
    worker.start()

    recorded = fake.wait_for(lambda: fake.calls("pulls/get"), timeout=5)
    worker.join()

    assert time.monotonic() - started >= 0.3
    assert recorded[0].status == 200
    with pytest.raises(AssertionError, match="not met within"):
        fake.wait_for(lambda: fake.count("pulls/create"), timeout=0.05)


def test_concurrent_requests_are_all_served(fake: FakeGitHub) -> None:
    clients = [fake.installation_client(DEFAULT_INSTALLATION_ID) for _ in range(8)]
    threads = [
        threading.Thread(
            target=lambda c=c, n=n: c.rest.issues.create_comment(OWNER, REPO, 7, body=f"c{n}")
        )
        for n, c in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    comments = fake.comments(OWNER, REPO, 7)
    assert sorted(c.body for c in comments) == sorted(f"c{n}" for n in range(8))
    assert len({c.id for c in comments}) == 8


def test_standalone_use_as_context_manager() -> None:
    with FakeGitHub(app_id=77) as standalone:
        standalone.add_installation(
            5,
            "someone",
            account_type="User",
            repository_selection="selected",
            repositories=["someone/r"],
        )
        client = GitHub(
            AppAuthStrategy(77, standalone.private_key_pem),
            base_url=standalone.url,
            cache_strategy=MemCacheStrategy(),
        )
        token = client.rest.apps.create_installation_access_token(5).parsed_data
        url = standalone.url

    assert token.repository_selection == "selected"
    assert [r.full_name for r in token.repositories or []] == ["someone/r"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/rate_limit", timeout=1)
    standalone.assert_no_violations()
