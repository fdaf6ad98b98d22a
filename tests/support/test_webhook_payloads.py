"""Webhook examples, schemas, signatures and payload builders."""

from __future__ import annotations

import copy
import hmac
import json
import re
import uuid
from typing import Any

import pytest

from tests.support import webhooks
from tests.support.shared import github_data_dir
from tests.support.webhooks import (
    DEFAULT_INSTALLATION_ID,
    PayloadInvalid,
    all_payloads,
    check_run_rerequested,
    delivery_headers,
    encode,
    issue_comment_created,
    load_payload,
    payload_errors,
    pull_request_event,
    sign,
    validate_payload,
)

EXAMPLES = all_payloads()


def test_all_39_examples_are_found() -> None:
    assert len(EXAMPLES) == 39
    assert {event for event, *_ in EXAMPLES} == {
        "check_run",
        "check_suite",
        "installation",
        "installation_repositories",
        "issue_comment",
        "ping",
        "pull_request",
        "push",
    }


@pytest.mark.parametrize(
    ("event", "name", "payload", "raw"), EXAMPLES, ids=[f"{e}/{n}" for e, n, *_ in EXAMPLES]
)
def test_example_validates_against_its_schema(
    event: str, name: str, payload: dict[str, Any], raw: bytes
) -> None:
    assert json.loads(raw) == payload
    validate_payload(event, payload)


# == the validator really checks (including inside $ref'd common schemas) ==================


def test_missing_required_field_is_reported() -> None:
    payload = load_payload("issue_comment", "created")
    del payload["sender"]
    with pytest.raises(PayloadInvalid, match="'sender' is a required property"):
        validate_payload("issue_comment", payload)


def test_error_inside_a_common_schema_is_reported() -> None:
    payload = load_payload("pull_request", "opened.payload.json")
    payload["pull_request"]["user"]["type"] = "Robot"  # common/user.schema.json enum
    errors = payload_errors("pull_request", payload)
    assert any("'Robot' is not one of" in e for e in errors), errors


def test_action_selects_the_schema() -> None:
    payload = load_payload("pull_request", "opened")
    payload["action"] = "closed"  # an open PR does not satisfy the "closed" schema
    assert payload_errors("pull_request", payload)


def test_unknown_action_has_no_schema() -> None:
    payload = load_payload("issue_comment", "created")
    payload["action"] = "pinned"
    with pytest.raises(FileNotFoundError, match=r"issue_comment\.pinned"):
        validate_payload("issue_comment", payload)


def test_load_payload_accepts_short_names_and_reports_missing_ones() -> None:
    assert load_payload("ping", "payload")["zen"]
    assert load_payload("issue_comment", "created.with-installation")["installation"]
    with pytest.raises(FileNotFoundError, match=r"created\.payload\.json"):
        load_payload("issue_comment", "nope")


# == signatures and headers =================================================================


def test_githubs_published_signature_test_vector() -> None:
    vector = json.loads((github_data_dir() / "webhook-signature-test-vector.json").read_text())
    signature = sign(vector["payload"].encode(), vector["secret"])
    assert signature == vector["x_hub_signature_256"]
    assert signature == f"sha256={vector['signature']}"
    assert sign(vector["payload"].encode(), vector["secret"] + "!") != signature


def test_delivery_headers_are_complete_and_verifiable() -> None:
    documented = json.loads((github_data_dir() / "webhook-delivery-headers.json").read_text())
    body = encode(issue_comment_created("hello", "alice"))
    headers = delivery_headers("issue_comment", body, "s3cret", hook_id=42)

    assert set(documented["documented_headers"]) <= set(headers)
    assert headers["X-GitHub-Event"] == "issue_comment"
    assert headers["X-GitHub-Hook-ID"] == "42"
    assert uuid.UUID(headers["X-GitHub-Delivery"]).version == 4
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["Content-Type"] == "application/json"
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], sign(body, "s3cret"))
    assert re.fullmatch(r"sha1=[0-9a-f]{40}", headers["X-Hub-Signature"])


def test_delivery_headers_without_secret_have_no_signatures() -> None:
    headers = delivery_headers("ping", b"{}", None, delivery_id="fixed")
    assert headers["X-GitHub-Delivery"] == "fixed"
    assert not {"X-Hub-Signature", "X-Hub-Signature-256"} & set(headers)


