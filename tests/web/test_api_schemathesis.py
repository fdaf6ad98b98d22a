"""Property tests of the REST API against its own OpenAPI (schemathesis, in-process ASGI).

Every operation gets generated requests, valid and invalid; every answer must be no 5xx,
a documented status code, and a body that matches the documented schema. The store is
seeded, so that ids hit real jobs and pull requests; the caller holds a token with every
scope, so that actions run through to their real outcomes (done, 404, 409, ...).
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

from layerbot import clock
from layerbot.store.db import Store
from layerbot.web.auth import SCOPES, create_token
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


def test_api_answers_match_the_openapi(api_web: Web) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json",
                                            api_web.asgi_without_loops()).include(
        path_regex="^/api/")
    headers = {"Authorization": f"Bearer {_state['token']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
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
                case.call_and_validate(headers=headers)

            try:
                check()
            except Unsatisfiable:
                # No parameters to make invalid: nothing to try in the negative mode.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # collect them all: one report for the whole API
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    print(f"schemathesis: {calls} requests to {len(operations)} operations")
    assert calls >= 200
