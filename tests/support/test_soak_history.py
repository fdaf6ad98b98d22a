"""The soak's minimal history of a violation: the PR's own actions up to it, and the faults
of that time, nothing else."""

from __future__ import annotations

from tests.support.soak.history import Entry, History


def history_of(entries: list[Entry]) -> History:
    history = History()
    history.entries = entries
    return history


def test_a_violation_shows_its_prs_actions_and_the_faults_of_its_time() -> None:
    history = history_of([
        Entry(1.0, "action", "open", 1),
        Entry(2.0, "action", "open", 2),
        Entry(3.0, "fault", "SIGKILL agent", until=13.0),
        Entry(5.0, "action", "bot: build", 1),
        Entry(6.0, "action", "bot: cancel", 2),
        Entry(200.0, "fault", "github 5xx", until=205.0),
        Entry(210.0, "action", "push", 1),
    ])
    names = [e.name for e in history.about(1, at=5.0)]
    # PR 2's actions, the later push and the fault long after are not part of it.
    assert names == ["open", "SIGKILL agent", "bot: build"]
    # Without a time: the PR's whole life and the faults during it.
    assert [e.name for e in history.about(1)] == [
        "open", "SIGKILL agent", "bot: build", "github 5xx", "push"]
    # Without a PR: the faults of the time.
    assert [e.name for e in history.about(None, at=201.0)] == ["github 5xx"]


def test_a_line_says_when_what_and_on_which_pr() -> None:
    assert Entry(3.25, "fault", "SIGKILL agent", until=13.0).line() == (
        "    3.2s..   13.0s fault  SIGKILL agent")
    assert Entry(5.0, "action", "bot: build", 1, {"login": "alice"}).line() == (
        "    5.0s action bot: build PR 1 login=alice")