# == builders ===============================================================================


def test_issue_comment_builder() -> None:
    payload = issue_comment_created(
        "bot: build arch=x86", "alice", repo="octo-org/stack", pr_number=7, comment_id=1003
    )

    validate_payload("issue_comment", payload)
    assert payload["action"] == "created"
    assert payload["comment"]["body"] == "bot: build arch=x86"
    assert payload["comment"]["id"] == 1003
    assert payload["comment"]["user"]["login"] == payload["sender"]["login"] == "alice"
    assert payload["issue"]["number"] == 7
    assert payload["issue"]["pull_request"]["url"].endswith("/repos/octo-org/stack/pulls/7")
    assert payload["repository"]["full_name"] == "octo-org/stack"
    assert payload["installation"]["id"] == DEFAULT_INSTALLATION_ID
    assert "Codertocat/Hello-World" not in json.dumps(payload)  # fully moved to the new repo


def test_issue_comment_builder_for_bots_and_user_accounts() -> None:
    bot = issue_comment_created("done", "layerbot[bot]", user_type="Bot")
    personal = issue_comment_created("hi", "alice", repo="alice/stack", owner_type="User")

    assert bot["sender"]["type"] == "Bot"
    assert "organization" not in personal
    assert personal["repository"]["owner"]["type"] == "User"


def test_builders_refuse_to_produce_invalid_payloads() -> None:
    with pytest.raises(PayloadInvalid, match="'Robot' is not one of"):
        issue_comment_created("x", "alice", user_type="Robot")


@pytest.mark.parametrize(
    "action", ["opened", "synchronize", "labeled", "unlabeled", "closed", "reopened"]
)
def test_pull_request_builder(action: str) -> None:
    payload = pull_request_event(
        action,
        12,
        "b" * 40,
        "main",
        head_ref="zlib",
        label="bot:build",
        labels=["arch:x86"],
        merged=True,
        before="c" * 40,
    )

    validate_payload("pull_request", payload)
    pull = payload["pull_request"]
    assert payload["number"] == pull["number"] == 12
    assert (pull["head"]["sha"], pull["head"]["ref"], pull["base"]["ref"]) == (
        "b" * 40,
        "zlib",
        "main",
    )
    assert pull["state"] == ("closed" if action == "closed" else "open")
    assert pull["merged"] is (action == "closed")
    names = [label["name"] for label in pull["labels"]]
    assert "arch:x86" in names and ("bot:build" in names) is (action == "labeled")
    if action in ("labeled", "unlabeled"):
        assert payload["label"]["name"] == "bot:build"
    if action == "synchronize":
        assert (payload["before"], payload["after"]) == ("c" * 40, "b" * 40)


def test_pull_request_builder_for_a_fork() -> None:
    payload = pull_request_event("opened", 3, "d" * 40, head_repo="forker/stack")
    head, base = payload["pull_request"]["head"], payload["pull_request"]["base"]
    assert head["repo"]["full_name"] == "forker/stack" and head["repo"]["fork"] is True
    assert base["repo"]["full_name"] == payload["repository"]["full_name"]
    assert head["repo"]["id"] != base["repo"]["id"]


def test_pull_request_builder_rejects_unknown_actions() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        pull_request_event("edited", 1, "a" * 40)


def test_check_run_rerequested_builder() -> None:
    payload = check_run_rerequested(5001, "e" * 40, "build (x86)", pull_number=7)

    validate_payload("check_run", payload)
    run = payload["check_run"]
    assert (run["id"], run["head_sha"], run["name"]) == (5001, "e" * 40, "build (x86)")
    assert run["app"]["id"] == webhooks.DEFAULT_APP_ID
    assert [pr["number"] for pr in run["pull_requests"]] == [7]
    assert run["check_suite"]["head_sha"] == "e" * 40


def test_builders_do_not_modify_the_examples() -> None:
    before = copy.deepcopy(load_payload("issue_comment", "created.with-installation"))
    issue_comment_created("x", "alice")
    assert load_payload("issue_comment", "created.with-installation") == before
