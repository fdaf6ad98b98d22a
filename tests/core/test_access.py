"""Access decisions, the facts they need, and the TTL cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerbot.core.access import (
    PERMISSIONS,
    AccessCache,
    AccessFacts,
    decide,
    facts_needed,
    who_may,
)

BUILDERS = ["role:write", "alice", "@EESSI/Builders"]

# fmt: off
DECISIONS: list[tuple[str, list[str], AccessFacts, bool, str]] = [
    # (case, subjects, facts, allowed, words in the reason)
    ("listed login", BUILDERS, AccessFacts("alice"), True, "listed by name"),
    ("login in another case", BUILDERS, AccessFacts("ALICE"), True, "listed by name"),
    ("write access", BUILDERS, AccessFacts("bob", "write"), True, "write access"),
    ("maintain includes write", BUILDERS, AccessFacts("bob", "maintain"), True, "role:write"),
    ("admin includes write", BUILDERS, AccessFacts("bob", "admin"), True, "admin access"),
    ("triage is below write", BUILDERS, AccessFacts("bob", "triage"), False,
     "triage access, below write"),
    ("read is below write", BUILDERS, AccessFacts("bob", "read"), False, "below write"),
    ("no permission", BUILDERS, AccessFacts("bob", "none"), False, "none access"),
    ("permission in capitals", BUILDERS, AccessFacts("bob", "WRITE"), True, "access"),
    ("unknown permission counts as none", ["role:read"], AccessFacts("bob", "custom"), False,
     "below read"),
    ("permission not looked up", BUILDERS, AccessFacts("bob"), False, "not looked up"),
    ("team member", BUILDERS, AccessFacts("carol", "read", frozenset({"eessi/builders"})), True,
     "member of @eessi/builders"),
    ("team in another case", BUILDERS, AccessFacts("carol", None, frozenset({"EESSI/BUILDERS"})),
     True, "member"),
    ("another team", BUILDERS, AccessFacts("carol", "read", frozenset({"eessi/other"})), False,
     "none of the teams @eessi/builders"),
    ("maintain only", ["role:maintain"], AccessFacts("bob", "write"), False, "below maintain"),
    ("the weakest listed role counts", ["role:admin", "role:triage"], AccessFacts("bob", "triage"),
     True, "role:triage"),
    ("empty list allows nobody", [], AccessFacts("alice", "admin", frozenset({"a/b"})), False,
     "nobody may build"),
    ("@login is read as login", ["@alice"], AccessFacts("alice"), True, "listed by name"),
]
# fmt: on


@pytest.mark.parametrize(
    ("subjects", "facts", "allowed", "reason"),
    [c[1:] for c in DECISIONS],
    ids=[c[0] for c in DECISIONS],
)
def test_decide(subjects: list[str], facts: AccessFacts, allowed: bool, reason: str) -> None:
    decision = decide("build", subjects, facts)
    assert decision.allowed is allowed
    assert reason in decision.reason
    assert decision.who_may == who_may("build", subjects)


@pytest.mark.parametrize(
    ("action", "subjects", "sentence"),
    [
        (
            "build",
            ["role:write", "alice", "@org/builders"],
            "Only people with write access to the repository, `@alice`, or members of "
            "`@org/builders` may build.",
        ),
        (
            "deploy",
            ["role:maintain"],
            "Only people with maintain access to the repository may deploy.",
        ),
        ("cancel", ["bob", "alice"], "Only `@alice` or `@bob` may cancel jobs."),
        (
            "force_deploy",
            ["@org/a", "@org/b", "@org/c"],
            "Only members of `@org/a`, `@org/b`, or `@org/c` may force a deploy.",
        ),
        (
            "build",
            [],
            "Nobody is allowed to build on this instance (the configuration lists no one).",
        ),
        ("some_action", [], "Nobody is allowed to some action on this instance"),
    ],
)
def test_who_may(action: str, subjects: list[str], sentence: str) -> None:
    assert who_may(action, subjects).startswith(sentence)


@pytest.mark.parametrize(
    ("subjects", "login", "needed"),
    [
        (BUILDERS, "alice", (False, [])),  # listed by name: no API call at all
        (BUILDERS, "Alice", (False, [])),
        (BUILDERS, "bob", (True, ["eessi/builders"])),
        (["alice", "bob"], "carol", (False, [])),
        (["@org/a", "@Org/A", "@org/b"], "carol", (False, ["org/a", "org/b"])),
        (["role:admin"], "carol", (True, [])),
        ([], "carol", (False, [])),
    ],
)
def test_facts_needed(subjects: list[str], login: str, needed: tuple[bool, list[str]]) -> None:
    assert facts_needed(subjects, login) == needed


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(PERMISSIONS[1:]), st.sampled_from(PERMISSIONS))
def test_roles_include_the_stronger_ones(role: str, permission: str) -> None:
    allowed = decide("build", [f"role:{role}"], AccessFacts("x", permission)).allowed
    assert allowed is (PERMISSIONS.index(permission) >= PERMISSIONS.index(role))


# --- cache --------------------------------------------------------------------------------


def test_cache_expires_after_the_ttl() -> None:
    cache = AccessCache(ttl_seconds=300)
    cache.put_permission("EESSI/software-layer", "Alice", "write", now=1000.0)
    cache.put_membership("@EESSI/builders", "alice", True, now=1000.0)
    assert cache.permission("eessi/software-layer", "alice", now=1299.9) == "write"
    assert cache.membership("eessi/builders", "ALICE", now=1299.9) is True
    assert cache.permission("eessi/software-layer", "alice", now=1300.0) is None
    assert cache.membership("eessi/builders", "alice", now=1300.0) is None
    assert len(cache) == 0  # expired entries are dropped when read


def test_cache_keeps_negative_answers() -> None:
    cache = AccessCache(ttl_seconds=60)
    cache.put_membership("org/team", "bob", False, now=0.0)
    assert cache.membership("org/team", "bob", now=1.0) is False
    assert cache.membership("org/other", "bob", now=1.0) is None


def test_cache_a_clock_that_goes_back_expires() -> None:
    cache = AccessCache(ttl_seconds=300)
    cache.put_permission("o/r", "alice", "admin", now=1000.0)
    assert cache.permission("o/r", "alice", now=999.0) is None


def test_cache_ttl_zero_keeps_nothing() -> None:
    cache = AccessCache(ttl_seconds=0)
    cache.put_permission("o/r", "alice", "admin", now=0.0)
    assert cache.permission("o/r", "alice", now=0.0) is None
    assert len(cache) == 0


def test_cache_missing_and_facts() -> None:
    cache = AccessCache(ttl_seconds=300)
    need, teams = facts_needed(BUILDERS, "bob")
    assert cache.missing("o/r", "bob", need, teams, now=0.0) == (True, ["eessi/builders"])
    cache.put_permission("o/r", "bob", "read", now=0.0)
    cache.put_membership("eessi/builders", "bob", True, now=0.0)
    assert cache.missing("o/r", "bob", need, teams, now=10.0) == (False, [])
    facts = cache.facts("o/r", "bob", teams, now=10.0)
    assert facts == AccessFacts("bob", "read", frozenset({"eessi/builders"}))
    assert decide("build", BUILDERS, facts).allowed
    assert cache.facts("o/r", "bob", teams, now=400.0) == AccessFacts("bob", None, frozenset())


def test_cache_invalidate_and_prune() -> None:
    cache = AccessCache(ttl_seconds=100)
    cache.put_permission("o/r", "alice", "write", now=0.0)
    cache.put_membership("o/t", "alice", True, now=0.0)
    cache.put_permission("o/r", "bob", "read", now=50.0)
    cache.invalidate("ALICE")
    assert len(cache) == 1 and cache.permission("o/r", "bob", now=60.0) == "read"
    assert cache.prune(now=160.0) == 1 and len(cache) == 0
    cache.put_permission("o/r", "bob", "read", now=200.0)
    cache.invalidate()
    assert len(cache) == 0


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = AccessCache(ttl_seconds=100, max_entries=2)
    cache.put_permission("o/r", "a", "read", now=0.0)
    cache.put_permission("o/r", "b", "read", now=1.0)
    cache.put_permission("o/r", "c", "read", now=2.0)
    assert len(cache) == 2
    assert cache.permission("o/r", "a", now=3.0) is None
    assert cache.permission("o/r", "c", now=3.0) == "read"
