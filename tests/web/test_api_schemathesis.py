"""Property tests of the REST API against its own OpenAPI (schemathesis, in-process ASGI).

Every operation gets generated requests, valid and invalid; every answer must be no 5xx,
a documented status code, and a body that matches the documented schema. The store is
seeded, so that ids hit real jobs and pull requests; the caller holds a token with every
scope, so that actions run through to their real outcomes (done, 404, 409, ...).

The agent protocol (``/agent/v1/...``) is fuzzed the same way, as a registered agent that
holds leased jobs: register, heartbeat, claim, its jobs, reports and uploads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from layerbot import clock
from layerbot.core.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from layerbot.operations.agents import hash_token
from layerbot.store.db import Store
from layerbot.store.models import Agent
from layerbot.web.auth import SCOPES, create_token
from tests.support.agents import add_agent, lease
from tests.web.conftest import REPO, Web, make_config
from tests.web.seed import seed

_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def api_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    cfg = make_config(tmp)
    store = Store(cfg.store_url)
    seed(store, now=clock.now(), prs=20, jobs=200, repo=REPO, instance=cfg.instance.name)
    _state["token"] = create_token(store, "schemathesis", list(SCOPES), "st", clock.now())[1]
    web = Web(cfg, store)
    yield web
    store.close()


#: Examples per operation and generation mode: a few hundred requests in all.
EXAMPLES = 25


def fuzz(schema: Any, headers: dict[str, str], **checks: Any) -> tuple[int, int]:
    """Every operation of ``schema``, valid and invalid requests: (requests, operations);
    fails with every operation that broke its documented contract, all in one report.
    ``checks``: ``additional_checks`` and ``excluded_checks`` of each call."""
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    calls = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=headers, **checks)

            try:
                check()
            except Unsatisfiable:
                # No parameters to make invalid: nothing to try in the negative mode.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # collect them all: one report for the whole API
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    return calls, len(operations)


def test_api_answers_match_the_openapi(api_web: Web) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json",
                                            api_web.asgi_without_loops()).include(
        path_regex="^/api/")
    headers = {"Authorization": f"Bearer {_state['token']}"}
    calls, operations = fuzz(schema, headers)
    print(f"schemathesis: {calls} requests to {operations} operations")
    assert operations >= 15
    assert calls >= 200


AGENT, AGENT_TOKEN = "fuzz-agent", "lba_schemathesis-agent-token"


@pytest.fixture(scope="module")
def agent_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis-agent")
    # The claim is a long poll: with nothing to lease it waits up to the server's
    # claim_wait_seconds (20 s by default) for work, and with hundreds of generated claims
    # the fuzzing never ended. 0 caps every claim to one look at the queue; what it
    # answers is the same as after a wait that found nothing.
    cfg = make_config(tmp, fleet={"claim_wait_seconds": 0})
    store = Store(cfg.store_url)
    now = clock.now()
    seed(store, now=now, prs=10, jobs=50, repo=REPO, instance=cfg.instance.name)
    add_agent(store, cfg, AGENT, now, cluster="fuzz")
    # Jobs of its own, so that generated job ids hit real ones (and others' are 404).
    lease(store, range(1, 21), AGENT, now)
    with store.transaction() as s:  # a token the test knows (add_agent keeps its own)
        agent = s.get(Agent, AGENT)
        assert agent is not None
        agent.token_hash = hash_token(AGENT_TOKEN)
    yield Web(cfg, store)
    store.close()


def accepted_but_for_rules_across_fields(ctx: Any, response: Any, case: Any
                                         ) -> bool | None:
    """schemathesis' check that valid requests are accepted, but for what the OpenAPI
    cannot say of the agent protocol's bodies:

    - a registration in a protocol this server does not speak: any integer is a valid
      ``protocol`` (an agent of another release must be able to say so), and 426 with the
      release to install is its documented answer;
    - a rule across fields (a failed report says why): 422 from the model's own
      validator, its error on the body as a whole.
    """
    body = case.body if isinstance(case.body, dict) else {}
    if (response.status_code == 426 and case.operation.path.endswith("/register")
            and body.get("protocol") != PROTOCOL_VERSION):
        return None
    if response.status_code == 422:
        errors = response.json().get("detail", [])
        if errors and all(e.get("type") == "value_error" and e.get("loc") == ["body"]
                          for e in errors):
            return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


def test_agent_api_answers_match_the_openapi(agent_web: Web) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json",
                                            agent_web.asgi_without_loops()).include(
        path_regex="^/agent/")
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}",
               PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
    calls, operations = fuzz(schema, headers, excluded_checks=[positive_data_acceptance],
                             additional_checks=[accepted_but_for_rules_across_fields])
    print(f"schemathesis: {calls} requests to {operations} agent operations")
    # register, heartbeat, claim, jobs/{id}, jobs/{id}/reports, uploads/claim,
    # uploads/{id}/reports
    assert operations >= 7
    assert calls >= 100
